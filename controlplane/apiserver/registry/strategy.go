package registry

import (
	"context"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// UpdateStrategy is the part of a Strategy that an update through a
// subresource (status, finalize) replaces.
type UpdateStrategy interface {
	// PrepareForUpdate carries over from old what a client may not change
	// through this endpoint (status through the object, spec through
	// status). System metadata (uid, creationTimestamp, …) is carried over
	// by the generic path before this runs.
	PrepareForUpdate(obj, old runtime.Object)
	// ValidateUpdate checks obj against old beyond metadata.
	ValidateUpdate(obj, old runtime.Object) field.ErrorList
}

// Strategy is what a kind adds to the generic create, update and delete
// (see the package doc for the order of the steps). Embed DefaultStrategy,
// or SpecStatus for kinds with a spec and a status, and override what the
// kind needs.
type Strategy interface {
	UpdateStrategy
	// PrepareForCreate clears or sets what a client may not choose on
	// create (status, generation).
	PrepareForCreate(obj runtime.Object)
	// Default fills in what Kubernetes' defaulting does; it runs on create
	// and on every update, after the Prepare step.
	Default(obj runtime.Object)
	// Validate checks a new object beyond metadata.
	Validate(obj runtime.Object) field.ErrorList
	// Reserve takes the shared state a write needs beyond the object's own
	// key: obj is what will be stored (nil for a delete), old what is
	// stored now (nil for a create). The generic path calls Commit once
	// the write is durable and Rollback when it does not land.
	Reserve(obj, old runtime.Object) (Reservation, error)
	// BeginDelete runs when a delete is asked for obj, a copy of the stored
	// object it may mark (a namespace's phase). It may refuse with an API
	// error, and says whether the delete is graceful (only marked, with a
	// deletionTimestamp grace seconds ahead) rather than immediate.
	BeginDelete(obj runtime.Object, opts *metav1.DeleteOptions) (grace int64, graceful bool, err error)
	// Removable says whether an object marked for deletion whose
	// finalizers are gone may now be removed from the store.
	Removable(obj runtime.Object) bool
}

// Restorer is implemented by strategies that keep state derived from the
// stored objects (an allocator's): the server hands them every stored
// object of the resource at start, before it serves.
type Restorer interface {
	Restore(obj runtime.Object)
}

// Admitter is implemented by strategies that check a write against who
// makes it (RBAC's escalation prevention, the node restriction): ctx
// carries the user (k8s.io/apiserver's request.UserFrom). Admit runs after
// validation, on creates (old nil) and updates.
type Admitter interface {
	Admit(ctx context.Context, obj, old runtime.Object) error
}

// Reservation is shared state a write holds until it lands or fails.
type Reservation interface {
	// Commit is called once the write is durable: it frees what the old
	// object held and the new one does not.
	Commit()
	// Rollback is called when the write does not land: it frees what
	// Reserve took.
	Rollback()
}

// NoReservation is the Reservation of a write that takes nothing.
var NoReservation Reservation = noReservation{}

type noReservation struct{}

func (noReservation) Commit()   {}
func (noReservation) Rollback() {}

// DefaultStrategy is a kind with nothing special: no defaults, no checks
// beyond metadata, immediate deletes.
type DefaultStrategy struct{}

func (DefaultStrategy) PrepareForCreate(runtime.Object)                    {}
func (DefaultStrategy) PrepareForUpdate(_, _ runtime.Object)               {}
func (DefaultStrategy) Default(runtime.Object)                             {}
func (DefaultStrategy) Validate(runtime.Object) field.ErrorList            { return nil }
func (DefaultStrategy) ValidateUpdate(_, _ runtime.Object) field.ErrorList { return nil }
func (DefaultStrategy) Reserve(_, _ runtime.Object) (Reservation, error)   { return NoReservation, nil }
func (DefaultStrategy) Removable(runtime.Object) bool                      { return true }
func (DefaultStrategy) BeginDelete(runtime.Object, *metav1.DeleteOptions) (int64, bool, error) {
	return 0, false, nil
}

// SpecStatus is the strategy of a kind with a spec and, when Status is
// set, a status subresource: a new object starts at generation 1 (with
// Generation) and with an empty status (with Status); an update through the
// object keeps the stored status and bumps the generation when the spec
// changed. It works on any typed object with Spec and Status fields, as a
// custom resource's strategy will.
type SpecStatus struct {
	DefaultStrategy
	// Status: the status is written only through the status subresource.
	Status bool
	// Generation: metadata.generation counts spec changes.
	Generation bool
}

func (s SpecStatus) PrepareForCreate(obj runtime.Object) {
	if s.Generation && HasField(obj, "Spec") {
		Meta(obj).SetGeneration(1)
	}
	if s.Status {
		ResetField(obj, "Status")
	}
}

func (s SpecStatus) PrepareForUpdate(obj, old runtime.Object) {
	if s.Status {
		CopyField(obj, old, "Status")
	}
	if g := Meta(old).GetGeneration(); g > 0 && !EqualSemantic(Field(obj, "Spec"), Field(old, "Spec")) {
		Meta(obj).SetGeneration(g + 1)
	}
}

// StatusStrategy is the update strategy of the status subresource of a kind
// whose strategy is main: it writes only the status (the spec, owner
// references and finalizers stay as stored, as for Kubernetes' pods/status)
// and validates with main.
func StatusStrategy(main Strategy) UpdateStrategy { return statusStrategy{main} }

type statusStrategy struct{ main Strategy }

func (s statusStrategy) PrepareForUpdate(obj, old runtime.Object) {
	CopyField(obj, old, "Spec")
	m, om := Meta(obj), Meta(old)
	m.SetOwnerReferences(om.GetOwnerReferences())
	m.SetFinalizers(om.GetFinalizers())
}

func (s statusStrategy) ValidateUpdate(obj, old runtime.Object) field.ErrorList {
	return s.main.ValidateUpdate(obj, old)
}
