package boltstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/skep-dev/skep/controlplane/store"
)

// eventLog is a ring of the most recent events, indexed by revision: every
// revision is exactly one event, so event r lives at r % len(buf). It holds
// at most len(buf) events and about maxBytes of their values: large
// objects fall out sooner (a watch from before them gets ErrExpired, 410),
// so 10,000 deletes of 1 MB objects cannot pin 20 GB.
type eventLog struct {
	mu       sync.RWMutex
	buf      []store.Event
	first    int64         // oldest revision held; first > last when empty
	last     int64         // newest revision held (the store's revision)
	notify   chan struct{} // closed and replaced on every append
	bytes    int64         // value bytes the held events keep alive
	maxBytes int64

	// latest maps a live key to the revision of its newest event in buf, so
	// the committer can share that value as the next event's PrevKV. Only
	// the committer writes buf and latest, so it reads them without mu.
	latest map[string]int64
}

func newEventLog(size int, maxBytes int64, rev int64) *eventLog {
	return &eventLog{
		buf:      make([]store.Event, size),
		first:    rev + 1,
		last:     rev,
		notify:   make(chan struct{}),
		latest:   make(map[string]int64),
		maxBytes: maxBytes,
	}
}

// eventBytes is what an event keeps alive: its value, and its PrevKV's
// unless that is the same bytes (a delete). A PrevKV shared with an older
// event is counted twice, which only makes the bound stricter.
func eventBytes(e *store.Event) int64 {
	n := int64(len(e.KV.Value))
	if p := e.PrevKV; p != nil && len(p.Value) > 0 && (len(e.KV.Value) == 0 || &p.Value[0] != &e.KV.Value[0]) {
		n += int64(len(p.Value))
	}
	return n
}

// drop removes the event in slot from the log's accounting. mu held.
func (l *eventLog) drop(slot *store.Event) {
	if slot.Revision == 0 {
		return
	}
	if old := slot.KV.Key; l.latest[old] == slot.Revision {
		delete(l.latest, old)
	}
	l.bytes -= eventBytes(slot)
	*slot = store.Event{}
}

// latestValue returns key's value at modRev if the log still holds it.
// Committer only.
func (l *eventLog) latestValue(key string, modRev int64) ([]byte, bool) {
	rev, ok := l.latest[key]
	if !ok || rev != modRev {
		return nil, false
	}
	e := &l.buf[rev%int64(len(l.buf))]
	if e.Revision != rev || e.Type != store.EventPut || e.KV.Key != key {
		return nil, false
	}
	return e.KV.Value, true
}

// append adds events of consecutive revisions. Committer only.
func (l *eventLog) append(evs []store.Event) {
	n := int64(len(l.buf))
	l.mu.Lock()
	for _, e := range evs {
		slot := &l.buf[e.Revision%n]
		l.drop(slot)
		*slot = e
		l.bytes += eventBytes(slot)
		l.last = e.Revision
		if e.Type == store.EventDelete {
			delete(l.latest, e.KV.Key)
		} else {
			l.latest[e.KV.Key] = e.Revision
		}
	}
	if l.last-l.first+1 > n {
		l.first = l.last - n + 1
	}
	// Past the byte bound the oldest events go, the newest always stays.
	for l.bytes > l.maxBytes && l.first < l.last {
		l.drop(&l.buf[l.first%n])
		l.first++
	}
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
}

// readBytes bounds the values one read takes out of the log, so a lagging
// watcher holds a few large events rather than a batch of them.
const readBytes = 8 << 20

// read copies up to cap(dst) events, and about readBytes of values, from
// revision next on. ok is false when next is no longer in the ring. With
// nothing to read, it returns the channel that closes on the next append.
func (l *eventLog) read(next int64, dst []store.Event) (evs []store.Event, ok bool, notify <-chan struct{}) {
	n := int64(len(l.buf))
	l.mu.RLock()
	defer l.mu.RUnlock()
	if next < l.first {
		return nil, false, nil
	}
	var size int64
	for r := next; r <= l.last && len(dst) < cap(dst) && size < readBytes; r++ {
		dst = append(dst, l.buf[r%n])
		size += eventBytes(&dst[len(dst)-1])
	}
	return dst, true, l.notify
}

// Watch streams changes under prefix after fromRev; see Interface.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64, opts store.WatchOptions) (<-chan store.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.events.mu.RLock()
	next := fromRev + 1
	if fromRev == 0 {
		next = s.events.last + 1
	}
	expired := next < s.events.first
	s.events.mu.RUnlock()
	if expired {
		return nil, store.ErrExpired
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, store.ErrClosed
	}
	s.watchers.Add(1)
	s.mu.Unlock()
	out := make(chan store.Event, s.opts.watchBuffer)
	w := &watcher{s: s, ctx: ctx, prefix: prefix, next: next, out: out}
	if opts.ProgressNotify {
		w.progress = s.opts.progressInterval
	}
	go w.run()
	return out, nil
}

// watcher pulls events from the log at its own pace; only it can block on
// its channel, never the committer.
type watcher struct {
	s        *Store
	ctx      context.Context
	prefix   string
	next     int64 // the next revision to look at
	out      chan store.Event
	progress time.Duration // 0: no progress events
}

func (w *watcher) run() {
	defer w.s.watchers.Done()
	defer close(w.out)
	w.s.metrics.watchers.Inc()
	defer w.s.metrics.watchers.Dec()
	var timer *time.Timer
	var timerC <-chan time.Time
	if w.progress > 0 {
		timer = time.NewTimer(w.progress)
		defer timer.Stop()
		timerC = timer.C
	}
	lastSent := time.Now()
	buf := make([]store.Event, 0, 256)
	for {
		evs, ok, notify := w.s.events.read(w.next, buf[:0])
		if !ok {
			w.s.metrics.watchersDropped.Inc()
			w.s.log.Debug("watcher fell behind the event log; closing", "prefix", w.prefix, "next", w.next)
			return
		}
		for i := range evs {
			e := evs[i]
			evs[i] = store.Event{} // drop references for the GC
			w.next = e.Revision + 1
			if !strings.HasPrefix(e.KV.Key, w.prefix) {
				continue
			}
			if !w.send(e) {
				return
			}
			lastSent = time.Now()
		}
		if len(evs) > 0 {
			continue
		}
		// Caught up with the log: wait for an append, a bookmark, or the end.
		if timer != nil {
			timer.Reset(max(w.progress-time.Since(lastSent), 0))
		}
		select {
		case <-notify:
		case <-timerC:
			// Every change up to next-1 under the prefix has been sent.
			// (A watch from a future revision reports the store's.)
			if !w.send(store.Event{Type: store.EventProgress, Revision: min(w.next-1, w.s.Revision())}) {
				return
			}
			lastSent = time.Now()
		case <-w.ctx.Done():
			return
		case <-w.s.closing:
			return
		}
	}
}

func (w *watcher) send(e store.Event) bool {
	// A select with both cases ready picks at random: check the end first
	// so a cancelled watch stops promptly.
	if w.ctx.Err() != nil {
		return false
	}
	select {
	case w.out <- e:
		return true
	case <-w.ctx.Done():
		return false
	case <-w.s.closing:
		return false
	}
}
