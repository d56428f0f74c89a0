package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// TestShrinkNeverPicksTerminating: while a service's Active set shrinks and
// grows again at kHz rates, no new connect reaches a Terminating backend and
// none fails. It once did (10-36 of 22-47k connects): slots were rewritten in
// place before slot 0, so a reader holding the old, larger count could pick
// a slot that already named a Terminating backend. Now a replaced service's
// slots go to the other bank under a new generation and slot 0 flips to them
// (bpf/lb.h). The service also loses a tail (same generation, count first)
// on every third round.
func TestShrinkNeverPicksTerminating(t *testing.T) {
	requireIntegration(t)
	addrs := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13", "10.244.1.14", "10.244.200.2", "10.244.200.3", "10.244.200.4"}
	n := testutil.NewNetns(t, addrs...)
	testutil.ServeAddrs(t, n, 8080, addrs...)
	cg := testutil.NewCgroup(t)
	lb := loadLB(t)
	if err := lb.AttachCgroup(cg); err != nil {
		t.Fatal(err)
	}
	b := func(ip string, st datapath.BackendState) datapath.Backend {
		return datapath.Backend{IP: netip.MustParseAddr(ip), Port: 8080, State: st}
	}
	big := datapath.Service{Frontend: churnFrontend, Name: "default/x:http", Backends: []datapath.Backend{
		b(addrs[0], datapath.BackendActive), b(addrs[1], datapath.BackendActive),
		b(addrs[2], datapath.BackendActive), b(addrs[3], datapath.BackendActive)}}
	// The Terminating ones serve (their replies name them): none may be
	// picked for a new connect.
	small := datapath.Service{Frontend: churnFrontend, Name: "default/x:http", Backends: []datapath.Backend{
		b(addrs[0], datapath.BackendActive), b(addrs[4], datapath.BackendTerminating),
		b(addrs[5], datapath.BackendTerminating), b(addrs[6], datapath.BackendTerminating)}}
	// big with its last two backends gone: a tail shrink.
	tail := datapath.Service{Frontend: churnFrontend, Name: "default/x:http", Backends: big.Backends[:2]}
	if err := lb.UpsertService(big); err != nil {
		t.Fatal(err)
	}
	stop := startClient(t, cg, n, "10.96.0.10:80")
	ups := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); ups += 2 {
		next := small
		if ups%6 == 4 {
			next = tail
		}
		if err := lb.UpsertService(next); err != nil {
			t.Fatal(err)
		}
		if err := lb.UpsertService(big); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Microsecond)
	}
	log := stop()
	term, fails := 0, 0
	for _, a := range log {
		if strings.HasPrefix(a.Reply, "10.244.200.") {
			term++
		}
		if a.Err != "" {
			fails++
		}
	}
	t.Logf("%d upserts, %d connects, %d to Terminating backends, %d failed", ups, len(log), term, fails)
	if term > 0 || fails > 0 {
		t.Fatalf("%d new connects reached a Terminating backend, %d failed", term, fails)
	}
}
