package apiserver

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/skep-dev/skep/controlplane/store"
)

// memStore is a small in-memory store.Interface for the API server's unit
// tests: one global revision, compare-and-swap, and a bounded event log that
// serves watches from any revision it still holds.
type memStore struct {
	mu       sync.Mutex
	rev      int64
	kvs      map[string]store.KV
	log      []store.Event // the last logSize events
	logSize  int
	watchers map[*memWatcher]struct{}
	closed   bool
}

type memWatcher struct {
	prefix string
	ch     chan store.Event
}

func newMemStore() *memStore {
	return &memStore{kvs: map[string]store.KV{}, logSize: 1000, watchers: map[*memWatcher]struct{}{}}
}

func (m *memStore) Get(_ context.Context, key string) (store.KV, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kv, ok := m.kvs[key]
	if !ok {
		return store.KV{}, store.ErrNotFound
	}
	return kv, nil
}

func (m *memStore) List(_ context.Context, prefix string, opts store.ListOptions) (store.ListResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for k := range m.kvs {
		if strings.HasPrefix(k, prefix) && k > opts.StartAfter {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	res := store.ListResult{Revision: m.rev}
	for i, k := range keys {
		if opts.Limit > 0 && i == opts.Limit {
			res.More = true
			res.Remaining = int64(len(keys) - i)
			break
		}
		res.Items = append(res.Items, m.kvs[k])
	}
	return res, nil
}

func (m *memStore) Range(ctx context.Context, prefix string, opts store.ListOptions, begin func(int64) error, each func(store.KV) error) (store.ListResult, error) {
	lr, err := m.List(ctx, prefix, opts)
	if err != nil {
		return lr, err
	}
	if begin != nil {
		if err := begin(lr.Revision); err != nil {
			return lr, err
		}
	}
	items := lr.Items
	lr.Items = nil
	for _, kv := range items {
		if err := each(kv); err != nil {
			return lr, err
		}
	}
	return lr, nil
}

// emit records an event and fans it out; callers hold mu.
func (m *memStore) emit(ev store.Event) {
	m.log = append(m.log, ev)
	if len(m.log) > m.logSize {
		m.log = m.log[len(m.log)-m.logSize:]
	}
	for w := range m.watchers {
		if strings.HasPrefix(ev.KV.Key, w.prefix) {
			select {
			case w.ch <- ev:
			default: // too slow: drop the watcher, it re-watches
				close(w.ch)
				delete(m.watchers, w)
			}
		}
	}
}

func (m *memStore) Create(_ context.Context, key string, value []byte) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, store.ErrClosed
	}
	if _, ok := m.kvs[key]; ok {
		return 0, store.ErrExists
	}
	m.rev++
	kv := store.KV{Key: key, Value: append([]byte(nil), value...), CreateRevision: m.rev, ModRevision: m.rev}
	m.kvs[key] = kv
	m.emit(store.Event{Type: store.EventPut, KV: kv, Revision: m.rev})
	return m.rev, nil
}

func (m *memStore) Update(_ context.Context, key string, value []byte, expectRev int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.kvs[key]
	if !ok {
		return 0, store.ErrNotFound
	}
	if expectRev != 0 && old.ModRevision != expectRev {
		return 0, store.ErrConflict
	}
	m.rev++
	kv := store.KV{Key: key, Value: append([]byte(nil), value...), CreateRevision: old.CreateRevision, ModRevision: m.rev}
	m.kvs[key] = kv
	m.emit(store.Event{Type: store.EventPut, KV: kv, PrevKV: &old, Revision: m.rev})
	return m.rev, nil
}

func (m *memStore) Delete(_ context.Context, key string, expectRev int64) (store.KV, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.kvs[key]
	if !ok {
		return store.KV{}, store.ErrNotFound
	}
	if expectRev != 0 && old.ModRevision != expectRev {
		return store.KV{}, store.ErrConflict
	}
	m.rev++
	delete(m.kvs, key)
	kv := old
	kv.ModRevision = m.rev
	m.emit(store.Event{Type: store.EventDelete, KV: kv, PrevKV: &old, Revision: m.rev})
	return kv, nil
}

func (m *memStore) Watch(ctx context.Context, prefix string, fromRev int64, _ store.WatchOptions) (<-chan store.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := &memWatcher{prefix: prefix, ch: make(chan store.Event, 10000)}
	if fromRev > 0 && fromRev < m.rev {
		if len(m.log) == 0 || m.log[0].Revision > fromRev+1 {
			return nil, store.ErrExpired
		}
		for _, ev := range m.log {
			if ev.Revision > fromRev && strings.HasPrefix(ev.KV.Key, prefix) {
				w.ch <- ev
			}
		}
	}
	m.watchers[w] = struct{}{}
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.watchers[w]; ok {
			delete(m.watchers, w)
			close(w.ch)
		}
	}()
	return w.ch, nil
}

func (m *memStore) Revision() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// compact forgets the event log so older watches get ErrExpired.
func (m *memStore) compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = nil
}

func (m *memStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for w := range m.watchers {
		close(w.ch)
		delete(m.watchers, w)
	}
	return nil
}
