package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(ds, 0.5); got != 50*time.Millisecond {
		t.Errorf("p50 = %v", got)
	}
	if got := percentile(ds, 0.99); got != 99*time.Millisecond {
		t.Errorf("p99 = %v", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

// The sample set stays bounded however many operations a worker does, and
// still spans the whole run.
func TestSamplesBounded(t *testing.T) {
	var s workerStats
	for i := range 3 * maxSamples {
		s.sample(time.Duration(i))
	}
	if len(s.lat) > maxSamples {
		t.Fatalf("%d samples kept, bound %d", len(s.lat), maxSamples)
	}
	if last := s.lat[len(s.lat)-1]; last < time.Duration(2*maxSamples) {
		t.Errorf("latest sample %v: the tail of the run is missing", last)
	}
}

func TestMedian(t *testing.T) {
	rs := []JobResult{{Ops: 30, Elapsed: time.Second}, {Ops: 10, Elapsed: time.Second}, {Ops: 20, Elapsed: time.Second}}
	if got := median(rs, JobResult.Rate); got.Ops != 20 {
		t.Errorf("median = %d ops", got.Ops)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/sys/fs/cgroup\040x`); got != "/sys/fs/cgroup x" {
		t.Errorf("got %q", got)
	}
}

func TestCgroup2Mount(t *testing.T) {
	p, err := cgroup2Mount()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	if _, err := os.Stat(p + "/cgroup.procs"); err != nil {
		t.Errorf("%s is not a cgroup2 root: %v", p, err)
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
