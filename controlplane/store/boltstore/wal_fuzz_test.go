package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// The WAL reader is the one hand-written parser of bytes the store reads
// back after a crash. These fuzz tests hold it to two promises: nothing it
// is given makes it panic, and whatever it accepts is exactly what the write
// path wrote. Run them with
//
//	go test -run '^$' -fuzz FuzzReadWAL ./controlplane/store/boltstore
//	go test -run '^$' -fuzz FuzzWALDamage ./controlplane/store/boltstore

// storeWAL writes through a real store (group commit from concurrent
// writers, secrets sealed, deletes) with checkpoints held off, and returns
// the bytes of its log up to the last frame, having checked that they read
// back as exactly the writes made.
func storeWAL(f *testing.F) []byte {
	f.Helper()
	dir := f.TempDir()
	s, err := Open(filepath.Join(dir, "state.db"), WithCheckpoint(time.Hour, 1<<30), WithWALSize(1<<20),
		WithEncryptedPrefixes("/registry/secrets/"), WithKeyFile(filepath.Join(dir, "secrets.key")))
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	type write struct {
		key, value    string // value "": a delete
		create, delet bool
	}
	var mu sync.Mutex
	writes := map[int64]write{}
	record := func(rev int64, w write, err error) {
		if err != nil {
			f.Errorf("%s: %v", w.key, err)
			return
		}
		mu.Lock()
		writes[rev] = w
		mu.Unlock()
	}
	// Concurrent writers make frames of several entries.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 5 {
				key := fmt.Sprintf("/registry/configmaps/default/g%d-%d", g, i)
				if g == 3 {
					key = fmt.Sprintf("/registry/secrets/default/s%d", i)
				}
				v := fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)
				rev, err := s.Create(ctx, key, []byte(v))
				record(rev, write{key: key, value: v, create: true}, err)
			}
		})
	}
	wg.Wait()
	for i := range 3 {
		key := fmt.Sprintf("/registry/configmaps/default/g0-%d", i)
		rev, err := s.Update(ctx, key, []byte("updated"), 0)
		record(rev, write{key: key, value: "updated"}, err)
	}
	if _, err := s.Delete(ctx, "/registry/configmaps/default/g1-0", 0); err != nil {
		f.Fatal(err)
	}
	record(s.Revision(), write{key: "/registry/configmaps/default/g1-0", delet: true}, nil)

	log, err := os.ReadFile(filepath.Join(dir, "state.db.wal"))
	if err != nil {
		f.Fatal(err)
	}
	log = log[:s.wal.off]
	entries, err := readWAL(bytes.NewReader(log), int64(len(log)))
	if err != nil {
		f.Fatal(err)
	}
	if len(entries) != len(writes) {
		f.Fatalf("the store's log holds %d entries for %d writes", len(entries), len(writes))
	}
	creates := map[string]int64{}
	for _, e := range entries {
		w, ok := writes[e.rev]
		if !ok || e.key != w.key || (e.rec == nil) != w.delet {
			f.Fatalf("entry %s@%d (delete %v) is not the write made at that revision: %+v", e.key, e.rev, e.rec == nil, w)
		}
		if w.create {
			creates[e.key] = e.rev
		}
		if w.delet {
			continue
		}
		kv, err := decodeRecord(e.key, e.rec, s.sealer)
		if err != nil || string(kv.Value) != w.value || kv.ModRevision != e.rev || kv.CreateRevision != creates[e.key] {
			f.Fatalf("entry %s@%d decodes to %+v (%v), want value %q created at %d", e.key, e.rev, kv, err, w.value, creates[e.key])
		}
	}
	return log
}

// FuzzReadWAL reads arbitrary bytes as a log: no panic, no error (the bytes
// are all there), revisions consecutive, and every frame it accepted is,
// byte for byte, the frame the write path makes of the entries read from it.
func FuzzReadWAL(f *testing.F) {
	log := storeWAL(f)
	f.Add(log)
	f.Add(log[:len(log)/2])
	for _, at := range []int{0, 5, 13, len(log) / 3, len(log) - 1} {
		damaged := slices.Clone(log)
		damaged[at] ^= 0x40
		f.Add(damaged)
	}
	f.Add(append(slices.Clone(log), make([]byte, 64)...)) // the preallocated zeros
	f.Add([]byte{})
	f.Add(make([]byte, walHeaderLen))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := readWAL(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("readWAL: %v", err)
		}
		for i, e := range entries {
			if e.rev != entries[0].rev+int64(i) {
				t.Fatalf("entry %d at revision %d after %d", i, e.rev, entries[0].rev)
			}
			if e.rec != nil {
				_, _ = decodeRecord(e.key, e.rec, nil) // may refuse, must not panic
			}
		}
		off := 0
		for k := 0; k < len(entries); {
			n := int(binary.BigEndian.Uint32(data[off+4:]))
			count := int(binary.BigEndian.Uint32(data[off+walHeaderLen+8:]))
			if count == 0 || k+count > len(entries) {
				t.Fatalf("frame at %d claims %d entries; %d of %d read are left", off, count, len(entries)-k, len(entries))
			}
			frame := data[off : off+walHeaderLen+n]
			if want := appendFrame(nil, entries[k:k+count]); !bytes.Equal(frame, want) {
				t.Fatalf("frame at %d read as entries %d..%d, which the write path frames as\n%x\nnot\n%x", off, k, k+count-1, want, frame)
			}
			k += count
			off += len(frame)
		}
	})
}

