package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/skep-dev/skep/controlplane/store"
	"github.com/skep-dev/skep/internal/testutil"
)

func openTest(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(filepath.Join(dir, "state.db"), opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustCreate(t testing.TB, s *Store, key, value string) int64 {
	t.Helper()
	rev, err := s.Create(context.Background(), key, []byte(value))
	if err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
	return rev
}

func TestCreateGetExists(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	if s.Revision() != 0 {
		t.Fatalf("fresh store revision = %d, want 0", s.Revision())
	}
	if _, err := s.Get(ctx, "/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: %v, want store.ErrNotFound", err)
	}
	rev := mustCreate(t, s, "/a", "one")
	if rev != 1 || s.Revision() != 1 {
		t.Fatalf("create rev = %d, Revision() = %d, want 1, 1", rev, s.Revision())
	}
	kv, err := s.Get(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "one" || kv.CreateRevision != 1 || kv.ModRevision != 1 || kv.Key != "/a" {
		t.Fatalf("get = %+v", kv)
	}
	if _, err := s.Create(ctx, "/a", []byte("two")); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want store.ErrExists", err)
	}
	if s.Revision() != 1 {
		t.Fatalf("a failed create bumped the revision to %d", s.Revision())
	}
	if _, err := s.Create(ctx, "", []byte("x")); err == nil {
		t.Fatal("create with empty key succeeded")
	}
}

func TestUpdateDeleteCAS(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	r1 := mustCreate(t, s, "/k", "v1")
	mustCreate(t, s, "/other", "x") // bumps the global revision only
	if _, err := s.Update(ctx, "/missing", []byte("v"), 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	if _, err := s.Update(ctx, "/k", []byte("v2"), r1+1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update with stale rev: %v, want store.ErrConflict", err)
	}
	r3, err := s.Update(ctx, "/k", []byte("v2"), r1)
	if err != nil {
		t.Fatalf("update with current rev: %v", err)
	}
	if r3 != 3 {
		t.Fatalf("update rev = %d, want 3", r3)
	}
	kv, _ := s.Get(ctx, "/k")
	if string(kv.Value) != "v2" || kv.CreateRevision != r1 || kv.ModRevision != r3 {
		t.Fatalf("after update: %+v", kv)
	}
	if _, err := s.Update(ctx, "/k", []byte("v3"), r1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update with the old rev: %v, want store.ErrConflict", err)
	}
	r4, err := s.Update(ctx, "/k", []byte("v3"), 0)
	if err != nil || r4 != 4 {
		t.Fatalf("unconditional update: rev %d err %v", r4, err)
	}
	if _, err := s.Delete(ctx, "/k", r3); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete with stale rev: %v", err)
	}
	del, err := s.Delete(ctx, "/k", r4)
	if err != nil {
		t.Fatal(err)
	}
	if string(del.Value) != "v3" || del.ModRevision != 5 || del.CreateRevision != r1 {
		t.Fatalf("deleted kv = %+v", del)
	}
	if _, err := s.Get(ctx, "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := s.Delete(ctx, "/k", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	// Re-creating starts a new life with a new CreateRevision.
	r6 := mustCreate(t, s, "/k", "again")
	kv, _ = s.Get(ctx, "/k")
	if kv.CreateRevision != r6 || r6 != 6 {
		t.Fatalf("recreated: %+v", kv)
	}
}

func TestRevisionPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	var last int64
	for i := range 5 {
		rev := mustCreate(t, s, fmt.Sprintf("/k%d", i), "v")
		if rev <= last {
			t.Fatalf("revision went from %d to %d", last, rev)
		}
		last = rev
	}
	if _, err := s.Delete(ctx, "/k0", 0); err != nil {
		t.Fatal(err)
	}
	last++
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/late", nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("create after close: %v, want store.ErrClosed", err)
	}
	if _, err := s.Get(ctx, "/k1"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("get after close: %v, want store.ErrClosed", err)
	}

	s2 := openTest(t, dir)
	if s2.Revision() != last {
		t.Fatalf("reopened revision = %d, want %d", s2.Revision(), last)
	}
	rev := mustCreate(t, s2, "/after", "v")
	if rev != last+1 {
		t.Fatalf("first write after reopen got %d, want %d", rev, last+1)
	}
	kv, err := s2.Get(ctx, "/k3")
	if err != nil || kv.ModRevision != 4 {
		t.Fatalf("reopened /k3 = %+v, %v", kv, err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	for _, k := range []string{"/pods/b", "/pods/a", "/pods/c", "/podsx/z", "/pod", "/svc/a", "/pods/d"} {
		mustCreate(t, s, k, "v"+k)
	}
	res, err := s.List(ctx, "/pods/", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(res.Items); got != "/pods/a /pods/b /pods/c /pods/d" {
		t.Fatalf("list = %s", got)
	}
	if res.Revision != 7 || res.More || res.Remaining != 0 {
		t.Fatalf("list meta = rev %d more %v remaining %d", res.Revision, res.More, res.Remaining)
	}
	if string(res.Items[0].Value) != "v/pods/a" {
		t.Fatalf("value = %q", res.Items[0].Value)
	}
	// Paging with Limit and StartAfter.
	var pages []string
	after := ""
	for {
		res, err := s.List(ctx, "/pods/", store.ListOptions{StartAfter: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, fmt.Sprintf("%s|%v|%d", keys(res.Items), res.More, res.Remaining))
		if !res.More {
			break
		}
		after = res.Items[len(res.Items)-1].Key
	}
	want := []string{"/pods/a /pods/b /pods/c|true|1", "/pods/d|false|0"}
	if fmt.Sprint(pages) != fmt.Sprint(want) {
		t.Fatalf("pages = %q, want %q", pages, want)
	}
	// StartAfter a key that does not exist, and an empty prefix.
	res, _ = s.List(ctx, "/pods/", store.ListOptions{StartAfter: "/pods/bb"})
	if got := keys(res.Items); got != "/pods/c /pods/d" {
		t.Fatalf("list after /pods/bb = %s", got)
	}
	res, _ = s.List(ctx, "", store.ListOptions{Limit: 2})
	if got := keys(res.Items); got != "/pod /pods/a" || res.Remaining != 5 || !res.More {
		t.Fatalf("list all = %s more %v remaining %d", got, res.More, res.Remaining)
	}
	res, _ = s.List(ctx, "/nothing/", store.ListOptions{})
	if len(res.Items) != 0 || res.More {
		t.Fatalf("empty prefix listed %s", keys(res.Items))
	}
}

func keys(kvs []store.KV) string {
	var b bytes.Buffer
	for i, kv := range kvs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv.Key)
	}
	return b.String()
}

// Concurrent writers: every write gets a distinct revision, the revisions
// are exactly 1..N, and everything is there after a reopen.
func TestConcurrentWritersDistinctRevisions(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	const writers, each = 16, 40
	revs := make(chan int64, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				rev, err := s.Create(context.Background(), fmt.Sprintf("/c/%02d/%03d", w, i), []byte("v"))
				if err != nil {
					t.Errorf("create: %v", err)
					return
				}
				revs <- rev
			}
		}()
	}
	wg.Wait()
	close(revs)
	seen := map[int64]bool{}
	for r := range revs {
		if seen[r] {
			t.Fatalf("revision %d given twice", r)
		}
		seen[r] = true
	}
	for r := int64(1); r <= writers*each; r++ {
		if !seen[r] {
			t.Fatalf("revision %d missing", r)
		}
	}
	s.Close()
	s2 := openTest(t, dir)
	res, err := s2.List(context.Background(), "/c/", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != writers*each || s2.Revision() != writers*each {
		t.Fatalf("after reopen: %d items, revision %d", len(res.Items), s2.Revision())
	}
}

// Conflicting writers in one group: exactly one CAS per round wins, losers
// get ErrConflict, and no one fails because of another's precondition.
func TestConcurrentCASOneWinner(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	rev := mustCreate(t, s, "/counter", "0")
	const n = 16
	var wg sync.WaitGroup
	results := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Update(ctx, "/counter", []byte(fmt.Sprint(i)), rev)
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	wins := 0
	for err := range results {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, store.ErrConflict):
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d CAS updates won from the same revision, want 1", wins)
	}
	if s.Revision() != rev+1 {
		t.Fatalf("revision = %d, want %d", s.Revision(), rev+1)
	}
}

