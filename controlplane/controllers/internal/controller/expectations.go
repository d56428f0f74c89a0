package controller

import (
	"sync"
	"time"
)

// ExpectationsTimeout is how long a controller waits for the watch events
// of its own creates and deletes before it syncs anyway (upstream's 5
// minutes): a lost event must not stall a controller forever.
const ExpectationsTimeout = 5 * time.Minute

// Expectations remember, per controller key, how many pod creations and
// which pod deletions the controller made and has not yet seen in its
// informer cache. A controller syncs a key only when its expectations are
// satisfied; otherwise its cache does not yet show its own writes, and
// acting on it would create or delete twice.
type Expectations struct {
	mu  sync.Mutex
	m   map[string]*expectation
	now func() time.Time
}

type expectation struct {
	add, del int
	// deleting are the keys (namespace/name) of the pods whose deletion
	// is awaited: only their delete events count, not those of pods some
	// other actor removes.
	deleting map[string]bool
	set      time.Time
}

// NewExpectations returns empty expectations.
func NewExpectations() *Expectations {
	return &Expectations{m: map[string]*expectation{}, now: time.Now}
}

// Satisfied reports whether key may sync: nothing is awaited, or it was
// awaited for longer than ExpectationsTimeout.
func (e *Expectations) Satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	return !ok || (x.add <= 0 && x.del <= 0) || e.now().Sub(x.set) > ExpectationsTimeout
}

// ExpectCreations records that key is about to create n pods.
func (e *Expectations) ExpectCreations(key string, n int) { e.Expect(key, n, nil) }

// ExpectDeletions records that key is about to delete the pods podKeys.
func (e *Expectations) ExpectDeletions(key string, podKeys []string) { e.Expect(key, 0, podKeys) }

// Expect records that key is about to create n pods and delete the pods
// podKeys, replacing what it awaited before.
func (e *Expectations) Expect(key string, n int, podKeys []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &expectation{add: n, del: len(podKeys), deleting: make(map[string]bool, len(podKeys)), set: e.now()}
	for _, k := range podKeys {
		x.deleting[k] = true
	}
	e.m[key] = x
}

// CreationObserved counts one awaited creation as seen, or as never coming
// (a create that failed or was skipped).
func (e *Expectations) CreationObserved(key string) { e.LowerCreations(key, 1) }

// LowerCreations counts n awaited creations as never coming.
func (e *Expectations) LowerCreations(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		x.add -= n
	}
}

// DeletionObserved counts the deletion of podKey as seen (or as never
// coming) if key awaited it.
func (e *Expectations) DeletionObserved(key, podKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok && x.deleting[podKey] {
		delete(x.deleting, podKey)
		x.del--
	}
}

// Delete forgets key (its controller is gone).
func (e *Expectations) Delete(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
