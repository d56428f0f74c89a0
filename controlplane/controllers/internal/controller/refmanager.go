package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
)

// RefManager decides which objects (pods, ReplicaSets, revisions) a
// controller owns, kube-controller-manager's ControllerRefManager rules:
//   - an object whose controller reference names another controller is
//     left alone;
//   - an object this controller owns but no longer selects is released
//     (its reference removed), unless the controller is being deleted;
//   - an orphan it selects is adopted (a reference added), unless either
//     is being deleted; before the first adoption a fresh read of the
//     controller (CanAdopt) makes sure it still exists with the same uid
//     and is not being deleted, since a stale cache could otherwise make
//     a deleted controller adopt objects nothing would then clean up.
type RefManager struct {
	Controller metav1.Object
	Kind       schema.GroupVersionKind
	Selector   labels.Selector
	// CanAdopt is the fresh read; see RecheckDeletion.
	CanAdopt func(ctx context.Context) error
	// AdoptFinalizers are added to an object with its adoption (the Job
	// controller's tracking finalizer).
	AdoptFinalizers []string

	once     sync.Once
	adoptErr error
}

// Patcher applies a strategic merge patch to one object.
type Patcher func(ctx context.Context, namespace, name string, patch []byte) error

// Claim returns the objects of objs the controller owns after adopting
// and releasing, and the errors of the adoptions and releases that failed
// (NotFound counts as done).
func Claim[T metav1.Object](ctx context.Context, m *RefManager, objs []T, patch Patcher) ([]T, error) {
	var owned []T
	var errs []error
	for _, o := range objs {
		ok, err := m.claim(ctx, o, patch)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			owned = append(owned, o)
		}
	}
	return owned, utilerrors.NewAggregate(errs)
}

func (m *RefManager) claim(ctx context.Context, o metav1.Object, patch Patcher) (bool, error) {
	matches := m.Selector.Matches(labels.Set(o.GetLabels()))
	if ref := metav1.GetControllerOfNoCopy(o); ref != nil {
		if ref.UID != m.Controller.GetUID() {
			return false, nil
		}
		if matches {
			return true, nil
		}
		if m.Controller.GetDeletionTimestamp() != nil {
			return false, nil
		}
		if err := m.release(ctx, o, patch); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) {
			return false, err
		}
		return false, nil
	}
	if !matches || m.Controller.GetDeletionTimestamp() != nil || o.GetDeletionTimestamp() != nil ||
		o.GetNamespace() != m.Controller.GetNamespace() {
		return false, nil
	}
	if err := m.adopt(ctx, o, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

type refPatch struct {
	Metadata refPatchMeta `json:"metadata"`
}

type refPatchMeta struct {
	OwnerReferences []any     `json:"ownerReferences"`
	UID             types.UID `json:"uid"`
	Finalizers      []string  `json:"finalizers,omitempty"`
}

func (m *RefManager) adopt(ctx context.Context, o metav1.Object, patch Patcher) error {
	m.once.Do(func() {
		if m.CanAdopt != nil {
			m.adoptErr = m.CanAdopt(ctx)
		}
	})
	if m.adoptErr != nil {
		return fmt.Errorf("can't adopt %s/%s: %w", o.GetNamespace(), o.GetName(), m.adoptErr)
	}
	ref := metav1.NewControllerRef(m.Controller, m.Kind)
	p, err := json.Marshal(refPatch{Metadata: refPatchMeta{OwnerReferences: []any{ref}, UID: o.GetUID(), Finalizers: m.AdoptFinalizers}})
	if err != nil {
		return err
	}
	return patch(ctx, o.GetNamespace(), o.GetName(), p)
}

func (m *RefManager) release(ctx context.Context, o metav1.Object, patch Patcher) error {
	del := map[string]any{"$patch": "delete", "uid": m.Controller.GetUID()}
	p, err := json.Marshal(refPatch{Metadata: refPatchMeta{OwnerReferences: []any{del}, UID: o.GetUID()}})
	if err != nil {
		return err
	}
	return patch(ctx, o.GetNamespace(), o.GetName(), p)
}

// RecheckDeletion is a RefManager's CanAdopt: get reads the controller
// from the API server (not the cache); it must still have uid and no
// deletion timestamp.
func RecheckDeletion(uid types.UID, get func(ctx context.Context) (metav1.Object, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		fresh, err := get(ctx)
		if err != nil {
			return fmt.Errorf("recheck the controller: %w", err)
		}
		if fresh.GetUID() != uid {
			return fmt.Errorf("original %s/%s is gone: got uid %v, wanted %v", fresh.GetNamespace(), fresh.GetName(), fresh.GetUID(), uid)
		}
		if fresh.GetDeletionTimestamp() != nil {
			return fmt.Errorf("%s/%s has just been deleted at %v", fresh.GetNamespace(), fresh.GetName(), fresh.GetDeletionTimestamp())
		}
		return nil
	}
}

// PodPatcher patches pods.
func PodPatcher(c kubernetes.Interface) Patcher {
	return func(ctx context.Context, ns, name string, p []byte) error {
		_, err := c.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, p, metav1.PatchOptions{})
		return err
	}
}

// ReplicaSetPatcher patches ReplicaSets.
func ReplicaSetPatcher(c kubernetes.Interface) Patcher {
	return func(ctx context.Context, ns, name string, p []byte) error {
		_, err := c.AppsV1().ReplicaSets(ns).Patch(ctx, name, types.StrategicMergePatchType, p, metav1.PatchOptions{})
		return err
	}
}

// ControllerRevisionPatcher patches ControllerRevisions.
func ControllerRevisionPatcher(c kubernetes.Interface) Patcher {
	return func(ctx context.Context, ns, name string, p []byte) error {
		_, err := c.AppsV1().ControllerRevisions(ns).Patch(ctx, name, types.StrategicMergePatchType, p, metav1.PatchOptions{})
		return err
	}
}
