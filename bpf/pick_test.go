package bpf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// headOf reads a frontend's slot 0 from the map.
func headOf(t *testing.T, lb *LB, f datapath.Frontend) lbLb4Service {
	t.Helper()
	var h lbLb4Service
	k := frontendKey(f, 0)
	must(t, lb.objs.Lb4Services.Lookup(&k, &h), "lookup slot 0 of %s", f)
	return h
}

// raceBank puts the maps in the state a reader meets when a writer has
// begun the service's next-but-one generation in the bank the reader is
// using: slot 0 still says 4 Active backends of generation g, but slots
// 2..4 of bank g&1 now belong to generation g+2 and name a Terminating
// backend (or, with state Active, a backend of some other service: only the
// generation tells the slot is not the reader's). Only slot 1 is still the
// reader's.
func raceBank(t *testing.T, lb *LB, f datapath.Frontend, term netip.AddrPort, state datapath.BackendState) {
	t.Helper()
	h := headOf(t, lb, f)
	if h.Count != 4 || h.Gen == 0 {
		t.Fatalf("slot 0 of %s: %+v, want count 4 and a generation", f, h)
	}
	const termID = 9000
	must(t, lb.objs.Lb4Backends.Put(uint32(termID), &lbLb4Backend{
		Address: ip4(term.Addr()), Port: port16(term.Port()), Proto: uint8(f.Proto),
		State: uint8(state),
	}), "put foreign backend")
	for slot := uint16(2); slot <= 4; slot++ {
		k := slotKey(f, h.Gen, slot)
		must(t, lb.objs.Lb4Services.Put(&k, &lbLb4Service{BackendId: termID, Gen: h.Gen + 2}), "put slot %d", slot)
	}
}

// TestPickSkipsSlotsOfAnotherGeneration: a reader that read slot 0 and
// then finds a slot written for another generation (a writer replaced the
// service in between) never takes it: the tc path and the socket-LB share
// pick_backend, and both end on the one slot that is still the reader's.
// Before slots carried their generation, 3 of 4 picks went to the
// Terminating backend a rewritten slot named.
func TestPickSkipsSlotsOfAnotherGeneration(t *testing.T) {
	active := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13", "10.244.1.14"}
	term := netip.MustParseAddrPort("10.244.1.99:8080")

	for _, state := range []datapath.BackendState{datapath.BackendTerminating, datapath.BackendActive} {
		t.Run("tc/foreign-"+map[datapath.BackendState]string{0: "active", 1: "terminating"}[state], func(t *testing.T) {
			lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
			f := extFrontend(30080, datapath.TCP)
			must(t, lb.UpsertService(datapath.Service{Frontend: f, Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, active...)}), "upsert")
			raceBank(t, lb, f, term, state)
			seen := map[netip.AddrPort]int{}
			for i := range 200 {
				c := netip.AddrPortFrom(client.Addr(), uint16(20000+i))
				ret, b := run(t, lb.objs.TcNodeportIn, packet(datapath.TCP, c, ap("172.31.77.10:30080"), ""))
				if ret != tcActOK {
					t.Fatalf("verdict %d, want TC_ACT_OK", ret)
				}
				_, d := tuple(t, b)
				seen[d]++
			}
			if len(seen) != 1 || seen[ap("10.244.1.11:8080")] != 200 {
				t.Fatalf("new flows went to %v, want all 200 to 10.244.1.11:8080 (the only slot of the generation read)", seen)
			}
		})
	}

	t.Run("socket", func(t *testing.T) {
		testutil.RequireBinary(t, "nsenter")
		n := testutil.NewNetns(t, append(active, term.Addr().String())...)
		testutil.ServeAddrs(t, n, 8080, append(active, term.Addr().String())...)
		lb := newTestLB(t, Options{NodeIP: nodeIP})
		cg := testutil.NewCgroup(t)
		must(t, lb.AttachCgroup(cg), "attach cgroup")
		f := tcpFrontend("10.96.0.10", 80)
		must(t, lb.UpsertService(datapath.Service{Frontend: f, Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, active...)}), "upsert")
		raceBank(t, lb, f, term, datapath.BackendTerminating)
		res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.10:80", N: 200}, nil)
		if len(res.Errnos) > 0 || len(res.Counts) != 1 || res.Counts["10.244.1.11:8080"] != 200 {
			t.Fatalf("connects: %v errors %v, want all 200 to 10.244.1.11:8080", res.Counts, res.Errnos)
		}
	})
}

// slotsInMap lists a frontend's slot keys (bank, slot) and generations.
func slotsInMap(t *testing.T, lb *LB, f datapath.Frontend) map[[2]uint16]uint32 {
	t.Helper()
	out := map[[2]uint16]uint32{}
	must(t, batchRead(lb.objs.Lb4Services, func(k *lbLb4Key, v *lbLb4Service) {
		if keyFrontend(k) == f && k.Slot > 0 {
			out[[2]uint16{k.Bank, k.Slot}] = v.Gen
		}
	}), "read services")
	return out
}

