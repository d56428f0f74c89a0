// Package coordination is the registry of the coordination.k8s.io/v1 API
// group: Leases (node heartbeats, leader election).
package coordination

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Resources returns the rows of the coordination group.
func Resources() []*registry.Resource {
	return []*registry.Resource{{
		GVK: coordinationv1.SchemeGroupVersion.WithKind("Lease"), Plural: "leases",
		Namespaced: true,
		New:        func() runtime.Object { return &coordinationv1.Lease{} },
		Strategy:   registry.SpecStatus{Generation: true},
		Columns:    []registry.Column{{Name: "Holder", Type: "string", Description: "The holder of the lease."}},
		Row: func(o runtime.Object) []interface{} {
			l := o.(*coordinationv1.Lease)
			h := ""
			if l.Spec.HolderIdentity != nil {
				h = *l.Spec.HolderIdentity
			}
			return []interface{}{h}
		},
	}}
}
