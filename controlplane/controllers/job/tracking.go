package job

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"
)

// Counting finished pods with the tracking finalizer, in three steps each
// of which survives a crash of the controller:
//  1. the uids of newly finished pods are written to
//     status.uncountedTerminatedPods (with any interim condition);
//  2. their finalizers are removed (the pods may now go);
//  3. the uids of pods without the finalizer any more move from the
//     uncounted lists into status.succeeded and status.failed (for an
//     Indexed Job, succeeded indexes go straight to completedIndexes).
// A pod is counted only while it still has the finalizer and its uid is
// neither uncounted nor awaiting its finalizer's removal, so it is counted
// once.

func hasFinalizer(p *corev1.Pod) bool { return hasString(p.Finalizers, batchv1.JobTrackingFinalizer) }

// removeFinalizer patches the tracking finalizer off a pod.
func (c *Controller) removeFinalizer(ctx context.Context, p *corev1.Pod) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"$deleteFromPrimitiveList/finalizers": []string{batchv1.JobTrackingFinalizer}}})
	_, err := c.Kube.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}

// uidSet is, per Job, the pods whose finalizer removal is in flight.
type uidSet struct {
	mu sync.Mutex
	m  map[string]sets.Set[string]
}

func newUIDSet() *uidSet { return &uidSet{m: map[string]sets.Set[string]{}} }

func (u *uidSet) add(key string, uids ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m[key] == nil {
		u.m[key] = sets.New[string]()
	}
	u.m[key].Insert(uids...)
}

func (u *uidSet) remove(key, uid string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s := u.m[key]; s != nil {
		s.Delete(uid)
		if s.Len() == 0 {
			delete(u.m, key)
		}
	}
}

// get returns a copy of key's set.
func (u *uidSet) get(key string) sets.Set[string] {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[key].Clone()
}

func (u *uidSet) forget(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, key)
}

// canRemoveFinalizer: the pod is done with — the Job is finishing or
// being deleted, or the pod succeeded or failed.
func canRemoveFinalizer(jc *syncCtx, p *corev1.Pod, failed bool) bool {
	return jc.job.DeletionTimestamp != nil || jc.finished != nil || p.Status.Phase == corev1.PodSucceeded || failed
}

// trackStatus counts the Job's finished pods (the three steps above) and
// writes its status, with the terminal condition once the Job finished
// and nothing is left to count or terminate. needsFlush says the status
// changed already.
func (c *Controller) trackStatus(ctx context.Context, jc *syncCtx, needsFlush bool) error {
	job := jc.job
	indexed := isIndexed(job)
	if indexed {
		sort.Slice(jc.pods, func(i, j int) bool { return podIndex(jc.pods[i]) < podIndex(jc.pods[j]) })
	}
	withFinalizer := sets.New[types.UID]()
	for _, p := range jc.pods {
		if hasFinalizer(p) && !jc.rmFinalizers.Has(string(p.UID)) {
			withFinalizer.Insert(p.UID)
		}
	}
	if countUncounted(&job.Status, withFinalizer) {
		needsFlush = true
	}
	u := job.Status.UncountedTerminatedPods
	var toFree []*corev1.Pod
	var newIndexes []int
	full := false
	for _, p := range jc.pods {
		if !hasFinalizer(p) || jc.rmFinalizers.Has(string(p.UID)) {
			continue // counted in an earlier sync
		}
		failed := podFailed(p, job)
		if !canRemoveFinalizer(jc, p, failed) {
			continue
		}
		toFree = append(toFree, p)
		switch {
		case p.Status.Phase == corev1.PodSucceeded && !jc.uncounted.failed.Has(string(p.UID)):
			if indexed {
				if validIndex(job, p) && !jc.prevIndexes.has(podIndex(p)) {
					newIndexes = append(newIndexes, podIndex(p))
				}
			} else if !jc.uncounted.succeeded.Has(string(p.UID)) {
				needsFlush = true
				u.Succeeded = append(u.Succeeded, p.UID)
			}
		case failed || (jc.finished != nil && jc.finished.Type != batchv1.JobSuccessCriteriaMet):
			// A failing Job counts every pod it did not see succeed as
			// failed.
			if !jc.uncounted.failed.Has(string(p.UID)) && (!indexed || validIndex(job, p)) {
				needsFlush = true
				u.Failed = append(u.Failed, p.UID)
			}
		}
		if len(newIndexes)+len(u.Succeeded)+len(u.Failed) >= maxUncountedPods {
			full = true // the rest next sync (the updates requeue the Job)
			break
		}
	}
	if indexed {
		jc.indexes = jc.indexes.with(newIndexes)
		if s := jc.indexes.String(); s != job.Status.CompletedIndexes {
			job.Status.CompletedIndexes = s
			needsFlush = true
		}
		job.Status.Succeeded = int32(jc.indexes.total())
	}
	// The interim condition is written with the uncounted pods; the
	// terminal one waits for them to be counted.
	switch {
	case jc.finished != nil && jc.finished.Type == batchv1.JobFailureTarget:
		job.Status.Conditions = append(job.Status.Conditions, *jc.finished)
		needsFlush = true
		jc.finished = c.newCondition(batchv1.JobFailed, jc.finished.Reason, jc.finished.Message)
	case jc.finished != nil && jc.finished.Type == batchv1.JobSuccessCriteriaMet:
		if condition(job, batchv1.JobSuccessCriteriaMet) == nil {
			job.Status.Conditions = append(job.Status.Conditions, *jc.finished)
			needsFlush = true
		}
		jc.finished = c.newCondition(batchv1.JobComplete, jc.finished.Reason, jc.finished.Message)
	}
	needsFlush, err := c.flushAndFree(ctx, jc, toFree, withFinalizer, needsFlush)
	if err != nil {
		return err
	}
	done := !full && c.enactFinished(jc)
	if done || needsFlush {
		if err := c.updateStatus(ctx, jc); err != nil {
			return fmt.Errorf("writing counted pods to status: %w", err)
		}
		if done {
			c.recordFinished(job, jc.finished)
		}
	}
	return nil
}

