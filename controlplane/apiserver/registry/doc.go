// Package registry describes the resources the API server serves: one
// Resource row per kind, each carrying the Strategy that says what is
// special about it. The REST core (package apiserver) is generic: it knows
// HTTP, encodings, the store and the order of the steps below, and nothing
// about Pods, Services or Deployments. What a kind adds lives in its own
// file in the package of its API group (registry/core, registry/apps, …), as
// in Kubernetes' pkg/registry/<group>/<resource>/strategy.go, but smaller.
//
// # A write, step by step
//
//	create                          update (PUT, PATCH, status, finalize)     delete
//	──────                          ─────────────────────────────────────     ──────
//	decode body                     read current object                       read current object
//	admission (namespace lifecycle) decode body / apply patch onto it         Strategy.BeginDelete
//	system metadata (uid, time …)   carry system metadata over                  (refuse, grace period,
//	Strategy.PrepareForCreate       UpdateStrategy.PrepareForUpdate              mark the object)
//	Strategy.Default                Strategy.Default                          finalizers / grace pending?
//	validate metadata + Validate    validate metadata + ValidateUpdate          → store the mark (202)
//	Strategy.Reserve(obj, nil)      Strategy.Reserve(obj, old)                 else store.Delete
//	store.Create                    store.Update (compare-and-swap, retried)   Strategy.Reserve(nil, old)
//	Commit, or Rollback on failure  Commit, or Rollback on failure                .Commit() on success
//
// UpdateStrategy is the part a subresource may replace: the status
// subresource writes only status (StatusStrategy), a namespace's finalize
// only spec.finalizers. Subresources that are not a view of the whole
// object (scale, binding, and later log, exec, token) register a Handler
// with the row; it gets the resource's Objects to read and update through
// the same generic path.
//
// A Reservation is how a write takes shared state that is not in the
// object's own key — a Service's cluster IP and node ports — and gives it
// back when the write does not land: the generic path calls Rollback on
// every failure (validation, conflict, store error, dry run, no-op) and
// Commit once the write is durable, so a strategy never undoes by hand.
package registry