// TestUpsertGenerations: a service whose slots change is written whole
// into the other bank under a new generation and the old bank is deleted;
// one that only loses a tail, or only changes its count, keeps its
// generation and bank. Restart (Load on the same pins) keeps generations
// unique.
func TestUpsertGenerations(t *testing.T) {
	lb := newTestLB(t, Options{})
	f := tcpFrontend("10.96.0.10", 80)
	ips := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13", "10.244.1.14"}
	upsert := func(l *LB, bes []datapath.Backend) lbLb4Service {
		t.Helper()
		must(t, l.UpsertService(datapath.Service{Frontend: f, Name: "default/web:http", Backends: bes}), "upsert")
		return headOf(t, lb, f)
	}
	check := func(h lbLb4Service, n int) {
		t.Helper()
		slots := slotsInMap(t, lb, f)
		if len(slots) != n {
			t.Fatalf("%d slots in the map, want %d: %v", len(slots), n, slots)
		}
		for k, g := range slots {
			if k[0] != uint16(h.Gen&1) || g != h.Gen || int(k[1]) > n {
				t.Fatalf("slot %v has generation %d; slot 0 says generation %d, %d slots", k, g, h.Gen, n)
			}
		}
	}

	h1 := upsert(lb, backends(datapath.BackendActive, 8080, ips...))
	check(h1, 4)

	// Replace: other bank, new generation, old bank gone.
	h2 := upsert(lb, backends(datapath.BackendActive, 8080, ips[0], "10.244.1.21", "10.244.1.22"))
	if h2.Gen == h1.Gen || h2.Gen&1 == h1.Gen&1 || h2.Count != 3 {
		t.Fatalf("replace: slot 0 %+v after %+v, want a new generation in the other bank", h2, h1)
	}
	check(h2, 3)

	// Shrink by a tail: same generation.
	h3 := upsert(lb, backends(datapath.BackendActive, 8080, ips[0], "10.244.1.21"))
	if h3.Gen != h2.Gen || h3.Count != 2 {
		t.Fatalf("tail shrink: slot 0 %+v after %+v, want generation kept", h3, h2)
	}
	check(h3, 2)

	// Same slots, one now Terminating: the count alone changes... but the
	// order is Active first, so a backend turning Terminating moves it
	// behind the others: here it is already last, so the slots stay.
	bes := backends(datapath.BackendActive, 8080, ips[0], "10.244.1.21")
	bes[1].State = datapath.BackendTerminating
	h4 := upsert(lb, bes)
	if h4.Gen != h3.Gen || h4.Count != 1 || h4.Qcount != 1 {
		t.Fatalf("state change: slot 0 %+v after %+v, want generation kept, count 1 qcount 1", h4, h3)
	}
	check(h4, 2)

	// A restarted writer continues past every generation in the maps.
	lb2, err := Load(Options{PinDir: lb.PinDir()})
	must(t, err, "reload")
	defer lb2.Close()
	h5 := upsert(lb2, backends(datapath.BackendActive, 8080, ips...))
	if h5.Gen <= h4.Gen || h5.Gen&1 == h4.Gen&1 {
		t.Fatalf("after restart: generation %d after %d", h5.Gen, h4.Gen)
	}
	check(h5, 4)
	svcs, err := lb2.Services()
	must(t, err, "services")
	if len(svcs) != 1 || len(svcs[0].Backends) != 4 {
		t.Fatalf("read back: %+v", svcs)
	}
}

// TestLongServiceNameKept: the longest name Kubernetes allows,
// "namespace/name:portname" of 63+1+63+1+15 = 143 bytes, is stored whole
// (the proxy compares names when it adopts the maps; 128 bytes cut it).
func TestLongServiceNameKept(t *testing.T) {
	lb := newTestLB(t, Options{})
	name := strings.Repeat("n", 63) + "/" + strings.Repeat("s", 63) + ":" + strings.Repeat("p", 15)
	if len(name) != 143 {
		t.Fatalf("name is %d bytes", len(name))
	}
	f := tcpFrontend("10.96.0.10", 80)
	must(t, lb.UpsertService(datapath.Service{Frontend: f, Name: name, Backends: backends(datapath.BackendActive, 8080, "10.244.1.11")}), "upsert")
	svcs, err := lb.Services()
	must(t, err, "services")
	if len(svcs) != 1 || svcs[0].Name != name {
		t.Fatalf("read back %q, want %q", svcs[0].Name, name)
	}
	lb2, err := Load(Options{PinDir: lb.PinDir()})
	must(t, err, "reload")
	defer lb2.Close()
	if got := lb2.st.services[f].name; got != name {
		t.Fatalf("adopted name %q, want %q", got, name)
	}
}
