package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The write-ahead log makes a group of writes durable with one small write
// and one fdatasync, where a bbolt commit costs the B+tree pages, the meta
// page and two fdatasyncs. bbolt is brought up to date later, in a
// checkpoint that applies many groups at once (etcd's WAL-then-backend
// design); see the package doc.
//
// The file is preallocated once, then overwritten in place from offset 0
// after each checkpoint, so appending never changes the file's size and,
// once the first blocks have been written, fdatasync writes data only. A frame is
//
//	magic(4) | payloadLen(4) | crc32c(payload)(4) | payload
//	payload = firstRev(8) | count(4) | entry*
//	entry   = kind(1) | keyLen(2) | key | recLen(4) | record   (recLen 0 for a delete)
//
// all big-endian. The entries of a frame have the consecutive revisions
// firstRev, firstRev+1, …, and each frame follows the previous one's last
// revision. Reading stops at the first frame that is torn (bad magic,
// length or checksum) or does not continue the revision sequence: that is
// the end of the log, since older frames left behind by an earlier
// generation always carry lower revisions.

const (
	walMagic       = 0x534b5731 // "SKW1"
	walHeaderLen   = 12
	walDefaultSize = 64 << 20
	entryPut       = 1
	entryDelete    = 2
)

var (
	crcTable   = crc32.MakeTable(crc32.Castagnoli)
	errWALFull = errors.New("wal: full")
)

// walEntry is one logged write. rec is nil for a delete.
type walEntry struct {
	key string
	rec []byte
	rev int64
}

type wal struct {
	f    *os.File
	size int64 // preallocated bytes
	off  int64 // where the next frame goes
	buf  []byte
}

// openWAL opens (creating and preallocating it if needed) the log at path
// and returns it with the entries it holds, in revision order.
func openWAL(path string, size int64) (*wal, []walEntry, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open wal: %w", err)
	}
	w := &wal{f: f}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat wal: %w", err)
	}
	w.size = fi.Size()
	entries, err := readWAL(f, w.size)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if w.size < size {
		if err := w.grow(size); err != nil {
			f.Close()
			return nil, nil, err
		}
		// A new file needs its directory entry to survive a crash too.
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	return w, entries, nil
}

// readWAL returns the entries of the valid frames at the start of the
// size bytes of r.
func readWAL(r io.ReaderAt, size int64) ([]walEntry, error) {
	var entries []walEntry
	var off int64
	next := int64(0) // the revision the next frame must start at; 0: any
	h := make([]byte, walHeaderLen)
	var payload []byte
	for size-off >= walHeaderLen {
		if _, err := r.ReadAt(h, off); err != nil {
			return nil, fmt.Errorf("read wal: %w", err)
		}
		if binary.BigEndian.Uint32(h[0:4]) != walMagic {
			break
		}
		n := int64(binary.BigEndian.Uint32(h[4:8]))
		if n < 12 || n > size-off-walHeaderLen {
			break
		}
		if int64(cap(payload)) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := r.ReadAt(payload, off+walHeaderLen); err != nil {
			return nil, fmt.Errorf("read wal: %w", err)
		}
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(h[8:12]) {
			break
		}
		first := int64(binary.BigEndian.Uint64(payload[0:8]))
		if next != 0 && first != next {
			break // a frame of an earlier generation
		}
		frame, ok := parseFrame(payload, first)
		if !ok {
			break
		}
		entries = append(entries, frame...)
		next = first + int64(len(frame))
		off += walHeaderLen + n
	}
	return entries, nil
}

