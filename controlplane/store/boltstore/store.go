package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skep-dev/skep/controlplane/store"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketRoot     = []byte("v1")
	bucketMeta     = []byte("meta")
	bucketKV       = []byte("kv")
	keyRevision    = []byte("revision")
	keyKeyCheck    = []byte("keycheck")
	errInvalidKey  = errors.New("store: invalid key")
	maxValueLength = bolt.MaxValueSize - recordHeaderLen - 64
)

// Store is the bbolt implementation of Interface.
type Store struct {
	db     *bolt.DB
	opts   options
	log    *slog.Logger
	sealer *sealer // nil when nothing is encrypted

	metrics *metrics

	revision atomic.Int64 // last committed revision, published after the event log
	events   *eventLog

	// wal makes each group durable; overlay holds, per key, the latest write
	// that is durable in the WAL but not yet checkpointed into bbolt (rec
	// nil: deleted). The committer is the only writer of both; readers take
	// ovMu, under which overlay, applied and revision change together.
	wal            *wal
	ovMu           sync.RWMutex
	overlay        map[string]walEntry
	applied        int64 // the revision of the bbolt file
	lastCheckpoint time.Time
	idle           *time.Timer // checkpoints when writes stop before one was due
	idleArmed      bool

	mu      sync.Mutex // guards pending and closed
	pending []*op
	closed  bool
	wake    chan struct{} // one token: pending has work
	closing chan struct{} // closed by Close
	done    chan struct{} // closed when the committer has exited

	watchers  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ store.Interface = (*Store)(nil)

// Open opens (or creates) the store in the bbolt file at path. It reads only
// the revision, so it takes the same time with ten or a million objects.
func Open(path string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	var sl *sealer
	if len(o.encrypted) > 0 {
		keyFile := o.keyFile
		if keyFile == "" {
			keyFile = filepath.Join(filepath.Dir(path), "secrets.key")
		}
		key, err := loadOrCreateKey(keyFile, o.logger)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		if sl, err = newSealer(o.encrypted, key); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        o.openTimeout,
		NoFreelistSync: o.noFreelistSync,
		FreelistType:   bolt.FreelistMapType,
		// Reserve address space up front, as etcd does (10 GiB), so a
		// growing file is not remapped: a remap waits for every open read
		// transaction, and a list streams out of one (Range). A read-only
		// file mapping costs no memory until touched.
		InitialMmapSize: 10 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	var rev int64
	err = db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		meta, err := root.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := root.CreateBucketIfNotExists(bucketKV); err != nil {
			return err
		}
		if v := meta.Get(keyRevision); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("corrupt revision (%d bytes)", len(v))
			}
			rev = int64(beUint64(v))
		}
		return checkKey(meta, sl)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: init buckets: %w", path, err)
	}
	w, rev, err := recoverWAL(db, path+".wal", o.walSize, rev)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		db:             db,
		opts:           o,
		log:            o.logger,
		sealer:         sl,
		metrics:        newMetrics(),
		events:         newEventLog(o.eventLogSize, o.eventLogBytes, rev),
		wal:            w,
		overlay:        map[string]walEntry{},
		applied:        rev,
		lastCheckpoint: time.Now(),
		idle:           time.NewTimer(time.Hour),
		wake:           make(chan struct{}, 1),
		closing:        make(chan struct{}),
		done:           make(chan struct{}),
	}
	s.idle.Stop()
	s.revision.Store(rev)
	if o.registerer != nil {
		if err := s.metrics.register(o.registerer, s); err != nil {
			w.close()
			db.Close()
			return nil, err
		}
	}
	go s.commitLoop()
	return s, nil
}

// Revision is the last committed revision.
func (s *Store) Revision() int64 { return s.revision.Load() }

// Get returns the current value of key.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := ctx.Err(); err != nil {
		return store.KV{}, err
	}
	s.ovMu.RLock()
	e, ok := s.overlay[key]
	s.ovMu.RUnlock()
	if ok { // written since the last checkpoint (or deleted: rec nil)
		if e.rec == nil {
			return store.KV{}, store.ErrNotFound
		}
		return decodeRecord(key, e.rec, s.sealer)
	}
	// Not in the overlay now, so bbolt from now on holds the key's latest
	// write: the overlay drops a key only after a checkpoint committed it.
	var kv store.KV
	err := s.view(func(tx *bolt.Tx) error {
		rec := kvBucket(tx).Get([]byte(key))
		if rec == nil {
			return store.ErrNotFound
		}
		var err error
		kv, err = decodeRecord(key, rec, s.sealer)
		return err
	})
	return kv, err
}

// List returns the keys under prefix in key order, read from one snapshot:
// the bbolt file at its last checkpoint with the later writes laid over it.
func (s *Store) List(ctx context.Context, prefix string, opts store.ListOptions) (store.ListResult, error) {
	var items []store.KV
	res, err := s.Range(ctx, prefix, opts, nil, func(kv store.KV) error {
		items = append(items, kv)
		return nil
	})
	res.Items = items
	return res, err
}

