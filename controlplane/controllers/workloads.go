package controllers

import (
	"context"
	"log/slog"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/skep-dev/skep/controlplane/controllers/cronjob"
	"github.com/skep-dev/skep/controlplane/controllers/daemonset"
	"github.com/skep-dev/skep/controlplane/controllers/deployment"
	"github.com/skep-dev/skep/controlplane/controllers/job"
	"github.com/skep-dev/skep/controlplane/controllers/replicaset"
)

// WorkloadOptions tune the controllers of workloads (issue 9's
// ReplicaSet, Deployment, DaemonSet, Job and CronJob controllers).
type WorkloadOptions struct {
	ReplicaSet replicaset.Options
	Deployment deployment.Options
	DaemonSet  daemonset.Options
	Job        job.Options
	CronJob    cronjob.Options
}

// addWorkloadControllers builds the workload controllers on factory and
// adds them to runners.
func addWorkloadControllers(runners map[string]func(context.Context) error, kube kubernetes.Interface,
	factory informers.SharedInformerFactory, log *slog.Logger, opts WorkloadOptions) error {
	if opts.ReplicaSet.Logger == nil {
		opts.ReplicaSet.Logger = log
	}
	if opts.Deployment.Logger == nil {
		opts.Deployment.Logger = log
	}
	if opts.DaemonSet.Logger == nil {
		opts.DaemonSet.Logger = log
	}
	if opts.Job.Logger == nil {
		opts.Job.Logger = log
	}
	if opts.CronJob.Logger == nil {
		opts.CronJob.Logger = log
	}
	apps, core := factory.Apps().V1(), factory.Core().V1()
	rs, err := replicaset.New(kube, apps.ReplicaSets(), core.Pods(), opts.ReplicaSet)
	if err != nil {
		return err
	}
	d, err := deployment.New(kube, apps.Deployments(), apps.ReplicaSets(), core.Pods(), opts.Deployment)
	if err != nil {
		return err
	}
	ds, err := daemonset.New(kube, apps.DaemonSets(), apps.ControllerRevisions(), core.Pods(), core.Nodes(), opts.DaemonSet)
	if err != nil {
		return err
	}
	j, err := job.New(kube, factory.Batch().V1().Jobs(), core.Pods(), opts.Job)
	if err != nil {
		return err
	}
	cj, err := cronjob.New(kube, factory.Batch().V1().Jobs(), factory.Batch().V1().CronJobs(), opts.CronJob)
	if err != nil {
		return err
	}
	runners["job"] = j.Run
	runners["cronjob"] = cj.Run
	runners["replicaset"] = rs.Run
	runners["deployment"] = d.Run
	runners["daemonset"] = ds.Run
	return nil
}
