// Package job is the Job controller: it runs a Job's pods to completion,
// as kube-controller-manager's job controller does (as of Kubernetes
// 1.33), in the sample-controller shape.
//
//   - Pods: up to parallelism at a time, and no more than the completions
//     still missing; created in slow-start batches with expectations, like
//     a ReplicaSet's. Indexed Jobs give each pod a completion index
//     (indexed.go). A suspended Job deletes its active pods and creates
//     none; resuming it restarts its activeDeadlineSeconds clock.
//   - Failures: a failed pod (or, with podReplacementPolicy
//     TerminatingOrFailed, a pod deleted before it succeeded) counts toward
//     backoffLimit, and is replaced after an exponential backoff
//     (backoff.go); with restartPolicy OnFailure the containers' restarts
//     count too. Past backoffLimit, or activeDeadlineSeconds after it
//     started, the Job fails (BackoffLimitExceeded, DeadlineExceeded) and
//     its active pods are deleted.
//   - Success: completions succeeded pods (or indexes), or, without
//     completions, one succeeded pod and none active.
//   - Finishing: as in Kubernetes 1.33 the Job first gets the interim
//     condition SuccessCriteriaMet or FailureTarget, and the terminal
//     Complete or Failed (with completionTime) only once no pod of it is
//     terminating and every finished pod is counted.
//   - Tracking: every pod is created with the batch.kubernetes.io/job-tracking
//     finalizer, so that a finished pod cannot vanish (pod GC, a user)
//     before the Job counted it. A finished pod's uid goes first into
//     status.uncountedTerminatedPods, then its finalizer is removed, then
//     it moves into status.succeeded or status.failed (tracking.go): a
//     crash at any point neither loses nor doubles a count. Pods left
//     with the finalizer by a deleted Job lose it.
//   - Status: active, ready, terminating, succeeded, failed,
//     completedIndexes, startTime, completionTime, conditions.
//   - ttlSecondsAfterFinished: a finished Job is deleted (with its pods,
//     foreground) that long after it finished (ttl.go, upstream's
//     ttl-after-finished controller).
//
// Jobs whose spec.managedBy names another controller are left alone.
// podFailurePolicy, successPolicy and backoffLimitPerIndex are refused by
// the API server (skep does not implement them), so they never reach
// here.
package job

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	batchinformers "k8s.io/client-go/informers/batch/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

const (
	// maxPodsPerSync caps the pods one sync creates or deletes.
	maxPodsPerSync = 500
	// maxUncountedPods caps status.uncountedTerminatedPods (its uids stay
	// under 20 KB); the rest wait for the next sync.
	maxUncountedPods = 500
	// controllerName is the spec.managedBy of Jobs this controller runs.
	controllerName = "kubernetes.io/job-controller"
)

var kind = batchv1.SchemeGroupVersion.WithKind("Job")

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many Jobs are synced at once (default 5,
	// kube-controller-manager's --concurrent-job-syncs).
	Workers int
	// PodFailureBackoff and MaxPodFailureBackoff bound the delay before a
	// failed pod is replaced (default 10s and 10m, upstream's).
	PodFailureBackoff, MaxPodFailureBackoff time.Duration
	// BatchPeriod batches the syncs pod events trigger (default 1s,
	// upstream's syncJobBatchPeriod).
	BatchPeriod time.Duration
	Logger      *slog.Logger
	Clock       clock.WithTicker
}

// Controller runs Jobs.
type Controller struct {
	*controller.Base
	jobLister batchlisters.JobLister
	podLister corelisters.PodLister
	podIndex  cache.Indexer
	// orphans are pods with the tracking finalizer and no Job to count
	// them.
	orphans      workqueue.TypedRateLimitingInterface[string]
	expectations *controller.Expectations
	// finalizers are, per Job, the pods whose finalizer removal was
	// issued and not yet seen: they must not be counted again.
	finalizers *uidSet
	backoff    *backoffStore
	pods       controller.PodControl
	ttl        *ttlController
	opts       Options
}

