package controller

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// OwnerIndex indexes objects (pods) by the uid of their controller, and
// those without one under "orphan/<namespace>". A controller's claim
// needs only the objects it controls and the orphans of its namespace
// (objects other controllers own are left alone), so with this index a
// sync costs its own pods, not the namespace's.
const OwnerIndex = "skep.dev/controller-uid"

// AddOwnerIndex adds OwnerIndex to a shared informer (once: the
// controllers sharing the informer all ask).
func AddOwnerIndex(inf cache.SharedIndexInformer) error {
	if _, ok := inf.GetIndexer().GetIndexers()[OwnerIndex]; ok {
		return nil
	}
	return inf.AddIndexers(cache.Indexers{OwnerIndex: ownerIndex})
}

func ownerIndex(obj any) ([]string, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil
	}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
		return []string{string(ref.UID)}, nil
	}
	return []string{"orphan/" + m.GetNamespace()}, nil
}

// Candidates are the objects of idx a controller with uid in namespace ns
// may claim: those it controls and the orphans of ns.
func Candidates[T any](idx cache.Indexer, uid types.UID, ns string) ([]T, error) {
	owned, err := idx.ByIndex(OwnerIndex, string(uid))
	if err != nil {
		return nil, err
	}
	orphans, err := idx.ByIndex(OwnerIndex, "orphan/"+ns)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(owned)+len(orphans))
	for _, o := range append(owned, orphans...) {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out, nil
}
