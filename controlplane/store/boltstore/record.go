package boltstore

import (
	"encoding/binary"
	"fmt"

	"github.com/skep-dev/skep/controlplane/store"
)

// On-disk record layout; see the package doc.
const (
	recordVersion   = 1
	flagEncrypted   = 1 << 0
	recordHeaderLen = 18
)

// newRecord returns a record with a zero-revision header and the (possibly
// sealed) value; the committer fills in the revisions.
func newRecord(key string, value []byte, sl *sealer) []byte {
	if sl.covers(key) {
		rec := make([]byte, recordHeaderLen, recordHeaderLen+len(value)+64)
		rec[0], rec[1] = recordVersion, flagEncrypted
		return sl.seal(rec, key, value)
	}
	rec := make([]byte, recordHeaderLen+len(value))
	rec[0] = recordVersion
	copy(rec[recordHeaderLen:], value)
	return rec
}

func setRevisions(rec []byte, create, mod int64) {
	binary.BigEndian.PutUint64(rec[2:10], uint64(create))
	binary.BigEndian.PutUint64(rec[10:18], uint64(mod))
}

// recordRevisions reads a record's revisions without touching its payload.
func recordRevisions(rec []byte) (create, mod int64, err error) {
	if len(rec) < recordHeaderLen || rec[0] != recordVersion {
		return 0, 0, fmt.Errorf("corrupt record (len %d)", len(rec))
	}
	return int64(binary.BigEndian.Uint64(rec[2:10])), int64(binary.BigEndian.Uint64(rec[10:18])), nil
}

// decodeRecord returns the KV of rec, copying (or decrypting) the value out
// of bbolt's memory map.
func decodeRecord(key string, rec []byte, sl *sealer) (store.KV, error) {
	create, mod, err := recordRevisions(rec)
	if err != nil {
		return store.KV{}, fmt.Errorf("key %q: %w", key, err)
	}
	kv := store.KV{Key: key, CreateRevision: create, ModRevision: mod}
	payload := rec[recordHeaderLen:]
	if rec[1]&flagEncrypted != 0 {
		kv.Value, err = sl.open(key, payload)
		if err != nil {
			return store.KV{}, err
		}
		return kv, nil
	}
	kv.Value = append([]byte(nil), payload...)
	return kv, nil
}

func putUint64(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

func beUint64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
