package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"

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

var _ Interface = (*Store)(nil)

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
		// Reserve address space up front so growing the file rarely remaps
		// (a remap waits for every reader). Costs no memory until touched.
		InitialMmapSize: 256 << 20,
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
	s := &Store{
		db:      db,
		opts:    o,
		log:     o.logger,
		sealer:  sl,
		metrics: newMetrics(),
		events:  newEventLog(o.eventLogSize, rev),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.revision.Store(rev)
	if o.registerer != nil {
		if err := s.metrics.register(o.registerer, s); err != nil {
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
func (s *Store) Get(ctx context.Context, key string) (KV, error) {
	if err := ctx.Err(); err != nil {
		return KV{}, err
	}
	var kv KV
	err := s.view(func(tx *bolt.Tx) error {
		rec := kvBucket(tx).Get([]byte(key))
		if rec == nil {
			return ErrNotFound
		}
		var err error
		kv, err = decodeRecord(key, rec, s.sealer)
		return err
	})
	return kv, err
}

// List returns the keys under prefix in key order, read from one snapshot.
func (s *Store) List(ctx context.Context, prefix string, opts ListOptions) (ListResult, error) {
	if err := ctx.Err(); err != nil {
		return ListResult{}, err
	}
	var res ListResult
	err := s.view(func(tx *bolt.Tx) error {
		res.Revision = int64(beUint64(tx.Bucket(bucketRoot).Bucket(bucketMeta).Get(keyRevision)))
		p := []byte(prefix)
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
		for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if opts.Limit > 0 && len(res.Items) == opts.Limit {
				res.More = true
				// Counting the rest reads only keys, never values.
				for ; k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
					res.Remaining++
				}
				return nil
			}
			if len(res.Items)%64 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			kv, err := decodeRecord(string(k), v, s.sealer)
			if err != nil {
				return err
			}
			res.Items = append(res.Items, kv)
		}
		return nil
	})
	return res, err
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
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
		<-s.done
		s.watchers.Wait()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

func validKey(key string) error {
	if key == "" || len(key) > bolt.MaxKeySize {
		return fmt.Errorf("%w: %q", errInvalidKey, key)
	}
	return nil
}
