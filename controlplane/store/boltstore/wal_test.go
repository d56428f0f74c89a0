package boltstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skep-dev/skep/controlplane/store"
	"github.com/skep-dev/skep/internal/testutil"
)

func putEntry(key string, rev int64, value string) walEntry {
	rec := newRecord(key, []byte(value), nil)
	setRevisions(rec, rev, rev)
	return walEntry{key: key, rec: rec, rev: rev}
}

func revs(es []walEntry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.rev
	}
	return out
}

func reopenWAL(t *testing.T, path string) []walEntry {
	t.Helper()
	w, entries, err := openWAL(path, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	w.close()
	return entries
}

// A torn or corrupted last frame ends the log; the frames before it stay.
func TestWALTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.wal")
	w, entries, err := openWAL(path, 1<<16)
	if err != nil || len(entries) != 0 {
		t.Fatalf("new wal: %v, %d entries", err, len(entries))
	}
	if err := w.append([]walEntry{putEntry("/a", 1, "one"), putEntry("/b", 2, "two")}); err != nil {
		t.Fatal(err)
	}
	mid := w.off
	if err := w.append([]walEntry{{key: "/a", rev: 3}}); err != nil { // a delete
		t.Fatal(err)
	}
	end := w.off
	w.close()

	got := reopenWAL(t, path)
	if !slices.Equal(revs(got), []int64{1, 2, 3}) || got[2].rec != nil || string(got[1].rec[recordHeaderLen:]) != "two" {
		t.Fatalf("entries %v", got)
	}
	if fi, _ := os.Stat(path); fi.Size() != 1<<16 {
		t.Fatalf("wal size %d, want preallocated %d", fi.Size(), 1<<16)
	}

	// Flip one byte inside the second frame: its checksum fails.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	b := make([]byte, 1)
	f.ReadAt(b, end-2)
	f.WriteAt([]byte{b[0] ^ 0xff}, end-2)
	f.Close()
	if got := reopenWAL(t, path); !slices.Equal(revs(got), []int64{1, 2}) {
		t.Fatalf("after corrupting frame 2: revisions %v, want [1 2]", revs(got))
	}
	// A header that claims more bytes than were written (a torn write).
	f, _ = os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte{0, 0, 0x7f, 0}, mid+4)
	f.Close()
	if got := reopenWAL(t, path); !slices.Equal(revs(got), []int64{1, 2}) {
		t.Fatalf("after tearing frame 2: revisions %v, want [1 2]", revs(got))
	}
}

// After a checkpoint the log is overwritten from offset 0; frames of the
// earlier generation left after the new ones are not read back, even when
// one starts exactly where the new frames end.
func TestWALStaleGenerationIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.wal")
	w, _, err := openWAL(path, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	for rev := int64(1); rev <= 3; rev++ {
		if err := w.append([]walEntry{putEntry("/k", rev, "v")}); err != nil {
			t.Fatal(err)
		}
	}
	w.reset()
	// Same key and value length, so the frame is exactly as long as the
	// first one and frame 2 of the old generation follows it intact.
	if err := w.append([]walEntry{putEntry("/k", 4, "w")}); err != nil {
		t.Fatal(err)
	}
	w.close()
	got := reopenWAL(t, path)
	if !slices.Equal(revs(got), []int64{4}) || string(got[0].rec[recordHeaderLen:]) != "w" {
		t.Fatalf("revisions %v, want [4]", revs(got))
	}
}

// A log whose writes do not follow the database's revision means writes are
// missing: Open refuses instead of serving a store with a hole.
func TestWALGapRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s := openTest(t, dir)
	mustCreate(t, s, "/a", "1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	w, _, err := openWAL(path+".wal", walDefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.append([]walEntry{putEntry("/b", 5, "x")}); err != nil {
		t.Fatal(err)
	}
	w.close()
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("opened a store whose WAL skips revisions 2-4")
	} else if !strings.Contains(err.Error(), "missing") {
		t.Fatalf("error %v does not say revisions are missing", err)
	}
}

