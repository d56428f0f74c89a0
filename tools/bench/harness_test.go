package bench

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/testutil"
)

// The harness starts its clients as child processes of this test binary.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	os.Exit(m.Run())
}

func requireHarness(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	for _, b := range []string{"nsenter", "nft", "iptables-nft-restore", "iptables-nft-save", "iptables-legacy-restore", "iptables-legacy-save"} {
		testutil.RequireBinary(t, b)
	}
}

func testConfig(t testing.TB) Config {
	cfg := QuickConfig()
	cfg.ChildArgv = []string{os.Args[0]}
	cfg.Skep = DefaultSkep
	cfg.Log = testLogger(t)
	return cfg
}

// TestQuickRun runs the CI smoke configuration end to end and checks that
// the figures are real: every mode moved traffic without errors, the
// ClusterIP modes reached all three backends through the VIP (the backends
// count what they serve), the iptables rules were loaded in full and removed
// afterwards, and nothing of the run is left on the machine.
func TestQuickRun(t *testing.T) {
	requireHarness(t)
	cfg := testConfig(t)
	if cfg.Skep == nil {
		t.Fatal("no skep data path in this build (DefaultSkep is nil)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if rep != nil {
		b, _ := json.MarshalIndent(rep, "", "  ")
		t.Logf("report:\n%s", b)
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	checkCleanedUp(t, rep)
	if !strings.HasPrefix(rep.Control, "ClusterIP unreachable") || strings.HasSuffix(rep.Control, "()") {
		t.Errorf("no negative control: %q", rep.Control)
	}

	if len(rep.Results) != len(cfg.Services) {
		t.Fatalf("%d results, want one per service count %v", len(rep.Results), cfg.Services)
	}
	wantModes := []string{ModeDirect, ModeSkep, ModeNFT, ModeLegacy}
	for _, n := range rep.Results {
		seen := map[string]bool{}
		for _, m := range n.Modes {
			seen[m.Mode] = true
			if m.Mode == ModeIPVS {
				if m.Skipped == "" {
					t.Errorf("N=%d: ipvs has no reason it was not measured", n.Services)
				}
				continue
			}
			if m.Skipped != "" {
				t.Errorf("N=%d %s: skipped: %s", n.Services, m.Mode, m.Skipped)
				continue
			}
			checkMode(t, n, m)
		}
		for _, w := range wantModes {
			if !seen[w] {
				t.Errorf("N=%d: no %s row", n.Services, w)
			}
		}
	}
}

func checkMode(t *testing.T, n NResult, m ModeResult) {
	t.Helper()
	where := func() string { return m.Mode + " at " + itoa(n.Services) + " services" }
	for kind, j := range map[string]*JobResult{"connect": m.Connect, "rr": m.RR, "stream": m.Stream, "udp": m.UDP} {
		if j == nil {
			t.Errorf("%s: no %s result", where(), kind)
			continue
		}
		if j.Ops == 0 {
			t.Errorf("%s %s: nothing completed (first error: %s)", where(), kind, j.FirstError)
			continue
		}
		// A healthy path loses nothing; allow a trickle for a loaded
		// machine (a 1 s timeout under CPU starvation), not a broken path.
		if j.Errors*100 > j.Ops {
			t.Errorf("%s %s: %d errors for %d ops (first: %s)", where(), kind, j.Errors, j.Ops, j.FirstError)
		}
	}
	if m.Connect != nil && (m.Connect.P50 <= 0 || m.Connect.P99 < m.Connect.P50) {
		t.Errorf("%s: latency p50 %v p99 %v", where(), m.Connect.P50, m.Connect.P99)
	}
	if m.Stream != nil && m.Stream.Bytes == 0 {
		t.Errorf("%s: stream moved no bytes", where())
	}
	// The backends saw the traffic: every one of them got connections (the
	// ClusterIP modes spread over all three), and together at least as many
	// as the client completed.
	if len(m.Backends) != 3 {
		t.Fatalf("%s: %d backend counts", where(), len(m.Backends))
	}
	var conns, udp, sink int64
	for i, b := range m.Backends {
		if b.Conns == 0 {
			t.Errorf("%s: backend %d got no connection: %+v", where(), i, m.Backends)
		}
		conns += b.Conns
		udp += b.UDP
		sink += b.SinkB
	}
	if m.Connect != nil && conns < m.Connect.Ops {
		t.Errorf("%s: backends accepted %d connections, client completed %d", where(), conns, m.Connect.Ops)
	}
	if m.UDP != nil && udp < m.UDP.Ops {
		t.Errorf("%s: backends answered %d datagrams, client got %d", where(), udp, m.UDP.Ops)
	}
	if m.Stream != nil && sink == 0 {
		t.Errorf("%s: the sink received nothing", where())
	}
	switch m.Mode {
	case ModeNFT, ModeLegacy:
		if m.EndpointUpdate == nil || m.EndpointUpdate.Median <= 0 {
			t.Errorf("%s: no endpoint update time", where())
		}
		if m.Rules == nil || m.Rules.SvcChains != n.ServicePorts || m.Rules.SepChains != 3*n.ServicePorts {
			t.Errorf("%s: rules read back %+v, want %d service chains", where(), m.Rules, n.ServicePorts)
		}
		if m.Program <= 0 {
			t.Errorf("%s: no programming time", where())
		}
	case ModeSkep:
		if m.EndpointUpdate == nil || m.EndpointUpdate.Median <= 0 {
			t.Errorf("%s: no endpoint update time", where())
		}
		if m.Program <= 0 {
			t.Errorf("%s: no programming time", where())
		}
	}
	if m.Mode != ModeDirect && (m.Ratios == nil || m.Ratios.Connect <= 0) {
		t.Errorf("%s: no ratio to direct", where())
	}
}

// checkCleanedUp: the iptables rule sets were empty after the final flush,
// no cgroup or pin directory is left, and no namespace of the run is still
// held by this process (an open fd or a thread inside it).
func checkCleanedUp(t *testing.T, rep *Report) {
	t.Helper()
	if len(rep.Cleanup.Errors) > 0 {
		t.Errorf("cleanup errors: %v", rep.Cleanup.Errors)
	}
	for _, mode := range []string{ModeNFT, ModeLegacy} {
		if empty, ok := rep.Cleanup.IptablesEmpty[mode]; !ok || !empty {
			t.Errorf("%s: rule set not verified empty after the run (%v, %v)", mode, empty, ok)
		}
	}
	if len(rep.Cleanup.Netns) != 7 {
		t.Errorf("%d namespaces recorded, want 7", len(rep.Cleanup.Netns))
	}
	for _, p := range []string{rep.Cleanup.Cgroup, rep.Cleanup.PinDir} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
	var held []string
	fds, _ := filepath.Glob("/proc/self/fd/*")
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, p := range append(fds, tasks...) {
		if l, err := os.Readlink(p); err == nil && slices.Contains(rep.Cleanup.Netns, l) {
			held = append(held, p+" → "+l)
		}
	}
	if len(held) > 0 {
		t.Errorf("namespaces of the run still held: %v", held)
	}
}

// TestCancelCleansUp cancels a run in the middle of its measurements (as
// Ctrl-C does) and checks it still removes everything.
func TestCancelCleansUp(t *testing.T) {
	requireHarness(t)
	cfg := testConfig(t)
	cfg.Services = []int{1}
	cfg.ConnDuration = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(2500*time.Millisecond, cancel)
	start := time.Now()
	rep, err := Run(ctx, cfg)
	if err == nil {
		t.Fatal("a cancelled run reported success")
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("cancelled run took %v to stop", took)
	}
	if rep == nil {
		t.Fatal("no report from a cancelled run")
	}
	checkCleanedUp(t, rep)
}

var full = flag.Bool("datapath.full", false, "BenchmarkDatapath runs the full configuration (1, 1,000, 10,000 services; minutes)")

// BenchmarkDatapath runs the harness once and reports the headline ratios:
//
//	go test -run '^$' -bench Datapath ./tools/bench              (quick)
//	go test -run '^$' -bench Datapath ./tools/bench -datapath.full
func BenchmarkDatapath(b *testing.B) {
	requireHarness(b)
	cfg := testConfig(b)
	if *full {
		cfg = FullConfig()
		cfg.ChildArgv, cfg.Skep, cfg.Log = []string{os.Args[0]}, DefaultSkep, testLogger(b)
	}
	for b.Loop() {
		rep, err := Run(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		rep.WriteTable(os.Stdout)
		for _, n := range rep.Results {
			for _, m := range n.Modes {
				if m.Ratios == nil || m.Mode == ModeDirect {
					continue
				}
				b.ReportMetric(m.Ratios.Connect, m.Mode+"-conn-x-direct@"+itoa(n.Services))
			}
		}
	}
}
