package job

import (
	"context"
	"time"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	batchinformers "k8s.io/client-go/informers/batch/v1"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// ttlController deletes finished Jobs ttlSecondsAfterFinished after they
// finished (kube-controller-manager's ttl-after-finished controller): in
// the foreground, so their pods go first, and only the Job it looked at
// (a uid precondition) after reading it fresh, since its TTL may have
// changed.
type ttlController struct {
	kube   kubernetes.Interface
	lister batchlisters.JobLister
	queue  workqueue.TypedRateLimitingInterface[string]
	clock  clock.Clock
}

func newTTLController(kube kubernetes.Interface, jobs batchinformers.JobInformer, clk clock.WithTicker) *ttlController {
	t := &ttlController{kube: kube, lister: jobs.Lister(), queue: controller.NewQueue("ttl_jobs_to_delete", clk), clock: clk}
	enqueue := func(obj any) {
		if j, ok := obj.(*batchv1.Job); ok && needsCleanup(j) {
			t.queue.Add(controller.Key(j))
		}
	}
	// The error is the handler registration's, only possible on a stopped
	// informer.
	_, _ = jobs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }})
	return t
}

// needsCleanup: a finished Job with a TTL.
func needsCleanup(j *batchv1.Job) bool {
	return j.Spec.TTLSecondsAfterFinished != nil && finished(j) && j.DeletionTimestamp == nil
}

// expiresIn is how long until the Job's TTL runs out (≤ 0: it has).
func (t *ttlController) expiresIn(j *batchv1.Job) time.Duration {
	var at time.Time
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			at = c.LastTransitionTime.Time
		}
	}
	return at.Add(time.Duration(*j.Spec.TTLSecondsAfterFinished) * time.Second).Sub(t.clock.Now())
}

func (t *ttlController) process(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	j, err := t.lister.Jobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !needsCleanup(j) {
		return nil
	}
	if left := t.expiresIn(j); left > 0 {
		t.queue.AddAfter(key, left)
		return nil
	}
	fresh, err := t.kube.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !needsCleanup(fresh) {
		return nil
	}
	if left := t.expiresIn(fresh); left > 0 {
		t.queue.AddAfter(key, left)
		return nil
	}
	fg := metav1.DeletePropagationForeground
	err = t.kube.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg, Preconditions: &metav1.Preconditions{UID: &fresh.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
