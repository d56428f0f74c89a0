package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/skep-dev/skep/controlplane/store"

	bolt "go.etcd.io/bbolt"
)

type opKind uint8

const (
	opCreate opKind = iota
	opUpdate
	opDelete
)

// op states: a queued op is taken by the committer or cancelled by its
// writer, whichever comes first.
const (
	opQueued int32 = iota
	opTaken
	opCancelled
)

// op is one queued write and, once done is closed, its outcome.
type op struct {
	kind      opKind
	key       string
	record    []byte // create/update: header (revisions filled at commit) | payload
	value     []byte // create/update: the plaintext, kept in the event log
	expectRev int64
	state     atomic.Int32
	done      chan struct{}

	rev int64    // the write's revision
	kv  store.KV // delete: the deleted store.KV
	err error
}

// Create stores a new key; durable on return.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	o, err := s.newPut(opCreate, key, value, 0)
	if err != nil {
		return 0, err
	}
	if err := s.do(ctx, o); err != nil {
		return 0, err
	}
	return o.rev, nil
}

// Update replaces key's value if its ModRevision is expectRev (0: any).
func (s *Store) Update(ctx context.Context, key string, value []byte, expectRev int64) (int64, error) {
	o, err := s.newPut(opUpdate, key, value, expectRev)
	if err != nil {
		return 0, err
	}
	if err := s.do(ctx, o); err != nil {
		return 0, err
	}
	return o.rev, nil
}

// Delete removes key if its ModRevision is expectRev (0: any).
func (s *Store) Delete(ctx context.Context, key string, expectRev int64) (store.KV, error) {
	if err := validKey(key); err != nil {
		return store.KV{}, err
	}
	o := &op{kind: opDelete, key: key, expectRev: expectRev, done: make(chan struct{})}
	if err := s.do(ctx, o); err != nil {
		return store.KV{}, err
	}
	return o.kv, nil
}

func (s *Store) newPut(kind opKind, key string, value []byte, expectRev int64) (*op, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	if len(value) > maxValueLength {
		return nil, fmt.Errorf("store: value of %q too large (%d bytes)", key, len(value))
	}
	o := &op{kind: kind, key: key, expectRev: expectRev, done: make(chan struct{})}
	// Sealing happens here, in the writer's goroutine, not in the committer.
	o.record = newRecord(key, value, s.sealer)
	if o.record[1]&flagEncrypted != 0 {
		o.value = bytes.Clone(value)
	} else {
		o.value = o.record[recordHeaderLen:] // immutable once queued; shared with the event log
	}
	if o.value == nil {
		o.value = []byte{}
	}
	return o, nil
}

// do queues o and waits for its outcome. See the package doc for what a
// cancelled context means.
func (s *Store) do(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.pending = append(s.pending, o)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // the committer already has a token
	}
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opCancelled) {
			return ctx.Err() // the committer will skip it: not applied
		}
		<-o.done // already in a transaction: report its real outcome
		return o.err
	}
}

// commitLoop is the single writer: it groups whatever is queued into one
// transaction per round.
func (s *Store) commitLoop() {
	defer close(s.done)
	var spare []*op
	defer s.idle.Stop()
	for {
		select {
		case <-s.wake:
		case <-s.idle.C:
			s.idleArmed = false
			_ = s.checkpoint() // logged; re-arms the timer on failure
			continue
		case <-s.closing:
			s.mu.Lock()
			rest := s.pending
			s.pending = nil
			s.mu.Unlock()
			for _, o := range rest {
				o.err = store.ErrClosed
				close(o.done)
			}
			s.closeErr = s.checkpoint()
			return
		}
		s.mu.Lock()
		batch := s.pending
		if n := s.batchLen(batch); n < len(batch) {
			// Leave the rest for the next round, and make sure there is one.
			s.pending = append(spare[:0], batch[n:]...)
			batch = batch[:n]
			select {
			case s.wake <- struct{}{}:
			default:
			}
		} else {
			s.pending = spare[:0]
		}
		s.mu.Unlock()

		ops := batch[:0]
		for _, o := range batch {
			if o.state.CompareAndSwap(opQueued, opTaken) {
				ops = append(ops, o)
			}
		}
		if len(ops) > 0 {
			s.commit(ops)
			if s.checkpointDue() {
				_ = s.checkpoint()
			} else {
				s.armIdle()
			}
			// Let the writers just acknowledged run and queue their next
			// write before the next round is taken; otherwise closed-loop
			// writers split into two half-size groups that alternate.
			runtime.Gosched()
		}
		clear(batch[:cap(batch)])
		spare = batch[:0]
	}
}

