package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	near := func(got, want time.Duration) bool {
		return math.Abs(float64(got-want)) <= 0.03*float64(want)
	}
	if got := h.quantile(0.5); !near(got, 500*time.Microsecond) {
		t.Errorf("p50 = %v, want ~500µs", got)
	}
	if got := h.quantile(0.99); !near(got, 990*time.Microsecond) {
		t.Errorf("p99 = %v, want ~990µs", got)
	}
	var empty Hist
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
	// Histograms of separate processes add up through their JSON form.
	var a, b Hist
	for range 99 {
		a.record(100 * time.Microsecond)
	}
	b.record(10 * time.Millisecond)
	b.record(10 * time.Millisecond)
	sum := histFromSparse(a.sparse())
	sum.add(histFromSparse(b.sparse()))
	if got := sum.quantile(0.99); !near(got, 10*time.Millisecond) {
		t.Errorf("combined p99 = %v, want ~10ms", got)
	}
}

func TestCombine(t *testing.T) {
	var fast, slow Hist
	for range 90 {
		fast.record(100 * time.Microsecond)
	}
	for range 10 {
		slow.record(10 * time.Millisecond)
	}
	got := combine([]JobResult{
		{Ops: 90, Elapsed: time.Second, Hist: fast.sparse()},
		{Ops: 10, Errors: 1, Elapsed: time.Second, Hist: slow.sparse(), FirstError: "x"},
	})
	if got.Ops != 100 || got.Errors != 1 || got.Elapsed != 2*time.Second || got.FirstError != "x" {
		t.Errorf("combined %+v", got)
	}
	if got.PerSec != 50 {
		t.Errorf("rate %v, want 50/s", got.PerSec)
	}
	if got.P50 > 110*time.Microsecond || got.P99 < 9*time.Millisecond {
		t.Errorf("p50 %v p99 %v", got.P50, got.P99)
	}
	if got.Hist != nil {
		t.Error("histogram kept in the report")
	}
}

func TestPrefixPID(t *testing.T) {
	if pid, ok := prefixPID("skepbench1234x00ff"); !ok || pid != 1234 {
		t.Errorf("got %d %v", pid, ok)
	}
	if _, ok := prefixPID("other1234"); ok {
		t.Error("foreign name parsed")
	}
}

func TestRunRejectsUnknownMode(t *testing.T) {
	cfg := QuickConfig()
	cfg.ChildArgv = []string{"true"}
	cfg.Modes = []string{"iptables-nf"}
	if _, err := Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "unknown mode") {
		t.Fatalf("err = %v, want unknown mode", err)
	}
}
