package bpf

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// scaleServices is n ClusterIP services with per endpoints each, every
// endpoint a distinct pod address.
func scaleServices(n, per int) []datapath.Service {
	out := make([]datapath.Service, n)
	for i := range n {
		vip := netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		s := datapath.Service{
			Frontend: datapath.Frontend{IP: vip, Port: 80, Proto: datapath.TCP},
			Name:     fmt.Sprintf("scale/svc-%d:http", i),
		}
		for j := range per {
			k := i*per + j
			s.Backends = append(s.Backends, datapath.Backend{
				IP:   netip.AddrFrom4([4]byte{10, 244, byte(k >> 8), byte(k)}),
				Port: uint16(8000 + k>>16),
			})
		}
		out[i] = s
	}
	return out
}

func TestTenThousandServices(t *testing.T) {
	lb := newTestLB(t, Options{})
	svcs := scaleServices(10000, 10)
	start := time.Now()
	for _, s := range svcs {
		must(t, lb.UpsertService(s), "upsert %s", s.Frontend)
	}
	t.Logf("programmed 10,000 services x 10 endpoints in %v", time.Since(start))
	svcN, beN, revN := mapCounts(t, lb)
	if svcN != 10000*11 || beN != 100000 || revN != 10000 {
		t.Fatalf("map entries: services %d backends %d revnat %d, want 110000 100000 10000", svcN, beN, revN)
	}
	start = time.Now()
	got, err := lb.Services()
	must(t, err, "services")
	t.Logf("read 10,000 services back in %v", time.Since(start))
	if len(got) != 10000 || len(got[0].Backends) != 10 {
		t.Fatalf("read back %d services", len(got))
	}

	// The batched path: every service loses its last endpoint.
	for i := range svcs {
		svcs[i].Backends = svcs[i].Backends[:9]
	}
	start = time.Now()
	must(t, lb.UpsertServices(svcs), "upsert 10,000 services in one batch")
	t.Logf("shrank 10,000 services in one batch in %v", time.Since(start))
	svcN, beN, revN = mapCounts(t, lb)
	if svcN != 10000*10 || beN != 90000 || revN != 10000 {
		t.Fatalf("after shrink: services %d backends %d revnat %d, want 100000 90000 10000", svcN, beN, revN)
	}

	// bpftool prints the BTF field names of keys and values.
	bpftoolHasFields(t, filepath.Join(lb.PinDir(), "lb4_services"),
		"address", "dport", "proto", "scope", "slot", "backend_id", "count", "rev_nat_id", "affinity_timeout")

	start = time.Now()
	for _, s := range svcs {
		must(t, lb.DeleteService(s.Frontend), "delete %s", s.Frontend)
	}
	t.Logf("deleted 10,000 services in %v", time.Since(start))
	if s, b, r := mapCounts(t, lb); s+b+r != 0 {
		t.Fatalf("after deleting all: services %d backends %d revnat %d", s, b, r)
	}
}

func bpftoolHasFields(t *testing.T, pin string, fields ...string) {
	t.Helper()
	bpftool := testutil.RequireBinary(t, "bpftool")
	out, err := exec.Command(bpftool, "map", "dump", "pinned", pin).Output()
	must(t, err, "bpftool map dump pinned %s", pin)
	for _, f := range fields {
		if !bytes.Contains(out, []byte(`"`+f+`": `)) {
			t.Errorf("bpftool dump of %s lacks field %q:\n%.600s", pin, f, out)
		}
	}
}

// BenchmarkProgram10kServices times programming 10,000 services x 10
// endpoints into empty maps (target: under 1 s). Re-run with
// go test -run '^$' -bench Program10k ./bpf
func BenchmarkProgram10kServices(b *testing.B) {
	testutil.RequireRoot(b)
	svcs := scaleServices(10000, 10)
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		lb, err := Load(Options{PinDir: filepath.Join(PinRoot, "bench-"+testutil.RandSuffix())})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := testutil.CPUTime()
		for _, s := range svcs {
			if err := lb.UpsertService(s); err != nil {
				b.Fatal(err)
			}
		}
		cpu += testutil.CPUTime() - c0
		b.StopTimer()
		if err := lb.Remove(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10k-services")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/10k-services")
}

// BenchmarkProgram10kServicesBatch is the same through UpsertServices (a
// proxy's initial sync).
func BenchmarkProgram10kServicesBatch(b *testing.B) {
	testutil.RequireRoot(b)
	svcs := scaleServices(10000, 10)
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		lb, err := Load(Options{PinDir: filepath.Join(PinRoot, "bench-"+testutil.RandSuffix())})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := testutil.CPUTime()
		if err := lb.UpsertServices(svcs); err != nil {
			b.Fatal(err)
		}
		cpu += testutil.CPUTime() - c0
		b.StopTimer()
		if err := lb.Remove(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10k-services")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/10k-services")
}

// BenchmarkAdopt10kServices times what a restarted proxy does before it can
// reconcile: open the pinned maps and read 10,000 services back.
func BenchmarkAdopt10kServices(b *testing.B) {
	testutil.RequireRoot(b)
	pin := filepath.Join(PinRoot, "bench-"+testutil.RandSuffix())
	lb, err := Load(Options{PinDir: pin})
	if err != nil {
		b.Fatal(err)
	}
	defer lb.Remove()
	for _, s := range scaleServices(10000, 10) {
		if err := lb.UpsertService(s); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		lb2, err := Load(Options{PinDir: pin})
		if err != nil {
			b.Fatal(err)
		}
		if len(lb2.st.services) != 10000 {
			b.Fatalf("adopted %d services", len(lb2.st.services))
		}
		lb2.Close()
	}
}
