package job

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
)

// syncCtx is what one sync of a Job knows.
type syncCtx struct {
	job         *batchv1.Job
	pods        []*corev1.Pod // every pod the Job owns
	active      []*corev1.Pod
	succeeded   int32
	failed      int32
	ready       int32
	terminating int32
	uncounted   uncounted
	// rmFinalizers are the pods whose finalizer removal is in flight.
	rmFinalizers sets.Set[string]
	// finished is the condition the Job is reaching (interim first, then
	// terminal), or nil.
	finished    *batchv1.JobCondition
	prevIndexes indexes
	indexes     indexes
	backoff     backoffRecord
}

// uncounted are status.uncountedTerminatedPods as sets.
type uncounted struct{ succeeded, failed sets.Set[string] }

func newUncounted(u *batchv1.UncountedTerminatedPods) uncounted {
	out := uncounted{sets.New[string](), sets.New[string]()}
	for _, uid := range u.Succeeded {
		out.succeeded.Insert(string(uid))
	}
	for _, uid := range u.Failed {
		out.failed.Insert(string(uid))
	}
	return out
}

func finished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func condition(j *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range j.Status.Conditions {
		if c := &j.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

func suspended(j *batchv1.Job) bool { return ptr.Deref(j.Spec.Suspend, false) }

// onlyReplaceFailed: podReplacementPolicy Failed, so a terminating pod is
// not replaced (nor counted failed) until it has failed.
func onlyReplaceFailed(j *batchv1.Job) bool {
	return ptr.Deref(j.Spec.PodReplacementPolicy, batchv1.TerminatingOrFailed) == batchv1.Failed
}

// podFailed: the pod failed, or (unless only failed pods are replaced)
// was deleted before it succeeded.
func podFailed(p *corev1.Pod, j *batchv1.Job) bool {
	if p.Status.Phase == corev1.PodFailed {
		return true
	}
	if onlyReplaceFailed(j) {
		return false
	}
	return p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodSucceeded
}

func (c *Controller) newCondition(t batchv1.JobConditionType, reason, msg string) *batchv1.JobCondition {
	now := metav1.NewTime(c.opts.Clock.Now())
	return &batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, LastProbeTime: now, LastTransitionTime: now, Reason: reason, Message: msg}
}

// sync moves one Job forward: count its finished pods, create or delete
// pods, decide whether it succeeded or failed, and write its status.
func (c *Controller) sync(ctx context.Context, key string) error {
	shared, ok, err := controller.Get(c.Base, key, func(ns, name string) (*batchv1.Job, error) { return c.jobLister.Jobs(ns).Get(name) },
		func() { c.expectations.Delete(key) }, func() { c.finalizers.forget(key) }, func() { c.backoff.remove(key) })
	if !ok {
		return err
	}
	if managedElsewhere(shared) {
		return nil
	}
	if finished(shared) {
		c.backoff.remove(key)
		return nil
	}
	job := shared.DeepCopy()
	if job.Status.UncountedTerminatedPods == nil {
		job.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	}
	// Expectations first: a pod added after the list below then defers
	// this sync, rather than being missed by it.
	satisfied := c.expectations.Satisfied(key)
	pods, err := c.claimPods(ctx, job)
	if err != nil {
		return err
	}
	jc := &syncCtx{
		job:          job,
		pods:         pods,
		active:       controller.FilterActivePods(pods),
		uncounted:    newUncounted(job.Status.UncountedTerminatedPods),
		rmFinalizers: c.finalizers.get(key),
	}
	for _, p := range jc.active {
		if controller.IsPodReady(p) {
			jc.ready++
		}
	}
	for _, p := range pods {
		if p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			jc.terminating++
		}
	}
	active := int32(len(jc.active))
	newSucceeded, newFailed := c.newFinishedPods(jc)
	jc.succeeded = job.Status.Succeeded + int32(len(newSucceeded)) + int32(jc.uncounted.succeeded.Len())
	jc.failed = job.Status.Failed + int32(len(newFailed)) + int32(jc.uncounted.failed.Len())

	if job.Status.StartTime == nil && !suspended(job) {
		now := metav1.NewTime(c.opts.Clock.Now())
		job.Status.StartTime = &now
	}
	jc.backoff = c.backoff.next(key, newSucceeded, newFailed)

	// A decision taken in an earlier sync stands.
	if cond := condition(job, batchv1.JobSuccessCriteriaMet); cond != nil {
		jc.finished = cond.DeepCopy()
	} else if cond := condition(job, batchv1.JobFailureTarget); cond != nil {
		jc.finished = c.newCondition(batchv1.JobFailed, cond.Reason, cond.Message)
	}
	if jc.finished == nil {
		switch {
		case jc.failed > *job.Spec.BackoffLimit || pastBackoffLimitOnFailure(job, pods):
			jc.finished = c.newCondition(batchv1.JobFailureTarget, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
		case c.pastActiveDeadline(job):
			jc.finished = c.newCondition(batchv1.JobFailureTarget, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
		case job.Spec.ActiveDeadlineSeconds != nil && !suspended(job):
			left := time.Duration(*job.Spec.ActiveDeadlineSeconds)*time.Second - c.opts.Clock.Since(job.Status.StartTime.Time)
			c.Queue.AddAfter(key, left)
		}
	}
	if isIndexed(job) {
		jc.prevIndexes, jc.indexes = succeededIndexes(job, pods)
		jc.succeeded = int32(jc.indexes.total())
	}

	var manageErr error
	suspendChanged := false
	if jc.finished != nil {
		// Finishing: every active pod goes (keeping its finalizer until it
		// is counted).
		deletedReady, deleted, err := c.deleteActivePods(ctx, job, jc.active)
		if deleted != active || !satisfied {
			// Pods remain, or may be in flight: decide again next time.
			jc.finished = nil
		}
		active -= deleted
		jc.terminating += deleted
		jc.ready -= deletedReady
		manageErr = err
	} else {
		managed := false
		if satisfied && job.DeletionTimestamp == nil {
			active, manageErr = c.manageJob(ctx, jc)
			managed = true
		}
		var complete bool
		if job.Spec.Completions == nil {
			// Any success completes it, once the others are done.
			complete = jc.succeeded > 0 && active == 0
		} else {
			complete = jc.succeeded >= *job.Spec.Completions && active == 0
		}
		switch {
		case complete:
			jc.finished = c.newCondition(batchv1.JobSuccessCriteriaMet, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods")
		case managed && suspended(job):
			if setCondition(job, batchv1.JobSuspended, corev1.ConditionTrue, "JobSuspended", "Job suspended", c.opts.Clock.Now()) {
				suspendChanged = true
				c.Recorder.Event(job, corev1.EventTypeNormal, "Suspended", "Job suspended")
			}
		case managed:
			if setCondition(job, batchv1.JobSuspended, corev1.ConditionFalse, "JobResumed", "Job resumed", c.opts.Clock.Now()) {
				suspendChanged = true
				c.Recorder.Event(job, corev1.EventTypeNormal, "Resumed", "Job resumed")
				// activeDeadlineSeconds counts continuous activity.
				now := metav1.NewTime(c.opts.Clock.Now())
				job.Status.StartTime = &now
			}
		}
	}

	ready, terminating := ptr.To(jc.ready), ptr.To(jc.terminating)
	needsUpdate := suspendChanged || active != job.Status.Active || !ptr.Equal(ready, job.Status.Ready) || !ptr.Equal(terminating, job.Status.Terminating)
	job.Status.Active, job.Status.Ready, job.Status.Terminating = active, ready, terminating
	if err := c.trackStatus(ctx, jc, needsUpdate); err != nil {
		return fmt.Errorf("tracking status: %w", err)
	}
	return manageErr
}

// setCondition sets a condition of the Job to status, reporting whether it
// changed; an absent condition is only added as True.
func setCondition(j *batchv1.Job, t batchv1.JobConditionType, status corev1.ConditionStatus, reason, msg string, now time.Time) bool {
	for i := range j.Status.Conditions {
		c := &j.Status.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status == status && c.Reason == reason && c.Message == msg {
			return false
		}
		c.Status, c.Reason, c.Message = status, reason, msg
		c.LastProbeTime, c.LastTransitionTime = metav1.NewTime(now), metav1.NewTime(now)
		return true
	}
	if status != corev1.ConditionTrue {
		return false
	}
	n := metav1.NewTime(now)
	j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: t, Status: status, Reason: reason, Message: msg, LastProbeTime: n, LastTransitionTime: n})
	return true
}

// claimPods returns the pods the Job owns, adopting (with the tracking
// finalizer) and releasing by selector.
func (c *Controller) claimPods(ctx context.Context, job *batchv1.Job) ([]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("job %s/%s has an invalid selector: %w", job.Namespace, job.Name, err)
	}
	all, err := controller.Candidates[*corev1.Pod](c.podIndex, job.UID, job.Namespace)
	if err != nil {
		return nil, err
	}
	m := &controller.RefManager{Controller: job, Kind: kind, Selector: sel, AdoptFinalizers: []string{batchv1.JobTrackingFinalizer},
		CanAdopt: controller.RecheckDeletion(job.UID, func(ctx context.Context) (metav1.Object, error) {
			return c.Kube.BatchV1().Jobs(job.Namespace).Get(ctx, job.Name, metav1.GetOptions{})
		})}
	pods, err := controller.Claim(ctx, m, all, controller.PodPatcher(c.Kube))
	// A finished pod that lost its finalizer and is gone from the cache
	// was counted; one that has it and was never counted shows here.
	return pods, err
}