// FuzzWALPayload frames arbitrary bytes as a payload with a valid header
// and checksum, so the fuzzer gets past the checksum into parseFrame: the
// frame is either refused or read as entries the write path frames into
// exactly these bytes.
func FuzzWALPayload(f *testing.F) {
	log := storeWAL(f)
	for off := 0; off < len(log); {
		n := int(binary.BigEndian.Uint32(log[off+4:]))
		f.Add(log[off+walHeaderLen : off+walHeaderLen+n])
		off += walHeaderLen + n
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		frame := binary.BigEndian.AppendUint32(nil, walMagic)
		frame = binary.BigEndian.AppendUint32(frame, uint32(len(payload)))
		frame = binary.BigEndian.AppendUint32(frame, crc32.Checksum(payload, crcTable))
		frame = append(frame, payload...)
		entries, err := readWAL(bytes.NewReader(frame), int64(len(frame)))
		if err != nil {
			t.Fatalf("readWAL: %v", err)
		}
		if len(entries) == 0 {
			return // refused
		}
		if want := appendFrame(nil, entries); !bytes.Equal(frame, want) {
			t.Fatalf("payload read as %d entries, which the write path frames as\n%x\nnot\n%x", len(entries), want, frame)
		}
		for _, e := range entries {
			if e.rec != nil {
				_, _ = decodeRecord(e.key, e.rec, nil) // may refuse, must not panic
			}
		}
	})
}

// FuzzWALDamage builds a log with the write path's framing from a
// description (ops), then tears it at cut and flips one byte (xor at at),
// as a crash or a bad disk would, and follows it with the preallocated
// zeros or a frame of an earlier generation. The reader must return exactly
// the frames before the first one whose bytes are not all as written: the
// intact frames come back whole, and nothing after damage is read. (The
// corpus in testdata holds the case that taught the test what intact means:
// a frame torn only in its trailing zero bytes is whole again over the
// zeros of the preallocated file.)
func FuzzWALDamage(f *testing.F) {
	f.Add([]byte{0x00, 0x12, 0x81, 0x24, 0x35, 0x86, 0x47}, uint16(7), uint32(1<<31), uint32(0), byte(0), byte(0))
	f.Add([]byte{0x00, 0x12, 0x81, 0x24, 0x35, 0x86, 0x47}, uint16(1), uint32(40), uint32(70), byte(0xff), byte(1))
	f.Add([]byte{0x80, 0x80, 0x81}, uint16(100), uint32(25), uint32(3), byte(1), byte(2))
	f.Add([]byte{}, uint16(0), uint32(0), uint32(0), byte(0), byte(2))
	f.Fuzz(func(t *testing.T, ops []byte, first uint16, cut, at uint32, xor, tail byte) {
		// Frames: each op byte is one entry; bit 7 ends a frame after it,
		// bit 0 makes a delete, bits 1-3 pick the key, bits 4-6 the value.
		rev := int64(first) + 2 // > 1: the stale frame below is older
		var frames [][]walEntry
		var cur []walEntry
		for i, op := range ops {
			key := fmt.Sprintf("/k/%d", op>>1&7)
			e := walEntry{key: key, rev: rev}
			if op&1 == 0 {
				e = putEntry(key, rev, string(bytes.Repeat([]byte{'v'}, int(op>>4&7)*9)))
			}
			cur = append(cur, e)
			rev++
			if op&0x80 != 0 || i == len(ops)-1 {
				frames = append(frames, cur)
				cur = nil
			}
		}
		var written []byte
		var ends []int
		for _, fr := range frames {
			written = appendFrame(written, fr)
			ends = append(ends, len(written))
		}
		// The damage.
		size := int(cut) % (len(written) + 1)
		if cut >= 1<<31 {
			size = len(written) // no tear
		}
		log := slices.Clone(written[:size])
		damagedAt := size
		if xor != 0 && size > 0 {
			i := int(at) % size
			log[i] ^= xor
			damagedAt = i
		}
		// What follows where the writer stopped.
		stale := []walEntry{putEntry("/k/stale", 1, "old")}
		switch tail % 3 {
		case 1:
			log = append(log, make([]byte, 4096)...)
		case 2:
			log = appendFrame(log, stale)
		}
		// A frame is intact when its bytes are all there as written, even
		// if it was torn: a tail that was zeros reads back from the zeros
		// of the preallocated file, and then the frame is complete.
		intact := 0
		for intact < len(frames) && ends[intact] <= len(log) {
			start := 0
			if intact > 0 {
				start = ends[intact-1]
			}
			if !bytes.Equal(log[start:ends[intact]], written[start:ends[intact]]) {
				break
			}
			intact++
		}
		var want []walEntry
		for _, fr := range frames[:intact] {
			want = append(want, fr...)
		}
		// An earlier generation's frame is read only as the whole log:
		// after any frame the revision sequence does not continue into it.
		if tail%3 == 2 && size == 0 {
			want = stale
		}

		got, err := readWAL(bytes.NewReader(log), int64(len(log)))
		if err != nil {
			t.Fatalf("readWAL: %v", err)
		}
		same := slices.EqualFunc(got, want, func(a, b walEntry) bool {
			return a.key == b.key && a.rev == b.rev && bytes.Equal(a.rec, b.rec) && (a.rec == nil) == (b.rec == nil)
		})
		if !same {
			t.Fatalf("%d frames, damaged at byte %d of %d (frame ends %v), tail %d: read revisions %v, want %v",
				len(frames), damagedAt, size, ends, tail%3, revs(got), revs(want))
		}
	})
}
