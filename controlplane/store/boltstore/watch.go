package boltstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/skep-dev/skep/controlplane/store"
)

// eventLog is a ring of the most recent events, indexed by revision: every
// revision is exactly one event, so event r lives at r % len(buf).
type eventLog struct {
	mu     sync.RWMutex
	buf    []store.Event
	first  int64         // oldest revision held; first > last when empty
	last   int64         // newest revision held (the store's revision)
	notify chan struct{} // closed and replaced on every append

	// latest maps a live key to the revision of its newest event in buf, so
	// the committer can share that value as the next event's PrevKV. Only
	// the committer writes buf and latest, so it reads them without mu.
	latest map[string]int64
}

func newEventLog(size int, rev int64) *eventLog {
	return &eventLog{
		buf:    make([]store.Event, size),
		first:  rev + 1,
		last:   rev,
		notify: make(chan struct{}),
		latest: make(map[string]int64),
	}
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
		if old := slot.KV.Key; slot.Revision != 0 && l.latest[old] == slot.Revision {
			delete(l.latest, old)
		}
		*slot = e
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
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
}

// read copies up to max events from revision next on. ok is false when next
// is no longer in the ring. With nothing to read, it returns the channel that
// closes on the next append.
func (l *eventLog) read(next int64, dst []store.Event) (evs []store.Event, ok bool, notify <-chan struct{}) {
	n := int64(len(l.buf))
	l.mu.RLock()
	defer l.mu.RUnlock()
	if next < l.first {
		return nil, false, nil
	}
	for r := next; r <= l.last && len(dst) < cap(dst); r++ {
		dst = append(dst, l.buf[r%n])
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