// newFinishedPods are the succeeded and failed pods not yet counted
// anywhere (still with the finalizer, not uncounted, no removal pending).
func (c *Controller) newFinishedPods(jc *syncCtx) (succeeded, failed []*corev1.Pod) {
	for _, p := range jc.pods {
		uid := string(p.UID)
		if !hasFinalizer(p) || jc.rmFinalizers.Has(uid) {
			continue
		}
		if isIndexed(jc.job) && !validIndex(jc.job, p) {
			continue
		}
		switch {
		case p.Status.Phase == corev1.PodSucceeded && !jc.uncounted.succeeded.Has(uid):
			succeeded = append(succeeded, p)
		case podFailed(p, jc.job) && !jc.uncounted.failed.Has(uid):
			failed = append(failed, p)
		}
	}
	return succeeded, failed
}

// pastBackoffLimitOnFailure: with restartPolicy OnFailure, restarts of the
// running pods' containers count as failures.
func pastBackoffLimitOnFailure(j *batchv1.Job, pods []*corev1.Pod) bool {
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		return false
	}
	var restarts int32
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
			continue
		}
		for _, s := range p.Status.InitContainerStatuses {
			restarts += s.RestartCount
		}
		for _, s := range p.Status.ContainerStatuses {
			restarts += s.RestartCount
		}
	}
	if *j.Spec.BackoffLimit == 0 {
		return restarts > 0
	}
	return restarts >= *j.Spec.BackoffLimit
}