// New builds the controller (and the ttl-after-finished one) on shared
// informers (the caller starts them).
func New(kube kubernetes.Interface, jobInformer batchinformers.JobInformer, podInformer coreinformers.PodInformer, opts Options) (*Controller, error) {
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if opts.PodFailureBackoff == 0 {
		opts.PodFailureBackoff = 10 * time.Second
	}
	if opts.MaxPodFailureBackoff == 0 {
		opts.MaxPodFailureBackoff = 10 * time.Minute
	}
	if opts.BatchPeriod == 0 {
		opts.BatchPeriod = time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	base := controller.NewBase(kube, "job", "job-controller", opts.Workers, opts.Logger)
	base.Queue = controller.NewQueue("job", opts.Clock)
	base.WaitFor(jobInformer.Informer().HasSynced, podInformer.Informer().HasSynced)
	c := &Controller{
		Base:         base,
		jobLister:    jobInformer.Lister(),
		podLister:    podInformer.Lister(),
		podIndex:     podInformer.Informer().GetIndexer(),
		orphans:      controller.NewQueue("job_orphan_pod", opts.Clock),
		expectations: controller.NewExpectations(),
		finalizers:   newUIDSet(),
		backoff:      newBackoffStore(),
		pods:         controller.PodControl{Client: kube, Recorder: base.Recorder},
		opts:         opts,
	}
	c.ttl = newTTLController(kube, jobInformer, opts.Clock)
	if err := controller.AddOwnerIndex(podInformer.Informer()); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	if _, err := jobInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.addJob,
		UpdateFunc: c.updateJob,
		DeleteFunc: c.deleteJob,
	}); err != nil {
		return nil, err
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.addPod,
		UpdateFunc: c.updatePod,
		DeleteFunc: func(obj any) { c.deletePod(obj, true) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run waits for the caches, then syncs Jobs (and their orphaned pods, and
// their TTLs) until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.orphans.ShutDown()
	defer c.ttl.queue.ShutDown()
	loop := func(q workqueue.TypedRateLimitingInterface[string], sync func(context.Context, string) error) func(context.Context) {
		return func(ctx context.Context) {
			workers.Run(ctx, 1, q, func(ctx context.Context, key string) { c.Process(ctx, q, key, sync) })
		}
	}
	return c.Base.Run(ctx, c.sync, loop(c.orphans, c.syncOrphanPod), loop(c.ttl.queue, c.ttl.process))
}

// managedElsewhere: spec.managedBy names another controller.
func managedElsewhere(j *batchv1.Job) bool {
	return j.Spec.ManagedBy != nil && *j.Spec.ManagedBy != controllerName
}

func (c *Controller) addJob(obj any) {
	j := obj.(*batchv1.Job)
	if managedElsewhere(j) {
		return
	}
	c.Queue.Add(controller.Key(j))
}

func (c *Controller) updateJob(old, cur any) {
	o, j := old.(*batchv1.Job), cur.(*batchv1.Job)
	if managedElsewhere(j) {
		return
	}
	if o.UID != j.UID {
		c.deleteJob(cache.DeletedFinalStateUnknown{Key: controller.Key(o), Obj: o})
	}
	c.Queue.Add(controller.Key(j))
	// A changed deadline of a running Job: look again when it passes.
	if j.Status.StartTime != nil && j.Spec.ActiveDeadlineSeconds != nil &&
		(o.Spec.ActiveDeadlineSeconds == nil || *o.Spec.ActiveDeadlineSeconds != *j.Spec.ActiveDeadlineSeconds) {
		left := time.Duration(*j.Spec.ActiveDeadlineSeconds)*time.Second - c.opts.Clock.Since(j.Status.StartTime.Time)
		c.Queue.AddAfter(controller.Key(j), left)
	}
}

// deleteJob forgets the Job and frees its pods of the tracking finalizer.
func (c *Controller) deleteJob(obj any) {
	j, ok := controller.Unwrap[*batchv1.Job](obj)
	if !ok {
		return
	}
	c.Queue.Add(controller.Key(j))
	sel, err := metav1.LabelSelectorAsSelector(j.Spec.Selector)
	if err != nil {
		return
	}
	pods, err := c.podLister.Pods(j.Namespace).List(sel)
	if err != nil {
		return
	}
	for _, p := range pods {
		if metav1.IsControlledBy(p, j) && hasFinalizer(p) {
			c.orphans.Add(controller.PodKey(p))
		}
	}
}

func (c *Controller) resolve(ns string, ref *metav1.OwnerReference) *batchv1.Job {
	j, _ := controller.Resolve(ref, kind.Kind, c.jobLister.Jobs(ns).Get)
	return j
}

// enqueueBatched syncs the Job after the batch period, so a burst of pod
// events makes one sync.
func (c *Controller) enqueueBatched(j *batchv1.Job) {
	if !managedElsewhere(j) {
		c.Queue.AddAfter(controller.Key(j), c.opts.BatchPeriod)
	}
}

func (c *Controller) addPod(obj any) {
	pod := obj.(*corev1.Pod)
	if pod.DeletionTimestamp != nil {
		c.deletePod(pod, false)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		j := c.resolve(pod.Namespace, ref)
		if j == nil || finished(j) {
			if hasFinalizer(pod) {
				c.orphans.Add(controller.PodKey(pod))
			}
			if j == nil {
				return
			}
		}
		c.expectations.CreationObserved(controller.Key(j))
		c.enqueueBatched(j)
		return
	}
	if hasFinalizer(pod) {
		c.orphans.Add(controller.PodKey(pod))
	}
	for _, j := range c.selecting(pod) {
		c.enqueueBatched(j)
	}
}

func (c *Controller) selecting(pod *corev1.Pod) []*batchv1.Job {
	jobs, err := c.jobLister.GetPodJobs(pod)
	if err != nil {
		return nil
	}
	out := make([]*batchv1.Job, len(jobs))
	for i := range jobs {
		out[i] = &jobs[i]
	}
	return out
}

func (c *Controller) updatePod(old, cur any) {
	o, p := old.(*corev1.Pod), cur.(*corev1.Pod)
	if o.ResourceVersion == p.ResourceVersion {
		return
	}
	if p.DeletionTimestamp != nil {
		// A graceful delete: count it now (not when the pod is gone).
		c.deletePod(p, false)
		return
	}
	// A failed pod syncs after the batch period (its replacement waits
	// for the backoff anyway); anything else at once.
	immediate := !(p.Status.Phase == corev1.PodFailed && o.Status.Phase != corev1.PodFailed)
	finalizerRemoved := hasFinalizer(o) && !hasFinalizer(p)
	oref, ref := metav1.GetControllerOfNoCopy(o), metav1.GetControllerOfNoCopy(p)
	if oref != nil && (ref == nil || oref.UID != ref.UID) {
		if j := c.resolve(o.Namespace, oref); j != nil {
			if finalizerRemoved {
				c.finalizers.remove(controller.Key(j), string(p.UID))
			}
			c.enqueueBatched(j)
		}
	}
	if ref != nil {
		j := c.resolve(p.Namespace, ref)
		if j == nil || finished(j) {
			if hasFinalizer(p) {
				c.orphans.Add(controller.PodKey(p))
			}
			return
		}
		if finalizerRemoved {
			c.finalizers.remove(controller.Key(j), string(p.UID))
		}
		if immediate {
			c.Queue.Add(controller.Key(j))
		} else {
			c.enqueueBatched(j)
		}
		return
	}
	if hasFinalizer(p) {
		c.orphans.Add(controller.PodKey(p))
	}
	if !labels.Equals(o.Labels, p.Labels) || oref != nil {
		for _, j := range c.selecting(p) {
			c.enqueueBatched(j)
		}
	}
}

// deletePod counts an awaited deletion; final says the pod is gone from
// the store (not only marked).
func (c *Controller) deletePod(obj any, final bool) {
	pod, ok := controller.Unwrap[*corev1.Pod](obj)
	if !ok {
		return
	}
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil {
		return
	}
	j := c.resolve(pod.Namespace, ref)
	if j == nil || finished(j) {
		// No sync of a Job will free this pod.
		if hasFinalizer(pod) {
			c.orphans.Add(controller.PodKey(pod))
		}
		return
	}
	key := controller.Key(j)
	c.expectations.DeletionObserved(key, controller.PodKey(pod))
	if final || !hasFinalizer(pod) {
		// Gone (or no longer held by us): no finalizer removal to await.
		c.finalizers.remove(key, string(pod.UID))
	}
	c.enqueueBatched(j)
}