// Reads see exactly what a map of the writes says, whether a write is still
// only in the WAL and overlay or already checkpointed into bbolt, across
// random checkpoints and a reopen.
func TestOverlayMatchesModel(t *testing.T) {
	for _, every := range []int{1, 7, 1 << 20} {
		t.Run(fmt.Sprintf("checkpoint-every=%d", every), func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, WithCheckpoint(time.Hour, every))
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, uint64(every)))
			model := map[string]string{}
			mods := map[string]int64{}
			check := func(s *Store) {
				t.Helper()
				for i := range 40 {
					key := fmt.Sprintf("/m/%02d", i)
					kv, err := s.Get(ctx, key)
					want, ok := model[key]
					if ok != (err == nil) || (ok && (string(kv.Value) != want || kv.ModRevision != mods[key])) {
						t.Fatalf("get %s = %q@%d, %v; want %q@%d (present %v)", key, kv.Value, kv.ModRevision, err, want, mods[key], ok)
					}
				}
				var keys []string
				for k := range model {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				// Page through with a small limit, checking counts too.
				var got []string
				after := ""
				for {
					res, err := s.List(ctx, "/m/", store.ListOptions{StartAfter: after, Limit: 6})
					if err != nil {
						t.Fatal(err)
					}
					if res.Revision != s.Revision() {
						t.Fatalf("list revision %d, store %d", res.Revision, s.Revision())
					}
					for _, kv := range res.Items {
						if string(kv.Value) != model[kv.Key] {
							t.Fatalf("list %s = %q, want %q", kv.Key, kv.Value, model[kv.Key])
						}
						got = append(got, kv.Key)
					}
					if want := int64(len(keys) - len(got)); res.Remaining != want || res.More != (want > 0) {
						t.Fatalf("after %d items: remaining %d more %v, want %d", len(got), res.Remaining, res.More, want)
					}
					if !res.More {
						break
					}
					after = got[len(got)-1]
				}
				if !slices.Equal(got, keys) {
					t.Fatalf("list %v\nwant %v", got, keys)
				}
			}
			for step := range 400 {
				key := fmt.Sprintf("/m/%02d", rng.IntN(40))
				val := fmt.Sprintf("v%d", step)
				switch rng.IntN(3) {
				case 0:
					rev, err := s.Create(ctx, key, []byte(val))
					if _, ok := model[key]; ok != errors.Is(err, store.ErrExists) || (!ok && err != nil) {
						t.Fatalf("create %s: %v (present %v)", key, err, ok)
					}
					if err == nil {
						model[key], mods[key] = val, rev
					}
				case 1:
					rev, err := s.Update(ctx, key, []byte(val), mods[key])
					if _, ok := model[key]; ok != (err == nil) {
						t.Fatalf("update %s: %v (present %v)", key, err, ok)
					}
					if err == nil {
						model[key], mods[key] = val, rev
					}
				case 2:
					_, err := s.Delete(ctx, key, 0)
					if _, ok := model[key]; ok != (err == nil) {
						t.Fatalf("delete %s: %v (present %v)", key, err, ok)
					}
					delete(model, key)
					delete(mods, key)
				}
				if step%20 == 0 {
					check(s)
				}
			}
			check(s)
			rev := s.Revision()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir)
			if s.Revision() != rev {
				t.Fatalf("revision %d after reopen, want %d", s.Revision(), rev)
			}
			check(s)
		})
	}
}

// Lists taken while writes and checkpoints run are snapshots: with one
// sequential writer creating keys, a list at revision R holds exactly the
// keys created up to R, never a key from after R and never a gap.
func TestListSnapshotDuringCheckpoints(t *testing.T) {
	s := openTest(t, t.TempDir(), WithCheckpoint(time.Hour, 3))
	// Let checkpoints land between a list's two reads.
	testHookListCopied = func() { time.Sleep(200 * time.Microsecond) }
	t.Cleanup(func() { testHookListCopied = nil })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := s.Revision()
	const n = 600
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := s.Create(ctx, fmt.Sprintf("/snap/%04d", i), []byte("v")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	lists := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if lists < 10 {
				t.Fatalf("only %d lists ran during the writes", lists)
			}
			return
		default:
		}
		res, err := s.List(ctx, "/snap/", store.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		lists++
		if want := int(res.Revision - base); len(res.Items) != want {
			t.Fatalf("list at revision %d has %d items, want %d", res.Revision, len(res.Items), want)
		}
		for i, kv := range res.Items {
			if kv.Key != fmt.Sprintf("/snap/%04d", i) || kv.ModRevision != base+int64(i)+1 {
				t.Fatalf("item %d is %s@%d", i, kv.Key, kv.ModRevision)
			}
		}
	}
}

// When writes stop before a checkpoint is due, the idle timer still folds
// them into bbolt one interval later.
func TestIdleCheckpoint(t *testing.T) {
	s := openTest(t, t.TempDir(), WithCheckpoint(20*time.Millisecond, 1<<20))
	rev := mustCreate(t, s, "/idle/a", "v")
	testutil.Eventually(t, 5*time.Second, "the idle checkpoint", func() error {
		s.ovMu.RLock()
		applied, pending := s.applied, len(s.overlay)
		s.ovMu.RUnlock()
		if applied != rev || pending != 0 {
			return fmt.Errorf("bbolt at revision %d with %d writes pending after the last write at %d", applied, pending, rev)
		}
		return nil
	})
}
