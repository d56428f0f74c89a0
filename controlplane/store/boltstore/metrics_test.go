package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Concurrent writers share transactions: fewer commits than writes, and the
// batch sizes add up to the writes. Also checks the metrics are served.
func TestGroupCommitGroupsWriters(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, each = 16, 30
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Create(context.Background(), fmt.Sprintf("/g/%d/%d", w, i), []byte("v")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var commits uint64
	var writes float64
	var revision float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "skep_store_commit_batch_writes":
			h := mf.GetMetric()[0].GetHistogram()
			commits, writes = h.GetSampleCount(), h.GetSampleSum()
		case "skep_store_revision":
			revision = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if writes != writers*each || revision != writers*each {
		t.Fatalf("metrics: %v writes in batches, revision %v; want %d", writes, revision, writers*each)
	}
	if commits >= writers*each {
		t.Fatalf("%d commits for %d concurrent writes: nothing was grouped", commits, writers*each)
	}
	t.Logf("%d writes in %d transactions", writers*each, commits)

	// A second store on the same registry is refused, not a panic.
	if s2, err := Open(filepath.Join(t.TempDir(), "other.db"), WithMetrics(reg)); err == nil {
		s2.Close()
		t.Fatal("second registration on the same registry succeeded")
	}
}

func TestBatchLenCaps(t *testing.T) {
	s := &Store{opts: options{maxBatch: 3, maxBatchBytes: 100}}
	mk := func(sizes ...int) []*op {
		var ops []*op
		for _, n := range sizes {
			ops = append(ops, &op{record: make([]byte, n)})
		}
		return ops
	}
	for _, c := range []struct {
		sizes []int
		want  int
	}{
		{[]int{10, 10}, 2},
		{[]int{10, 10, 10, 10, 10}, 3}, // count cap
		{[]int{60, 30, 20}, 2},         // byte cap
		{[]int{500, 10}, 1},            // one large write still goes alone
		{nil, 0},
	} {
		if got := s.batchLen(mk(c.sizes...)); got != c.want {
			t.Errorf("batchLen(%v) = %d, want %d", c.sizes, got, c.want)
		}
	}
}