func (c *Controller) pastActiveDeadline(j *batchv1.Job) bool {
	if j.Spec.ActiveDeadlineSeconds == nil || j.Status.StartTime == nil || suspended(j) {
		return false
	}
	return c.opts.Clock.Since(j.Status.StartTime.Time) >= time.Duration(*j.Spec.ActiveDeadlineSeconds)*time.Second
}

// manageJob creates or deletes pods toward the active count the Job
// wants, and returns the active count after.
func (c *Controller) manageJob(ctx context.Context, jc *syncCtx) (int32, error) {
	job := jc.job
	key := controller.Key(job)
	active := int32(len(jc.active))
	if suspended(job) {
		victims := podsForRemoval(job, jc.active, len(jc.active))
		deletedReady, deleted, err := c.deleteJobPods(ctx, job, victims)
		jc.terminating += deleted
		jc.ready -= deletedReady
		return active - deleted, err
	}
	parallelism := *job.Spec.Parallelism
	var want int32
	switch {
	case job.Spec.Completions == nil && jc.succeeded > 0:
		// One success: let the others finish, start none.
		want = active
	case job.Spec.Completions == nil:
		want = parallelism
	default:
		want = min(max(*job.Spec.Completions-jc.succeeded, 0), parallelism)
	}
	if excess := active - want; excess > 0 || isIndexed(job) {
		victims := podsForRemoval(job, jc.active, int(max(excess, 0)))
		if len(victims) > maxPodsPerSync {
			victims = victims[:maxPodsPerSync]
		}
		if len(victims) > 0 {
			// Deleting and creating in one sync could fight: deletes first.
			deletedReady, deleted, err := c.deleteJobPods(ctx, job, victims)
			jc.terminating += deleted
			jc.ready -= deletedReady
			return active - deleted, err
		}
	}
	var terminating int32
	if onlyReplaceFailed(job) {
		terminating = jc.terminating
	}
	diff := want - terminating - active
	if diff <= 0 {
		return active, nil
	}
	if wait := jc.backoff.remaining(c.opts.Clock.Now(), c.opts.PodFailureBackoff, c.opts.MaxPodFailureBackoff); wait > 0 {
		c.Queue.AddAfter(key, wait)
		return active, nil
	}
	diff = min(diff, maxPodsPerSync)
	var idx []int
	if isIndexed(job) {
		idx = pendingIndexes(job, jc.active, jc.indexes, int(diff))
		diff = int32(len(idx))
	}
	if diff == 0 {
		return active, nil
	}
	c.expectations.ExpectCreations(key, int(diff))
	tmpl := job.Spec.Template.DeepCopy()
	if isIndexed(job) {
		addIndexEnv(tmpl)
	}
	if !hasString(tmpl.Finalizers, batchv1.JobTrackingFinalizer) {
		tmpl.Finalizers = append(tmpl.Finalizers, batchv1.JobTrackingFinalizer)
	}
	ref := metav1.NewControllerRef(job, kind)
	created, err := c.pods.CreatePods(ctx, c.expectations, key, job.Namespace, int(diff), func(n int) *corev1.Pod {
		if idx == nil {
			return controller.NewPod(tmpl, job, ref)
		}
		t := tmpl.DeepCopy()
		withIndex(t, job.Name, idx[n])
		pod := controller.NewPod(t, job, ref)
		pod.GenerateName = fmt.Sprintf("%s-%d-", job.Name, idx[n])
		return pod
	}, job)
	return active + int32(created), err
}

