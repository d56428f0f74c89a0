package bpf

import (
	"errors"

	"github.com/cilium/ebpf"
)

// batchRead calls fn for every entry of a hash map, a few thousand entries
// per syscall (a restarted proxy reads 10,000 services back in a few ms,
// where one lookup per entry takes most of a second).
func batchRead[K, V any](m *ebpf.Map, fn func(*K, *V)) error {
	const chunk = 4096
	var cursor ebpf.MapBatchCursor
	keys := make([]K, chunk)
	vals := make([]V, chunk)
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