// batchLen is how many of the queued ops the next transaction takes: at most
// maxBatch ops and maxBatchBytes of records, but at least one.
func (s *Store) batchLen(queued []*op) int {
	bytes := 0
	for i, o := range queued {
		bytes += len(o.record)
		if i > 0 && (i == s.opts.maxBatch || bytes > s.opts.maxBatchBytes) {
			return i
		}
	}
	return len(queued)
}

// commit applies ops in order as one group: each precondition is checked
// against the state including the group's earlier ops, the group's changes
// are made durable with one WAL append, and only then do they become
// visible (overlay, event log, revision) and every writer hears back. Only
// the committer calls it.
func (s *Store) commit(ops []*op) {
	began := time.Now()
	start := s.revision.Load()
	rev := start
	events := make([]store.Event, 0, len(ops))
	entries := make([]walEntry, 0, len(ops))
	var staged map[string]int // key → index in entries, for groups of several ops
	if len(ops) > 1 {
		staged = make(map[string]int, len(ops))
	}
	err := s.view(func(tx *bolt.Tx) error {
		b := kvBucket(tx)
		// current is key's record as the group sees it: its own earlier
		// writes, then the writes not yet checkpointed, then bbolt.
		current := func(key string) []byte {
			if i, ok := staged[key]; ok {
				return entries[i].rec
			}
			if e, ok := s.overlay[key]; ok { // the committer is the overlay's only writer
				return e.rec
			}
			return b.Get([]byte(key))
		}
		for _, o := range ops {
			o.err = nil
			cur := current(o.key)
			var prev *store.KV
			if o.kind != opCreate {
				if cur == nil {
					o.err = store.ErrNotFound
					continue
				}
				_, mod, err := recordRevisions(cur)
				if err != nil {
					return fmt.Errorf("key %q: %w", o.key, err)
				}
				if o.expectRev != 0 && o.expectRev != mod {
					o.err = store.ErrConflict
					continue
				}
				// The previous value is usually still in the event log:
				// share it instead of copying (and decrypting) it again.
				if v, ok := s.events.latestValue(o.key, mod); ok {
					create, _, _ := recordRevisions(cur)
					prev = &store.KV{Key: o.key, Value: v, CreateRevision: create, ModRevision: mod}
				} else if i, ok := staged[o.key]; ok {
					create, _, _ := recordRevisions(cur)
					prev = &store.KV{Key: o.key, Value: events[i].KV.Value, CreateRevision: create, ModRevision: mod}
				} else {
					p, err := decodeRecord(o.key, cur, s.sealer)
					if err != nil {
						return err
					}
					prev = &p
				}
			} else if cur != nil {
				o.err = store.ErrExists
				continue
			}
			rev++
			o.rev = rev
			e := walEntry{key: o.key, rev: rev}
			switch o.kind {
			case opCreate, opUpdate:
				create := rev
				if prev != nil {
					create = prev.CreateRevision
				}
				setRevisions(o.record, create, rev)
				e.rec = o.record
				events = append(events, store.Event{
					Type:     store.EventPut,
					KV:       store.KV{Key: o.key, Value: o.value, CreateRevision: create, ModRevision: rev},
					PrevKV:   prev,
					Revision: rev,
				})
			case opDelete:
				o.kv = *prev
				o.kv.ModRevision = rev
				events = append(events, store.Event{Type: store.EventDelete, KV: o.kv, PrevKV: prev, Revision: rev})
			}
			if staged != nil {
				staged[o.key] = len(entries)
			}
			entries = append(entries, e)
		}
		return nil
	})
	if err == nil && len(entries) > 0 {
		err = s.wal.append(entries)
		if errors.Is(err, errWALFull) {
			if err = s.checkpoint(); err == nil {
				err = s.wal.append(entries)
			}
		}
	}
	s.metrics.commitSeconds.Observe(time.Since(began).Seconds())
	s.metrics.batchSize.Observe(float64(len(ops)))
	if err != nil {
		s.metrics.commitErrors.Inc()
		s.log.Error("store commit failed", "ops", len(ops), "err", err)
		for _, o := range ops {
			o.err = fmt.Errorf("store commit: %w", err)
			o.rev, o.kv = 0, store.KV{}
			close(o.done)
		}
		return
	}
	if len(entries) > 0 {
		// Feed watchers, then make the writes visible to readers together
		// with their revision (a list reads both under ovMu), all before
		// any writer hears back, so a writer's next read or Watch(fromRev)
		// sees its write.
		s.events.append(events)
		s.ovMu.Lock()
		for _, e := range entries {
			s.overlay[e.key] = e
		}
		s.revision.Store(rev)
		s.ovMu.Unlock()
	}
	for _, o := range ops {
		close(o.done)
	}
}