func parseFrame(p []byte, first int64) ([]walEntry, bool) {
	count := int(binary.BigEndian.Uint32(p[8:12]))
	p = p[12:]
	if count == 0 || count > len(p) {
		return nil, false
	}
	out := make([]walEntry, 0, count)
	for i := range count {
		if len(p) < 3 {
			return nil, false
		}
		kind, kl := p[0], int(binary.BigEndian.Uint16(p[1:3]))
		p = p[3:]
		if len(p) < kl+4 {
			return nil, false
		}
		e := walEntry{key: string(p[:kl]), rev: first + int64(i)}
		rl := int(binary.BigEndian.Uint32(p[kl : kl+4]))
		p = p[kl+4:]
		if len(p) < rl {
			return nil, false
		}
		switch kind {
		case entryPut:
			if rl < recordHeaderLen {
				return nil, false
			}
			e.rec = append([]byte(nil), p[:rl]...)
		case entryDelete:
			if rl != 0 {
				return nil, false
			}
		default:
			return nil, false
		}
		p = p[rl:]
		out = append(out, e)
	}
	return out, len(p) == 0
}

// append writes one frame holding entries (consecutive revisions from
// entries[0].rev) and makes it durable. errWALFull means a checkpoint must
// make room first; the log is unchanged then.
func (w *wal) append(entries []walEntry) error {
	b := appendFrame(w.buf[:0], entries)
	if cap(b) <= 1<<20 {
		w.buf = b // keep ordinary buffers, not a rare huge one
	}
	if w.off+int64(len(b)) > w.size {
		if w.off > 0 {
			return errWALFull
		}
		// One frame larger than the whole log: make the log bigger.
		if err := w.grow(int64(len(b))); err != nil {
			return err
		}
	}
	if _, err := w.f.WriteAt(b, w.off); err != nil {
		w.invalidate()
		return fmt.Errorf("write wal: %w", err)
	}
	if err := fdatasync(w.f); err != nil {
		// The frame may or may not be on disk: make sure it is not read
		// back as acknowledged after a restart.
		w.invalidate()
		return fmt.Errorf("sync wal: %w", err)
	}
	w.off += int64(len(b))
	return nil
}

// appendFrame appends to b the frame holding entries, whose revisions are
// consecutive from entries[0].rev.
func appendFrame(b []byte, entries []walEntry) []byte {
	start := len(b)
	b = append(b, make([]byte, walHeaderLen)...)
	b = binary.BigEndian.AppendUint64(b, uint64(entries[0].rev))
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		kind := byte(entryPut)
		if e.rec == nil {
			kind = entryDelete
		}
		b = append(b, kind)
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.key)))
		b = append(b, e.key...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.rec)))
		b = append(b, e.rec...)
	}
	frame := b[start:]
	payload := frame[walHeaderLen:]
	binary.BigEndian.PutUint32(frame[0:4], walMagic)
	binary.BigEndian.PutUint32(frame[4:8], uint32(len(payload)))
	binary.BigEndian.PutUint32(frame[8:12], crc32.Checksum(payload, crcTable))
	return b
}

// invalidate best-effort erases the magic of a frame whose write failed.
func (w *wal) invalidate() {
	if _, err := w.f.WriteAt(make([]byte, 4), w.off); err == nil {
		_ = fdatasync(w.f)
	}
}

// reset starts a new generation at offset 0, after a checkpoint made every
// entry in the log part of the bbolt file.
func (w *wal) reset() { w.off = 0 }

// grow extends the preallocated, zero-filled file to size bytes: allocated
// with fallocate where the file system can (reads as zeros; the blocks a
// generation overwrites become ordinary written blocks on first use, and
// every generation reuses the same first ones), else written with zeros.
func (w *wal) grow(size int64) error {
	ok, err := fallocate(w.f, w.size, size-w.size)
	if err != nil {
		return fmt.Errorf("preallocate wal: %w", err)
	}
	zeros := make([]byte, 1<<20)
	for off := w.size; !ok && off < size; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), size-off)
		if _, err := w.f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("preallocate wal: %w", err)
		}
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("preallocate wal: %w", err)
	}
	w.size = max(w.size, size)
	return nil
}

func (w *wal) close() error { return w.f.Close() }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}