// podsForRemoval picks the active pods to delete: for an Indexed Job
// first those with a bad or duplicate index, then, as for ReplicaSets,
// the least advanced, n at least.
func podsForRemoval(j *batchv1.Job, active []*corev1.Pod, n int) []*corev1.Pod {
	var out, rest []*corev1.Pod
	if isIndexed(j) {
		seen := map[int]bool{}
		sorted := append([]*corev1.Pod(nil), active...)
		sort.Sort(controller.RankedPods{Pods: sorted, Rank: make([]int, len(sorted))})
		// Among duplicates keep the most advanced (the last in rank order).
		for i := len(sorted) - 1; i >= 0; i-- {
			p := sorted[i]
			ix := podIndex(p)
			if !validIndex(j, p) || seen[ix] {
				out = append(out, p)
				continue
			}
			seen[ix] = true
			rest = append(rest, p)
		}
	} else {
		rest = append(rest, active...)
	}
	if k := n - len(out); k > 0 {
		sort.Sort(controller.RankedPods{Pods: rest, Rank: make([]int, len(rest))})
		out = append(out, rest[:min(k, len(rest))]...)
	}
	return out
}

// deleteJobPods deletes pods the Job no longer wants (excess, suspended):
// their finalizer goes first, as they are not failures.
func (c *Controller) deleteJobPods(ctx context.Context, job *batchv1.Job, pods []*corev1.Pod) (int32, int32, error) {
	return c.deletePods(ctx, job, pods, true)
}

// deleteActivePods deletes the pods of a failing Job, keeping their
// finalizer until they are counted.
func (c *Controller) deleteActivePods(ctx context.Context, job *batchv1.Job, pods []*corev1.Pod) (int32, int32, error) {
	return c.deletePods(ctx, job, pods, false)
}

func (c *Controller) deletePods(ctx context.Context, job *batchv1.Job, pods []*corev1.Pod, dropFinalizer bool) (int32, int32, error) {
	key := controller.Key(job)
	c.expectations.ExpectDeletions(key, controller.PodKeys(pods))
	var ready, deleted atomic.Int32
	errs := make(chan error, len(pods))
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(err error) {
				c.expectations.DeletionObserved(key, controller.PodKey(p))
				if !apierrors.IsNotFound(err) {
					errs <- err
					return
				}
				deleted.Add(1)
			}
			if dropFinalizer && hasFinalizer(p) {
				if err := c.removeFinalizer(ctx, p); err != nil {
					fail(fmt.Errorf("removing tracking finalizer: %w", err))
					return
				}
			}
			if err := c.pods.Delete(ctx, p.Namespace, p.Name, job); err != nil {
				fail(err)
				return
			}
			deleted.Add(1)
			if controller.IsPodReady(p) {
				ready.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return ready.Load(), deleted.Load(), <-errs
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
