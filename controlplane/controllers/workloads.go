package controllers

import (
	"context"
	"log/slog"
	"slices"

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
	// Disable names workload controllers not to run ("replicaset",
	// "deployment", "daemonset", "job", "cronjob"), as
	// kube-controller-manager's --controllers=-<name> does: tests of other
	// controllers keep their ReplicaSets and pods as they made them.
	Disable []string
}

// AllWorkloads are the names of the workload controllers.
var AllWorkloads = []string{"replicaset", "deployment", "daemonset", "job", "cronjob"}

// addWorkloadControllers builds the workload controllers on factory and
// adds them to runners.
func addWorkloadControllers(runners map[string]func(context.Context) error, kube kubernetes.Interface,
	factory informers.SharedInformerFactory, log *slog.Logger, opts WorkloadOptions) error {
	for _, l := range []**slog.Logger{&opts.ReplicaSet.Logger, &opts.Deployment.Logger, &opts.DaemonSet.Logger, &opts.Job.Logger, &opts.CronJob.Logger} {
		if *l == nil {
			*l = log
		}
	}
	apps, batch, core := factory.Apps().V1(), factory.Batch().V1(), factory.Core().V1()
	type runner interface{ Run(context.Context) error }
	add := func(name string, r runner, err error) error {
		if err == nil && !slices.Contains(opts.Disable, name) {
			runners[name] = r.Run
		}
		return err
	}
	rs, err := replicaset.New(kube, apps.ReplicaSets(), core.Pods(), opts.ReplicaSet)
	if err := add("replicaset", rs, err); err != nil {
		return err
	}
	d, err := deployment.New(kube, apps.Deployments(), apps.ReplicaSets(), core.Pods(), opts.Deployment)
	if err := add("deployment", d, err); err != nil {
		return err
	}
	ds, err := daemonset.New(kube, apps.DaemonSets(), apps.ControllerRevisions(), core.Pods(), core.Nodes(), opts.DaemonSet)
	if err := add("daemonset", ds, err); err != nil {
		return err
	}
	j, err := job.New(kube, batch.Jobs(), core.Pods(), opts.Job)
	if err := add("job", j, err); err != nil {
		return err
	}
	cj, err := cronjob.New(kube, batch.Jobs(), batch.CronJobs(), opts.CronJob)
	return add("cronjob", cj, err)
}
