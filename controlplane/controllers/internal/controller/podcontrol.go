package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
)

// PodControl creates and deletes a controller's pods, recording the
// events kubectl describe shows on the controller (SuccessfulCreate,
// FailedCreate, SuccessfulDelete, FailedDelete).
type PodControl struct {
	Client   kubernetes.Interface
	Recorder record.EventRecorder
}

// NewPod is the pod a controller creates from its template: the
// template's labels, annotations, finalizers and spec, the controller's
// name as generateName prefix, and ref (the controller reference).
func NewPod(tmpl *corev1.PodTemplateSpec, owner metav1.Object, ref *metav1.OwnerReference) *corev1.Pod {
	prefix := owner.GetName() + "-"
	if len(apivalidation.NameIsDNSSubdomain(prefix, true)) != 0 {
		prefix = owner.GetName()
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: prefix,
			Labels:       copyMap(tmpl.Labels),
			Annotations:  copyMap(tmpl.Annotations),
			Finalizers:   append([]string(nil), tmpl.Finalizers...),
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	if ref != nil {
		p.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return p
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Create creates pod in namespace ns on behalf of owner (an API object,
// for the events).
func (pc PodControl) Create(ctx context.Context, ns string, pod *corev1.Pod, owner runtime.Object) (*corev1.Pod, error) {
	if len(pod.Labels) == 0 {
		return nil, errors.New("unable to create pods, no labels")
	}
	created, err := pc.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		// A namespace being deleted refuses new pods: not worth an event.
		if !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			pc.Recorder.Eventf(owner, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		}
		return nil, err
	}
	pc.Recorder.Eventf(owner, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %v", created.Name)
	return created, nil
}

// Delete deletes the pod ns/name on behalf of owner. NotFound is returned
// as is (without an event): callers count it as done.
func (pc PodControl) Delete(ctx context.Context, ns, name string, owner runtime.Object) error {
	err := pc.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return err
	case err != nil:
		pc.Recorder.Eventf(owner, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
		return fmt.Errorf("delete pod %s/%s: %w", ns, name, err)
	}
	pc.Recorder.Eventf(owner, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %v", name)
	return nil
}

// CreatePods creates n pods on behalf of owner in slow-start batches (the
// i-th is newPod(i)), for a controller whose expectations under key
// already await them: those never created are taken back. Creates refused
// because the namespace is being deleted count as done (all would be). It
// returns how many were created and the first error.
func (pc PodControl) CreatePods(ctx context.Context, e *Expectations, key, ns string, n int, newPod func(i int) *corev1.Pod, owner runtime.Object) (int, error) {
	var next atomic.Int64
	created, err := SlowStartBatch(n, SlowStartInitialBatchSize, func() error {
		_, err := pc.Create(ctx, ns, newPod(int(next.Add(1)-1)), owner)
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil
		}
		return err
	})
	if skipped := n - created; skipped > 0 {
		e.LowerCreations(key, skipped)
	}
	return created, err
}

// DeletePods deletes pods on behalf of owner, all at once, for a
// controller whose expectations under key already await the deletions:
// those that will not show (failed, or already gone) are taken back. It
// returns the first error but NotFound.
func (pc PodControl) DeletePods(ctx context.Context, e *Expectations, key, ns string, pods []*corev1.Pod, owner runtime.Object) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(pods))
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pc.Delete(ctx, ns, p.Name, owner); err != nil {
				e.DeletionObserved(key, PodKey(p))
				if !apierrors.IsNotFound(err) {
					errc <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// SlowStartInitialBatchSize is the first batch of SlowStartBatch.
const SlowStartInitialBatchSize = 1

// SlowStartBatch calls fn count times, in batches that start at
// initialBatchSize and double while every call of a batch succeeds: a
// controller whose creates all fail (a quota, a webhook, a bad template)
// makes one failing call, not count. It returns how many calls succeeded
// and the first error; the calls after a failed batch are not made.
func SlowStartBatch(count, initialBatchSize int, fn func() error) (int, error) {
	remaining := count
	successes := 0
	for batch := min(remaining, initialBatchSize); batch > 0; batch = min(2*batch, remaining) {
		errc := make(chan error, batch)
		var wg sync.WaitGroup
		for range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(); err != nil {
					errc <- err
				}
			}()
		}
		wg.Wait()
		close(errc)
		failed := len(errc)
		successes += batch - failed
		if failed > 0 {
			return successes, <-errc
		}
		remaining -= batch
	}
	return successes, nil
}