// The committer applies a group in queue order against the state including
// earlier ops of the same group.
func TestGroupSeesEarlierOps(t *testing.T) {
	s := openTest(t, t.TempDir())
	ops := []*op{
		{kind: opCreate, key: "/g"},
		{kind: opCreate, key: "/g"},               // exists: created just before
		{kind: opUpdate, key: "/g", expectRev: 1}, // matches the first op's revision
		{kind: opUpdate, key: "/g", expectRev: 1}, // stale now
		{kind: opDelete, key: "/g", expectRev: 3}, // stale: /g is at revision 2
		{kind: opDelete, key: "/g", expectRev: 2},
		{kind: opUpdate, key: "/g"}, // gone
	}
	for _, o := range ops {
		o.done = make(chan struct{})
		if o.kind != opDelete {
			o.record = newRecord(o.key, []byte("x"), nil)
			o.value = []byte("x")
		}
		o.state.Store(opTaken)
	}
	s.commit(ops)
	rev := s.Revision()
	want := []error{nil, store.ErrExists, nil, store.ErrConflict, store.ErrConflict, nil, store.ErrNotFound}
	for i, o := range ops {
		if !errors.Is(o.err, want[i]) || (want[i] == nil) != (o.err == nil) {
			t.Errorf("op %d: err %v, want %v", i, o.err, want[i])
		}
	}
	if rev != 3 || ops[0].rev != 1 || ops[2].rev != 2 || ops[5].rev != 3 {
		t.Fatalf("revisions: tx %d, ops %d %d %d", rev, ops[0].rev, ops[2].rev, ops[5].rev)
	}
	if s.Revision() != 3 {
		t.Fatalf("store revision %d", s.Revision())
	}
}

