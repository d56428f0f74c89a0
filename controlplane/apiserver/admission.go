package apiserver

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// admit runs the admission checks every create passes: today
// NamespaceLifecycle, as kube-apiserver's plugin of that name — no new
// content in a namespace that does not exist or is being terminated.
func (s *Server) admit(ctx context.Context, res *registry.Resource, ns, name string) error {
	if !res.Namespaced {
		return nil
	}
	nsRes := s.reg.Lookup(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"})
	kv, err := s.store.Get(ctx, nsRes.Key("", ns))
	if err != nil {
		return storeErr(err, nsRes, ns)
	}
	terminating := func() error {
		return apierrors.NewForbidden(res.GroupResource(), name, fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	// This runs on every create: remember each namespace's state at its
	// last revision rather than decoding it again.
	if c, ok := s.nsState.Load(ns); ok && c.(nsState).rev == kv.ModRevision {
		if c.(nsState).terminating {
			return terminating()
		}
		return nil
	}
	// Only the lifecycle fields are decoded.
	var n struct {
		Metadata struct {
			DeletionTimestamp *metav1.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("decode namespace %s: %w", ns, err))
	}
	isTerminating := n.Metadata.DeletionTimestamp != nil || n.Status.Phase == "Terminating"
	s.nsState.Store(ns, nsState{rev: kv.ModRevision, terminating: isTerminating})
	if isTerminating {
		return terminating()
	}
	return nil
}

// nsState is what admit needs of a namespace at one revision.
type nsState struct {
	rev         int64
	terminating bool
}