// flushAndFree writes the status with the new uncounted uids (step 1),
// removes the finalizers (step 2) and counts the pods freed (step 3, in
// job.Status; written by the caller, or here when a removal failed). It
// returns whether the status still needs writing.
func (c *Controller) flushAndFree(ctx context.Context, jc *syncCtx, toFree []*corev1.Pod, withFinalizer sets.Set[types.UID], needsFlush bool) (bool, error) {
	if needsFlush {
		if err := c.updateStatus(ctx, jc); err != nil {
			return needsFlush, fmt.Errorf("adding uncounted pods to status: %w", err)
		}
		c.backoff.update(jc.backoff)
		needsFlush = false
	}
	key := controller.Key(jc.job)
	var rmErr error
	if len(toFree) > 0 {
		uids := make([]string, len(toFree))
		for i, p := range toFree {
			uids[i] = string(p.UID)
		}
		c.finalizers.add(key, uids...)
		ok := make([]bool, len(toFree))
		errs := make(chan error, len(toFree))
		var wg sync.WaitGroup
		for i, p := range toFree {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.removeFinalizer(ctx, p); err != nil {
					// No update will show it removed.
					c.finalizers.remove(key, string(p.UID))
					if !apierrors.IsNotFound(err) {
						errs <- err
						return
					}
				}
				ok[i] = true
			}()
		}
		wg.Wait()
		close(errs)
		rmErr = <-errs
		for i, p := range toFree {
			if ok[i] {
				withFinalizer.Delete(p.UID)
			}
		}
	}
	if countUncounted(&jc.job.Status, withFinalizer) {
		needsFlush = true
	}
	if rmErr != nil && needsFlush {
		// Keep what was counted before reporting the failure.
		if err := c.updateStatus(ctx, jc); err != nil {
			return needsFlush, fmt.Errorf("removing uncounted pods from status: %w", err)
		}
	}
	return needsFlush, rmErr
}

// countUncounted moves the uncounted uids whose pods lost the finalizer
// into the counters, reporting whether any did.
func countUncounted(st *batchv1.JobStatus, withFinalizer sets.Set[types.UID]) bool {
	u := st.UncountedTerminatedPods
	keep := func(uids []types.UID) []types.UID {
		var out []types.UID
		for _, uid := range uids {
			if withFinalizer.Has(uid) {
				out = append(out, uid)
			}
		}
		return out
	}
	changed := false
	if s := keep(u.Succeeded); len(s) != len(u.Succeeded) {
		st.Succeeded += int32(len(u.Succeeded) - len(s))
		u.Succeeded, changed = s, true
	}
	if f := keep(u.Failed); len(f) != len(u.Failed) {
		st.Failed += int32(len(u.Failed) - len(f))
		u.Failed, changed = f, true
	}
	return changed
}

// enactFinished sets the terminal condition once nothing is left to
// count or terminate, reporting whether it did.
func (c *Controller) enactFinished(jc *syncCtx) bool {
	if jc.finished == nil {
		return false
	}
	job := jc.job
	if u := job.Status.UncountedTerminatedPods; u != nil && len(u.Succeeded)+len(u.Failed) > 0 {
		return false
	}
	if jc.terminating > 0 {
		return false
	}
	f := jc.finished
	setCondition(job, f.Type, corev1.ConditionTrue, f.Reason, f.Message, c.opts.Clock.Now())
	if f.Type == batchv1.JobComplete {
		t := metav1.NewTime(c.opts.Clock.Now())
		job.Status.CompletionTime = &t
	}
	return true
}

func (c *Controller) recordFinished(job *batchv1.Job, f *batchv1.JobCondition) {
	if f.Type == batchv1.JobComplete {
		c.Recorder.Event(job, corev1.EventTypeNormal, "Completed", "Job completed")
		return
	}
	c.Recorder.Event(job, corev1.EventTypeWarning, f.Reason, f.Message)
}

// updateStatus writes the Job's status and carries on with what was
// stored (so a second write in this sync does not conflict).
func (c *Controller) updateStatus(ctx context.Context, jc *syncCtx) error {
	updated, err := c.Kube.BatchV1().Jobs(jc.job.Namespace).UpdateStatus(ctx, jc.job, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	jc.job = updated
	if jc.job.Status.UncountedTerminatedPods == nil {
		jc.job.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	}
	return nil
}

// syncOrphanPod removes the tracking finalizer from a pod no unfinished
// Job of this controller will count.
func (c *Controller) syncOrphanPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	p, err := c.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !hasFinalizer(p) {
		return nil
	}
	if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
		if ref.Kind != kind.Kind || ref.APIVersion != batchv1.SchemeGroupVersion.String() {
			return nil // someone else's pod
		}
		if j := c.resolve(ns, ref); j != nil && (managedElsewhere(j) || !finished(j)) {
			return nil // adopted, or counted by its Job
		}
	}
	if err := c.removeFinalizer(ctx, p); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}