// A writer whose context ends while queued gets the context error and its
// write is not applied; one already in a transaction gets its real outcome.
func TestCancelledWriterNotApplied(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Create(ctx, "/x", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("create with cancelled ctx: %v", err)
	}
	// Many writers with a tiny deadline: each either got an error (then the
	// key is absent) or a revision (then it is present).
	var wg sync.WaitGroup
	type res struct {
		key string
		err error
	}
	out := make(chan res, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*100*time.Microsecond)
			defer cancel()
			key := fmt.Sprintf("/t/%03d", i)
			_, err := s.Create(ctx, key, []byte("v"))
			out <- res{key, err}
		}()
	}
	wg.Wait()
	close(out)
	applied := 0
	for r := range out {
		_, gerr := s.Get(context.Background(), r.key)
		switch {
		case r.err == nil && gerr != nil:
			t.Errorf("%s acknowledged but absent: %v", r.key, gerr)
		case r.err != nil && gerr == nil:
			t.Errorf("%s failed with %v but was applied", r.key, r.err)
		case r.err != nil && !errors.Is(r.err, context.DeadlineExceeded):
			t.Errorf("%s: unexpected error %v", r.key, r.err)
		case r.err == nil:
			applied++
		}
	}
	if int64(applied) != s.Revision() {
		t.Fatalf("%d writes acknowledged, revision %d", applied, s.Revision())
	}
}

func TestCloseNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		s, err := Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, "/a", "v")
		var chans []<-chan store.Event
		for range 5 {
			ch, err := s.Watch(context.Background(), "/", 0, store.WatchOptions{ProgressNotify: true})
			if err != nil {
				t.Fatal(err)
			}
			chans = append(chans, ch)
		}
		// Writers blocked in the queue at Close get a result, not a hang.
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Create(context.Background(), fmt.Sprintf("/w%d", i), nil)
				if err != nil && !errors.Is(err, store.ErrClosed) {
					t.Errorf("create racing close: %v", err)
				}
			}()
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, ch := range chans {
			for range ch { // drains, then must end: Close closes every watch
			}
		}
		if _, err := s.Watch(context.Background(), "/", 0, store.WatchOptions{}); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("watch after close: %v", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "goroutines to end after Close", func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