// checkpointDue says whether the overlay should be folded into bbolt now.
func (s *Store) checkpointDue() bool {
	n := len(s.overlay)
	return n > 0 && (n >= s.opts.checkpointWrites ||
		s.wal.off >= s.wal.size/2 ||
		time.Since(s.lastCheckpoint) >= s.opts.checkpointInterval)
}

// armIdle makes sure a checkpoint runs one interval from now if the overlay
// holds writes and none is due sooner (writes may stop). Committer only.
func (s *Store) armIdle() {
	if !s.idleArmed && len(s.overlay) > 0 {
		s.idle.Reset(s.opts.checkpointInterval)
		s.idleArmed = true
	}
}

// checkpoint writes every change not yet in bbolt in one bbolt transaction
// (with bbolt's fsyncs), then empties the overlay and starts the WAL over.
// Committer (or Open/Close) only. On failure nothing is lost: the WAL still
// holds every acknowledged write, and the next checkpoint tries again.
func (s *Store) checkpoint() error {
	s.idle.Stop()
	s.idleArmed = false
	s.lastCheckpoint = time.Now()
	if len(s.overlay) == 0 {
		s.wal.reset()
		return nil
	}
	rev := s.revision.Load()
	keys := make([]string, 0, len(s.overlay))
	for k := range s.overlay {
		keys = append(keys, k)
	}
	slices.Sort(keys) // bbolt inserts in key order touch each page once
	began := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := kvBucket(tx)
		// Keys go in sorted, so a split page can be left nearly full
		// (bbolt's default leaves it half full): fewer pages for a list
		// to touch and keep resident.
		b.FillPercent = 0.9
		for _, k := range keys {
			e := s.overlay[k]
			if e.rec == nil {
				if err := b.Delete([]byte(k)); err != nil {
					return fmt.Errorf("delete %q: %w", k, err)
				}
				continue
			}
			if err := b.Put([]byte(k), e.rec); err != nil {
				return fmt.Errorf("put %q: %w", k, err)
			}
		}
		return tx.Bucket(bucketRoot).Bucket(bucketMeta).Put(keyRevision, putUint64(rev))
	})
	s.metrics.checkpointSeconds.Observe(time.Since(began).Seconds())
	if err != nil {
		s.metrics.checkpointErrors.Inc()
		s.log.Error("store checkpoint failed; the WAL keeps the writes", "writes", len(keys), "err", err)
		s.armIdle() // try again even if no write comes
		return fmt.Errorf("checkpoint: %w", err)
	}
	s.ovMu.Lock()
	s.applied = rev
	s.overlay = make(map[string]walEntry, len(s.overlay))
	s.ovMu.Unlock()
	s.wal.reset()
	return nil
}