// Range reads as List does but hands each item to fn as it goes, inside the
// snapshot's read transaction, so a list of any size holds one value at a
// time. The snapshot is kept open while fn runs: long runs delay the reuse
// of freed pages (the file grows meanwhile), never writes, which go to the
// log; the memory map is made large up front so a growing file is not
// remapped under an open snapshot (see Open).
func (s *Store) Range(ctx context.Context, prefix string, opts store.ListOptions, begin func(rev int64) error, fn func(store.KV) error) (store.ListResult, error) {
	if err := ctx.Err(); err != nil {
		return store.ListResult{}, err
	}
	after := opts.StartAfter > prefix // otherwise start at the prefix
	for {
		var res store.ListResult
		s.ovMu.RLock()
		applied := s.applied
		res.Revision = s.revision.Load()
		var over []walEntry
		for k, e := range s.overlay {
			if strings.HasPrefix(k, prefix) && (!after || k > opts.StartAfter) {
				over = append(over, e)
			}
		}
		s.ovMu.RUnlock()
		slices.SortFunc(over, func(a, b walEntry) int { return strings.Compare(a.key, b.key) })
		if testHookListCopied != nil {
			testHookListCopied()
		}
		stale := false
		err := s.view(func(tx *bolt.Tx) error {
			// A checkpoint that committed after the overlay was copied
			// makes the pair inconsistent: read again.
			if int64(beUint64(tx.Bucket(bucketRoot).Bucket(bucketMeta).Get(keyRevision))) != applied {
				stale = true
				return nil
			}
			if begin != nil {
				if err := begin(res.Revision); err != nil {
					return err
				}
			}
			return s.rangeMerged(ctx, tx, prefix, opts, over, &res, fn)
		})
		if stale {
			runtime.Gosched()
			continue
		}
		return res, err
	}
}

// testHookListCopied, when set by a test, runs between copying the overlay
// and opening the bbolt snapshot, to widen that window.
var testHookListCopied func()

// rangeMerged walks bbolt's keys under prefix and the overlay's (sorted)
// together; an overlay entry replaces bbolt's value of its key or, when a
// delete, hides it.
func (s *Store) rangeMerged(ctx context.Context, tx *bolt.Tx, prefix string, opts store.ListOptions, over []walEntry, res *store.ListResult, fn func(store.KV) error) error {
	p := []byte(prefix)
	n := 0 // items handed to fn
	c := kvBucket(tx).Cursor()
	var k, v []byte
	if opts.StartAfter > prefix {
		after := []byte(opts.StartAfter)
		k, v = c.Seek(after)
		if bytes.Equal(k, after) {
			k, v = c.Next()
		}
	} else {
		k, v = c.Seek(p)
	}
	for {
		inBolt := k != nil && bytes.HasPrefix(k, p)
		if !inBolt && len(over) == 0 {
			return nil
		}
		var key string
		var rec []byte
		if len(over) > 0 && (!inBolt || over[0].key <= string(k)) {
			e := over[0]
			over = over[1:]
			if inBolt && e.key == string(k) {
				k, v = c.Next()
			}
			if e.rec == nil {
				continue // deleted since the checkpoint
			}
			key, rec = e.key, e.rec
		} else {
			key, rec = string(k), v
			k, v = c.Next()
		}
		if opts.Limit > 0 && n == opts.Limit {
			// Counting the rest reads only keys, never values.
			res.More = true
			res.Remaining++
			continue
		}
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		kv, err := decodeRecord(key, rec, s.sealer)
		if err != nil {
			return err
		}
		n++
		if err := fn(kv); err != nil {
			return err
		}
	}
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

func kvBucket(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketRoot).Bucket(bucketKV) }

// Close stops the committer (queued writes get ErrClosed), ends every watch
// (their channels close) and closes the file.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		<-s.done // the committer's last checkpoint sets closeErr
		s.watchers.Wait()
		s.closeErr = errors.Join(s.closeErr, s.wal.close(), s.db.Close())
	})
	return s.closeErr
}

func validKey(key string) error {
	if key == "" || len(key) > bolt.MaxKeySize {
		return fmt.Errorf("%w: %q", errInvalidKey, key)
	}
	return nil
}

// recoverWAL opens the write-ahead log next to the bbolt file and applies,
// in one bbolt transaction, the writes it holds beyond the file's revision
// (those acknowledged after the last checkpoint before a crash). It returns
// the log, emptied, and the store's revision.
func recoverWAL(db *bolt.DB, path string, size int64, rev int64) (*wal, int64, error) {
	w, entries, err := openWAL(path, size)
	if err != nil {
		return nil, 0, err
	}
	i, _ := slices.BinarySearchFunc(entries, rev+1, func(e walEntry, r int64) int { return int(e.rev - r) })
	entries = entries[i:]
	if len(entries) > 0 && entries[0].rev != rev+1 {
		w.close()
		return nil, 0, fmt.Errorf("wal %s starts at revision %d but the database is at %d: revisions in between are missing", path, entries[0].rev, rev)
	}
	if len(entries) > 0 {
		last := entries[len(entries)-1].rev
		err := db.Update(func(tx *bolt.Tx) error {
			b := kvBucket(tx)
			for _, e := range entries {
				if e.rec == nil {
					if err := b.Delete([]byte(e.key)); err != nil {
						return err
					}
				} else if err := b.Put([]byte(e.key), e.rec); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketRoot).Bucket(bucketMeta).Put(keyRevision, putUint64(last))
		})
		if err != nil {
			w.close()
			return nil, 0, fmt.Errorf("replay wal: %w", err)
		}
		rev = last
	}
	w.reset()
	return w, rev, nil
}
