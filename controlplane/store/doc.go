// Package store is the seam between the API server and the state it keeps:
// an Interface with etcd's semantics (one global revision bumped by every
// write, compare-and-swap on a key's revision, watch from a revision) and
// the errors every implementation returns.
//
// The API server knows only this package. Implementations live beside it:
// boltstore is the embedded default (one bbolt file and its write-ahead
// log); an etcd implementation for the highly available control plane plugs
// in behind the same Interface.
package store
