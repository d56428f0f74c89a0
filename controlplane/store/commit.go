package store

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

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

	rev int64 // the write's revision
	kv  KV    // delete: the deleted KV
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
func (s *Store) Delete(ctx context.Context, key string, expectRev int64) (KV, error) {
	if err := validKey(key); err != nil {
		return KV{}, err
	}
	o := &op{kind: opDelete, key: key, expectRev: expectRev, done: make(chan struct{})}
	if err := s.do(ctx, o); err != nil {
		return KV{}, err
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
		return ErrClosed
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
	for {
		select {
		case <-s.wake:
		case <-s.closing:
			s.mu.Lock()
			rest := s.pending
			s.pending = nil
			s.mu.Unlock()
			for _, o := range rest {
				o.err = ErrClosed
				close(o.done)
			}
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

// commit applies ops in order in one transaction. Every op is acknowledged
// after the commit (or its failure). Only the committer calls it, so the
// published revision is also the last committed one.
func (s *Store) commit(ops []*op) {
	began := time.Now()
	start := s.revision.Load()
	rev := start
	events := make([]Event, 0, len(ops))
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketRoot)
		b := root.Bucket(bucketKV)
		for _, o := range ops {
			o.err = nil
			k := []byte(o.key)
			cur := b.Get(k)
			var prev *KV
			if o.kind != opCreate {
				if cur == nil {
					o.err = ErrNotFound
					continue
				}
				_, mod, err := recordRevisions(cur)
				if err != nil {
					return fmt.Errorf("key %q: %w", o.key, err)
				}
				if o.expectRev != 0 && o.expectRev != mod {
					o.err = ErrConflict
					continue
				}
				// The previous value is usually still in the event log:
				// share it instead of copying (and decrypting) it again.
				if v, ok := s.events.latestValue(o.key, mod); ok {
					create, _, _ := recordRevisions(cur)
					prev = &KV{Key: o.key, Value: v, CreateRevision: create, ModRevision: mod}
				} else {
					p, err := decodeRecord(o.key, cur, s.sealer)
					if err != nil {
						return err
					}
					prev = &p
				}
			} else if cur != nil {
				o.err = ErrExists
				continue
			}
			rev++
			o.rev = rev
			switch o.kind {
			case opCreate, opUpdate:
				create := rev
				if prev != nil {
					create = prev.CreateRevision
				}
				setRevisions(o.record, create, rev)
				if err := b.Put(k, o.record); err != nil {
					return fmt.Errorf("put %q: %w", o.key, err)
				}
				events = append(events, Event{
					Type:     EventPut,
					KV:       KV{Key: o.key, Value: o.value, CreateRevision: create, ModRevision: rev},
					PrevKV:   prev,
					Revision: rev,
				})
			case opDelete:
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("delete %q: %w", o.key, err)
				}
				o.kv = *prev
				o.kv.ModRevision = rev
				events = append(events, Event{Type: EventDelete, KV: o.kv, PrevKV: prev, Revision: rev})
			}
		}
		if rev == start {
			return nil // nothing changed: bbolt commits an empty tx without I/O
		}
		return root.Bucket(bucketMeta).Put(keyRevision, putUint64(rev))
	})
	s.metrics.commitSeconds.Observe(time.Since(began).Seconds())
	s.metrics.batchSize.Observe(float64(len(ops)))
	if err != nil {
		s.metrics.commitErrors.Inc()
		s.log.Error("store commit failed", "ops", len(ops), "err", err)
		for _, o := range ops {
			o.err = fmt.Errorf("store commit: %w", err)
			o.rev, o.kv = 0, KV{}
			close(o.done)
		}
		return
	}
	if rev != start {
		// Feed watchers and publish the revision before any writer hears
		// back, so a writer's next Watch(fromRev) or Revision sees its write.
		s.events.append(events)
		s.revision.Store(rev)
	}
	for _, o := range ops {
		close(o.done)
	}
}
