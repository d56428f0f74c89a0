package store

import (
	"context"
	"errors"
)

// Errors the store returns; the API server translates them to metav1.Status
// (404 NotFound, 409 AlreadyExists, 409 Conflict, 410 Gone/Expired).
var (
	ErrNotFound = errors.New("store: key not found")
	ErrExists   = errors.New("store: key already exists")
	ErrConflict = errors.New("store: revision mismatch")
	ErrExpired  = errors.New("store: revision compacted out of the watch log")
	ErrClosed   = errors.New("store: closed")
)

// KV is one stored object: its key, its bytes, and the revisions at which it
// was created and last modified. The API server reports ModRevision as the
// object's metadata.resourceVersion; the bytes never carry it.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
}

// EventType says what happened to a key.
type EventType int

const (
	EventPut      EventType = iota // created or updated
	EventDelete                    // deleted; KV holds the last value, ModRevision the delete's revision
	EventProgress                  // bookmark: every change up to Revision has been delivered
)

// Event is one change, delivered in revision order.
type Event struct {
	Type     EventType
	KV       KV
	PrevKV   *KV   // the value before a put (nil on create) or a delete
	Revision int64 // the revision of the change, or the progress revision
}

// ListOptions selects a page of keys under a prefix.
type ListOptions struct {
	// StartAfter lists keys strictly after this one (the continue token's key).
	StartAfter string
	// Limit is the page size; 0 means everything.
	Limit int
}

// ListResult is one page.
type ListResult struct {
	Items    []KV
	Revision int64 // the store revision the page was read at
	More     bool  // more keys follow the last item
	// Remaining counts the keys after this page (the ListMeta's remainingItemCount).
	Remaining int64
}

// WatchOptions tunes a watch.
type WatchOptions struct {
	// ProgressNotify asks for EventProgress events when the watch is idle, so
	// clients get bookmarks.
	ProgressNotify bool
}

// Interface is the control plane's store with etcd's semantics: one global
// revision bumped by each write, compare-and-swap on a key's revision, watch
// from a revision. boltstore is the embedded implementation; an embedded etcd can
// implement the same interface later.
type Interface interface {
	// Get returns the current value of key, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns keys with the prefix in key order, from one snapshot.
	List(ctx context.Context, prefix string, opts ListOptions) (ListResult, error)
	// Range reads as List does but hands the items to each one at a time,
	// so a list of any size is never all in memory; begin, when not nil,
	// gets the snapshot's revision before the first item. It stops at the
	// first error either returns. The result has no Items.
	Range(ctx context.Context, prefix string, opts ListOptions, begin func(rev int64) error, each func(KV) error) (ListResult, error)
	// Create stores a new key and returns the write's revision; ErrExists if present.
	// It returns only after the write is durable.
	Create(ctx context.Context, key string, value []byte) (int64, error)
	// Update replaces key's value if its ModRevision equals expectRev (0: any),
	// else ErrConflict; ErrNotFound if absent. Durable on return.
	Update(ctx context.Context, key string, value []byte, expectRev int64) (int64, error)
	// Delete removes key if its ModRevision equals expectRev (0: any) and
	// returns the deleted KV with the delete's revision as ModRevision.
	Delete(ctx context.Context, key string, expectRev int64) (KV, error)
	// Watch streams the changes under prefix with a revision greater than
	// fromRev (0: from now). A fromRev older than the event log keeps gives
	// ErrExpired. The channel closes when ctx ends, the watcher falls too far
	// behind, or the store closes; the caller then re-watches or relists.
	// A fromRev ahead of the store's revision waits for it. Events share
	// their Value bytes with every other watcher: treat them as read-only.
	Watch(ctx context.Context, prefix string, fromRev int64, opts WatchOptions) (<-chan Event, error)
	// Revision is the store's current revision.
	Revision() int64
	Close() error
}
