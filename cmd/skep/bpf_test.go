package main

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// ctKey and ctEntry mirror struct lb4_ct_key and lb4_ct_entry (bpf/lb.h):
// the test writes conntrack entries the way the tc program does.
type ctKey struct {
	Saddr, Daddr [4]byte
	Sport, Dport [2]byte
	Proto, Dir   uint8
	Pad          uint16
}

type ctEntry struct {
	BackendID   uint32
	RevNatID    uint16
	Flags, Pad  uint8
	Addr, Vaddr [4]byte
	Port, Vport [2]byte
	LastSeen    uint32
	Created     uint64
}

// counters mirrors struct lb4_counters.
type counters struct{ Connects, Packets, Bytes, Refused uint64 }

func be16(p uint16) (b [2]byte) { binary.BigEndian.PutUint16(b[:], p); return b }

func addr(s string) [4]byte { return netip.MustParseAddr(s).As4() }

// tableRows runs `skep bpf what --pin-dir dir` and returns its lines with
// the columns' padding squeezed to one space.
func tableRows(t *testing.T, what, dir string) []string {
	t.Helper()
	var out bytes.Buffer
	if err := printBPF(&out, []string{what, "--pin-dir", dir}); err != nil {
		t.Fatalf("skep bpf %s: %v", what, err)
	}
	var rows []string
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	return rows
}

func assertRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("skep bpf %s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBPFTables programs services, counters and conntrack entries into maps
// pinned for the test and checks the rows `skep bpf` prints for them.
func TestBPFTables(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(bpf.PinRoot, "test-skepbpf-"+testutil.RandSuffix())
	lb, err := bpf.Load(bpf.Options{PinDir: dir, NodeIP: netip.MustParseAddr("172.31.77.10")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lb.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})

	be := func(ip string, port uint16, st datapath.BackendState) datapath.Backend {
		return datapath.Backend{IP: netip.MustParseAddr(ip), Port: port, State: st}
	}
	for _, s := range []datapath.Service{
		// Service ids 1, 2, 3; backend ids 1, 2, 3 in slot order
		// (Active first), then 4.
		{Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: datapath.TCP},
			Name: "default/web:http", AffinityTimeout: 3 * time.Hour,
			Backends: []datapath.Backend{be("10.244.1.11", 8080, datapath.BackendActive), be("10.244.1.13", 8080, datapath.BackendTerminating), be("10.244.1.12", 8080, datapath.BackendActive)}},
		{Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.12"), Port: 53, Proto: datapath.UDP},
			Name: "default/empty:dns"},
		{Frontend: datapath.Frontend{IP: netip.IPv4Unspecified(), Port: 30080, Proto: datapath.TCP, Scope: datapath.ScopeExternal},
			Name: "default/web:http", Backends: []datapath.Backend{be("10.244.2.21", 8080, datapath.BackendActive)}},
	} {
		if err := lb.UpsertService(s); err != nil {
			t.Fatalf("upsert %s: %v", s.Frontend, err)
		}
	}

	// Counters of service 1, spread over the CPUs as the programs count.
	cm, err := ebpf.LoadPinnedMap(filepath.Join(dir, "lb4_counters"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	percpu := make([]counters, ebpf.MustPossibleCPU())
	percpu[0] = counters{Connects: 5, Refused: 1}
	percpu[len(percpu)-1].Connects += 2
	if err := cm.Put(uint32(1), percpu); err != nil {
		t.Fatalf("put counters: %v", err)
	}
	// A SNATed NodePort flow to backend 4 (10.244.2.21) of service 3.
	ct, err := ebpf.LoadPinnedMap(filepath.Join(dir, "lb4_ct"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	created := uint64(ts.Nano()) - uint64(90*time.Second)
	fwdK := ctKey{Saddr: addr("172.31.77.1"), Daddr: addr("172.31.77.10"), Sport: be16(40001), Dport: be16(30080), Proto: 6, Dir: 0}
	fwdV := ctEntry{BackendID: 4, RevNatID: 3, Flags: 1, Addr: addr("172.31.77.10"), Port: be16(45000), Created: created}
	revK := ctKey{Saddr: addr("10.244.2.21"), Daddr: addr("172.31.77.10"), Sport: be16(8080), Dport: be16(45000), Proto: 6, Dir: 1}
	revV := ctEntry{BackendID: 4, RevNatID: 3, Flags: 1, Addr: addr("172.31.77.1"), Port: be16(40001), Vaddr: addr("172.31.77.10"), Vport: be16(30080), Created: created}
	if err := ct.Put(&fwdK, &fwdV); err != nil {
		t.Fatalf("put ct: %v", err)
	}
	if err := ct.Put(&revK, &revV); err != nil {
		t.Fatalf("put ct: %v", err)
	}

	assertRows(t, "services", tableRows(t, "services", dir), []string{
		"SERVICE ADDRESS SCOPE ID NAME AFFINITY SLOT BACKEND ADDRESS (ID) [STATE] CONNECTS PACKETS REFUSED",
		"0.0.0.0:30080/TCP external 3 default/web:http - 1 10.244.2.21:8080 (4) [active] 0 0 0",
		"10.96.0.10:80/TCP internal 1 default/web:http 3h0m0s 1 10.244.1.11:8080 (1) [active] 7 0 1",
		"2 10.244.1.12:8080 (2) [active]",
		"3 10.244.1.13:8080 (3) [terminating]",
		"10.96.0.12:53/UDP internal 2 default/empty:dns - - (no backends: refused) 0 0 0",
	})
	assertRows(t, "backends", tableRows(t, "backends", dir), []string{
		"ID ADDRESS PROTO STATE",
		"1 10.244.1.11:8080 TCP active",
		"2 10.244.1.12:8080 TCP active",
		"3 10.244.1.13:8080 TCP terminating",
		"4 10.244.2.21:8080 TCP active",
	})
	assertRows(t, "conntrack", tableRows(t, "conntrack", dir), []string{
		"DIR PROTO SOURCE DESTINATION SERVICE ID BACKEND ID TRANSLATION AGE",
		"reply TCP 10.244.2.21:8080 172.31.77.10:45000 3 4 src→172.31.77.10:30080 dst→172.31.77.1:40001 1m30s",
		"service TCP 172.31.77.1:40001 172.31.77.10:30080 3 4 snat src→172.31.77.10:45000 1m30s",
	})

	if err := printBPF(&bytes.Buffer{}, []string{"nonsense", "--pin-dir", dir}); err == nil {
		t.Fatal("skep bpf nonsense: want an error")
	}
}
