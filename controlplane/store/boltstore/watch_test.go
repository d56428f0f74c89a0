package boltstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skep-dev/skep/controlplane/store"
)

// next receives one event or fails after a generous timeout.
func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return store.Event{}
}

func expectNothing(t *testing.T, ch <-chan store.Event, d time.Duration) {
	t.Helper()
	select {
	case e, ok := <-ch:
		t.Fatalf("unexpected event %+v (open %v)", e, ok)
	case <-time.After(d):
	}
}

func TestWatchReplayLiveAndPrefix(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTest(t, t.TempDir())
	r0 := mustCreate(t, s, "/pods/before", "old")
	r1 := mustCreate(t, s, "/pods/a", "a1")
	mustCreate(t, s, "/svc/x", "x1")
	r3, _ := s.Update(ctx, "/pods/a", []byte("a2"), r1)

	// Replay strictly after r0 (fromRev 0 would mean "from now").
	ch, err := s.Watch(ctx, "/pods/", r0, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := next(t, ch)
	if e.Type != store.EventPut || e.KV.Key != "/pods/a" || string(e.KV.Value) != "a1" || e.Revision != r1 || e.PrevKV != nil {
		t.Fatalf("replayed create = %+v", e)
	}
	e = next(t, ch) // /svc/x is filtered out
	if e.Type != store.EventPut || string(e.KV.Value) != "a2" || e.Revision != r3 || e.KV.CreateRevision != r1 ||
		e.PrevKV == nil || string(e.PrevKV.Value) != "a1" || e.PrevKV.ModRevision != r1 {
		t.Fatalf("replayed update = %+v prev %+v", e, e.PrevKV)
	}

	now, err := s.Watch(ctx, "/pods/", 0, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Live.
	mustCreate(t, s, "/svc/y", "y")
	r5 := mustCreate(t, s, "/pods/b", "b1")
	del, err := s.Delete(ctx, "/pods/a", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []<-chan store.Event{ch, now} {
		e = next(t, w)
		if e.KV.Key != "/pods/b" || e.Revision != r5 {
			t.Fatalf("live create = %+v", e)
		}
		e = next(t, w)
		if e.Type != store.EventDelete || e.KV.Key != "/pods/a" || string(e.KV.Value) != "a2" ||
			e.Revision != del.ModRevision || e.KV.ModRevision != del.ModRevision || e.PrevKV.ModRevision != r3 {
			t.Fatalf("live delete = %+v", e)
		}
	}
	expectNothing(t, now, 50*time.Millisecond)

	// Cancelling the context closes the channel.
	cancel()
	for range ch {
	}
	for range now {
	}
}

func TestWatchExpired(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir, WithEventLogSize(4))
	for i := range 10 {
		mustCreate(t, s, fmt.Sprintf("/k%d", i), "v")
	}
	// The ring holds revisions 7..10: from 6 works, from 5 does not.
	if _, err := s.Watch(ctx, "/", 5, store.WatchOptions{}); !errors.Is(err, store.ErrExpired) {
		t.Fatalf("watch from compacted revision: %v, want store.ErrExpired", err)
	}
	ch, err := s.Watch(ctx, "/", 6, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(7); want <= 10; want++ {
		if e := next(t, ch); e.Revision != want {
			t.Fatalf("replay got revision %d, want %d", e.Revision, want)
		}
	}
	s.Close()

	// After a restart the log is empty: anything before the open revision is gone.
	s2 := openTest(t, dir)
	if _, err := s2.Watch(ctx, "/", 9, store.WatchOptions{}); !errors.Is(err, store.ErrExpired) {
		t.Fatalf("watch from before reopen: %v, want store.ErrExpired", err)
	}
	ch, err = s2.Watch(ctx, "/", 10, store.WatchOptions{})
	if err != nil {
		t.Fatalf("watch from the open revision: %v", err)
	}
	mustCreate(t, s2, "/new", "v")
	if e := next(t, ch); e.Revision != 11 || e.KV.Key != "/new" {
		t.Fatalf("after reopen got %+v", e)
	}
}

// TestWatchLogBoundedByBytes: large values make the log shorter, not
// larger: past the byte bound the oldest events go (a watch from before
// them is ErrExpired) while the newest stay, and the log's accounting never
// exceeds the bound by more than one event.
func TestWatchLogBoundedByBytes(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), WithEventLogSize(1000), WithEventLogBytes(1<<20))
	big := strings.Repeat("x", 300<<10)
	for i := range 10 {
		mustCreate(t, s, fmt.Sprintf("/big%d", i), big)
	}
	// Each update keeps its value and the one before it: updates count twice.
	for i := range 3 {
		if _, err := s.Update(ctx, fmt.Sprintf("/big%d", 9-i), []byte(big+"y"), 0); err != nil {
			t.Fatal(err)
		}
	}
	s.events.mu.RLock()
	first, last, bytes := s.events.first, s.events.last, s.events.bytes
	s.events.mu.RUnlock()
	if bytes > 1<<20+2*int64(len(big))+2 || last != 13 || first < 11 {
		t.Fatalf("log holds revisions %d..%d and %d bytes; want about 1 MiB of the newest", first, last, bytes)
	}
	if _, err := s.Watch(ctx, "/", 1, store.WatchOptions{}); !errors.Is(err, store.ErrExpired) {
		t.Fatalf("watch from an evicted revision: %v, want ErrExpired", err)
	}
	ch, err := s.Watch(ctx, "/", first-1, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for want := first; want <= last; want++ {
		if e := next(t, ch); e.Revision != want {
			t.Fatalf("replay got revision %d, want %d", e.Revision, want)
		}
	}
	// Deletes keep one copy (the deleted value is the previous one).
	for i := range 3 {
		if _, err := s.Delete(ctx, fmt.Sprintf("/big%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	s.events.mu.RLock()
	defer s.events.mu.RUnlock()
	if s.events.bytes > 1<<20+2*int64(len(big))+2 || s.events.last != 16 {
		t.Fatalf("after deletes: %d bytes up to revision %d", s.events.bytes, s.events.last)
	}
}

func TestWatchProgressNotify(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTest(t, t.TempDir(), WithProgressInterval(50*time.Millisecond))
	mustCreate(t, s, "/a/1", "v")
	plain, _ := s.Watch(ctx, "/a/", 0, store.WatchOptions{})
	ch, err := s.Watch(ctx, "/a/", 0, store.WatchOptions{ProgressNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	e := next(t, ch)
	if e.Type != store.EventProgress || e.Revision != 1 {
		t.Fatalf("first progress = %+v", e)
	}
	// Writes elsewhere advance the bookmark without events under the prefix.
	mustCreate(t, s, "/b/1", "v")
	mustCreate(t, s, "/b/2", "v")
	for {
		e = next(t, ch)
		if e.Type != store.EventProgress {
			t.Fatalf("got %+v for a write outside the prefix", e)
		}
		if e.Revision == 3 {
			break
		}
	}
	// In-band: a put then a bookmark at or after its revision, never before.
	r := mustCreate(t, s, "/a/2", "v")
	for e = next(t, ch); e.Type == store.EventProgress && e.Revision < r; e = next(t, ch) {
		// bookmarks sent while the write was committing: older, so fine
	}
	if e.Type != store.EventPut || e.Revision != r {
		t.Fatalf("got %+v, want the put at %d", e, r)
	}
	e = next(t, ch)
	if e.Type != store.EventProgress || e.Revision < r {
		t.Fatalf("bookmark after put = %+v", e)
	}
	// Without ProgressNotify no bookmarks.
	if e := next(t, plain); e.Type != store.EventPut || e.Revision != r {
		t.Fatalf("plain watcher got %+v", e)
	}
	expectNothing(t, plain, 150*time.Millisecond)
}

// A watcher that does not read is closed once the log has moved past it;
// the committer and other watchers are never held up.
func TestSlowWatcherClosed(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), WithEventLogSize(64), WithWatchBuffer(8))
	slow, err := s.Watch(ctx, "/", 0, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(ctx, "/", 0, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		n := 0
		for range fast {
			n++
			if n == 200 {
				break
			}
		}
		got <- n
	}()
	for i := range 200 {
		mustCreate(t, s, fmt.Sprintf("/k%03d", i), "v")
	}
	if n := <-got; n != 200 {
		t.Fatalf("fast watcher got %d events", n)
	}
	// The slow one delivers what it had buffered, in order, then closes.
	var want int64 = 1
	for e := range slow {
		if e.Revision != want {
			t.Fatalf("slow watcher: revision %d, want %d (gap)", e.Revision, want)
		}
		want++
	}
	if want-1 >= 200 {
		t.Fatalf("slow watcher received all %d events; expected it to be closed", want-1)
	}
}

// A watch from a revision not yet written starts there; its bookmarks never
// claim a revision the store has not reached.
func TestWatchFromFutureRevision(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTest(t, t.TempDir(), WithProgressInterval(30*time.Millisecond))
	mustCreate(t, s, "/a", "v") // revision 1
	ch, err := s.Watch(ctx, "/", 2, store.WatchOptions{ProgressNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	e := next(t, ch)
	if e.Type != store.EventProgress || e.Revision != 1 {
		t.Fatalf("bookmark = %+v, want progress at 1", e)
	}
	mustCreate(t, s, "/b", "v") // 2: not after fromRev
	mustCreate(t, s, "/c", "v") // 3
	for {
		e = next(t, ch)
		if e.Type == store.EventPut {
			break
		}
	}
	if e.KV.Key != "/c" || e.Revision != 3 {
		t.Fatalf("first event = %+v, want /c at 3", e)
	}
}

// A watcher that stopped reading still ends when its context is cancelled
// (its goroutine must not stay blocked on the full channel).
func TestBlockedWatcherEndsOnCancel(t *testing.T) {
	s := openTest(t, t.TempDir(), WithWatchBuffer(2))
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, "/", 0, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustCreate(t, s, fmt.Sprintf("/k%d", i), "v")
	}
	cancel()
	n := 0
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				if n > 3 { // two buffered plus at most one in hand
					t.Fatalf("received %d events after cancel", n)
				}
				return
			}
			n++
		case <-deadline:
			t.Fatal("watch channel not closed after cancel")
		}
	}
}

// PrevKV is right whether the previous value comes from the event log or,
// once the log has moved on, from the file (decrypted for secrets).
func TestWatchPrevKV(t *testing.T) {
	for _, logSize := range []int{1000, 2} {
		t.Run(fmt.Sprintf("log=%d", logSize), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dir := t.TempDir()
			s := openTest(t, dir, WithEventLogSize(logSize), WithWatchBuffer(100),
				WithEncryptedPrefixes("/s/"), WithKeyFile(dir+"/k"))
			ch, err := s.Watch(ctx, "/", 0, store.WatchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			type step struct {
				do   func() error
				prev string // "" means nil PrevKV
			}
			put := func(k, v string) func() error {
				return func() error { _, err := s.Update(ctx, k, []byte(v), 0); return err }
			}
			create := func(k, v string) func() error {
				return func() error { _, err := s.Create(ctx, k, []byte(v)); return err }
			}
			del := func(k string) func() error {
				return func() error { _, err := s.Delete(ctx, k, 0); return err }
			}
			steps := []step{
				{create("/p/a", "a1"), ""},
				{create("/s/x", "x1"), ""},
				{put("/p/a", "a2"), "a1"},
				{put("/s/x", "x2"), "x1"},
				{create("/p/b", "b1"), ""},
				{put("/p/a", "a3"), "a2"},
				{del("/p/a"), "a3"},
				{create("/p/a", "new"), ""}, // a new life: no PrevKV from the old one
				{put("/p/a", "new2"), "new"},
				{del("/s/x"), "x2"},
			}
			for i, st := range steps {
				if err := st.do(); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				e := next(t, ch)
				got := ""
				if e.PrevKV != nil {
					got = string(e.PrevKV.Value)
					if e.PrevKV.Key != e.KV.Key || e.PrevKV.ModRevision >= e.Revision || e.PrevKV.CreateRevision != e.KV.CreateRevision {
						t.Fatalf("step %d: PrevKV %+v for %+v", i, *e.PrevKV, e.KV)
					}
				}
				if got != st.prev {
					t.Fatalf("step %d (%s rev %d): PrevKV value %q, want %q", i, e.KV.Key, e.Revision, got, st.prev)
				}
			}
		})
	}
}
