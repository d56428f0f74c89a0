package bpf

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/proxy/datapath"
)

func tcpFrontend(ip string, port uint16) datapath.Frontend {
	return datapath.Frontend{IP: netip.MustParseAddr(ip), Port: port, Proto: datapath.TCP}
}

func backends(state datapath.BackendState, port uint16, ips ...string) []datapath.Backend {
	var out []datapath.Backend
	for _, ip := range ips {
		out = append(out, datapath.Backend{IP: netip.MustParseAddr(ip), Port: port, State: state})
	}
	return out
}

// mapCounts counts the entries of the service, backend and rev-NAT maps.
func mapCounts(t *testing.T, lb *LB) (svcs, bes, revs int) {
	t.Helper()
	m := &lb.objs.lbMaps
	must(t, batchRead(m.Lb4Services, func(*lbLb4Key, *lbLb4Service) { svcs++ }), "read services")
	must(t, batchRead(m.Lb4Backends, func(*uint32, *lbLb4Backend) { bes++ }), "read backends")
	must(t, batchRead(m.Lb4Revnat, func(*uint16, *lbLb4Revnat) { revs++ }), "read revnat")
	return
}

func TestUpsertReadBackAndAdopt(t *testing.T) {
	lb := newTestLB(t, Options{})
	web := datapath.Service{
		Frontend:        tcpFrontend("10.96.0.10", 80),
		Name:            "default/web:http",
		Backends:        append(backends(datapath.BackendActive, 8080, "10.244.1.11", "10.244.1.12"), backends(datapath.BackendTerminating, 8080, "10.244.1.13")...),
		AffinityTimeout: 3 * time.Hour,
	}
	// dns shares one endpoint with web's port space but not its protocol.
	dns := datapath.Service{
		Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.53"), Port: 53, Proto: datapath.UDP},
		Name:     "kube-system/dns:dns",
		Backends: backends(datapath.BackendActive, 8080, "10.244.1.11"),
	}
	// api shares web's first endpoint: one backend id, two references.
	api := datapath.Service{
		Frontend: tcpFrontend("10.96.0.1", 443),
		Name:     "default/kubernetes:https",
		Backends: backends(datapath.BackendActive, 8080, "10.244.1.11"),
	}
	for _, s := range []datapath.Service{web, dns, api} {
		must(t, lb.UpsertService(s), "upsert %s", s.Frontend)
	}
	got, err := lb.Services()
	must(t, err, "services")
	want := []datapath.Service{api, web, dns} // sorted by frontend address
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back:\n got %+v\nwant %+v", got, want)
	}
	svcs, bes, revs := mapCounts(t, lb)
	if svcs != 4+2+2 || bes != 4 || revs != 3 {
		t.Fatalf("map entries: services %d backends %d revnat %d, want 8 4 3", svcs, bes, revs)
	}

	// A new process adopts the pinned maps and sees the same services.
	lb2, err := Load(Options{PinDir: lb.PinDir()})
	must(t, err, "reload")
	defer lb2.Close()
	got2, err := lb2.Services()
	must(t, err, "services after reload")
	if !reflect.DeepEqual(got2, want) {
		t.Fatalf("after reload:\n got %+v\nwant %+v", got2, want)
	}
	// Its allocators continue where the maps are: a new service gets a
	// fresh id and a shrink releases only what nobody else names.
	web.Backends = backends(datapath.BackendActive, 8080, "10.244.1.12")
	must(t, lb2.UpsertService(web), "shrink web")
	extra := datapath.Service{Frontend: tcpFrontend("10.96.0.20", 80), Name: "default/extra:http", Backends: backends(datapath.BackendActive, 80, "10.244.1.20")}
	must(t, lb2.UpsertService(extra), "upsert extra")
	svcs, bes, revs = mapCounts(t, lb2)
	// web 1+1, dns 1+1, api 1+1, extra 1+1; backends .11/tcp .11/udp .12 .20
	if svcs != 8 || bes != 4 || revs != 4 {
		t.Fatalf("after shrink: services %d backends %d revnat %d, want 8 4 4", svcs, bes, revs)
	}
	ids := map[uint16]bool{}
	for _, s := range lb2.st.services {
		if ids[s.revNat] {
			t.Fatalf("rev-nat id %d used twice", s.revNat)
		}
		ids[s.revNat] = true
	}

	for _, f := range []datapath.Frontend{web.Frontend, dns.Frontend, api.Frontend, extra.Frontend} {
		must(t, lb2.DeleteService(f), "delete %s", f)
	}
	svcs, bes, revs = mapCounts(t, lb2)
	if svcs != 0 || bes != 0 || revs != 0 {
		t.Fatalf("after delete: services %d backends %d revnat %d, want none", svcs, bes, revs)
	}
}

func TestRejectsBadInput(t *testing.T) {
	lb := newTestLB(t, Options{})
	bad := []datapath.Service{
		{Frontend: datapath.Frontend{IP: netip.MustParseAddr("fd00::1"), Port: 80, Proto: datapath.TCP}},
		{Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.1"), Port: 80, Proto: 1}},
		{Frontend: tcpFrontend("10.96.0.1", 80), Backends: backends(datapath.BackendActive, 80, "fd00::2")},
	}
	for _, s := range bad {
		if err := lb.UpsertService(s); err == nil {
			t.Errorf("upsert %+v: want an error", s)
		}
	}
}

// TestAdoptCleansStrays: a writer that died between writing slots and slot 0
// leaves slots of no service and unreferenced backends; the next Load
// deletes them and the service can be written again.
func TestAdoptCleansStrays(t *testing.T) {
	lb := newTestLB(t, Options{})
	f := tcpFrontend("10.96.0.10", 80)
	k := frontendKey(f, 1)
	must(t, lb.objs.Lb4Backends.Put(uint32(7), &lbLb4Backend{Address: ip4(netip.MustParseAddr("10.244.1.11")), Port: port16(8080), Proto: 6}), "put backend")
	must(t, lb.objs.Lb4Services.Put(&k, &lbLb4Service{BackendId: 7}), "put slot")
	lb2, err := Load(Options{PinDir: lb.PinDir()})
	must(t, err, "reload")
	defer lb2.Close()
	if s, b, r := mapCounts(t, lb2); s != 0 || b != 0 || r != 0 {
		t.Fatalf("after adoption: services %d backends %d revnat %d, want none", s, b, r)
	}
	must(t, lb2.UpsertService(datapath.Service{Frontend: f, Backends: backends(datapath.BackendActive, 8080, "10.244.1.11")}), "upsert")
	if s, b, r := mapCounts(t, lb2); s != 2 || b != 1 || r != 1 {
		t.Fatalf("after upsert: services %d backends %d revnat %d", s, b, r)
	}
}

// TestLoadWithoutSockDestroy loads as on a kernel before 6.5: everything but
// the UDP socket terminator, and removing a UDP backend still works.
func TestLoadWithoutSockDestroy(t *testing.T) {
	kernelHasSockDestroy = func() bool { return false }
	defer func() { kernelHasSockDestroy = haveSockDestroy }()
	lb := newTestLB(t, Options{})
	if lb.objs.SockUdpTerm != nil || lb.objs.SockConnect4 == nil || lb.objs.TcNodeportIn == nil {
		t.Fatalf("programs: %+v", lb.objs.lbPrograms)
	}
	dns := datapath.Service{Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.53"), Port: 53, Proto: datapath.UDP}, Backends: backends(datapath.BackendActive, 53, "10.244.1.11")}
	must(t, lb.UpsertService(dns), "upsert")
	must(t, lb.DeleteService(dns.Frontend), "delete")
}

// TestMappedAddresses: IPv4 addresses in their 16-byte form (from a net.IP)
// are the same frontend and backends.
func TestMappedAddresses(t *testing.T) {
	lb := newTestLB(t, Options{})
	mapped := func(s string) netip.Addr { return netip.AddrFrom16(netip.MustParseAddr(s).As16()) }
	svc := datapath.Service{
		Frontend: datapath.Frontend{IP: mapped("10.96.0.10"), Port: 80, Proto: datapath.TCP},
		Backends: []datapath.Backend{{IP: mapped("10.244.1.11"), Port: 8080}},
	}
	must(t, lb.UpsertService(svc), "upsert")
	got, err := lb.Services()
	must(t, err, "services")
	if len(got) != 1 || got[0].Frontend.IP != netip.MustParseAddr("10.96.0.10") || got[0].Backends[0].IP != netip.MustParseAddr("10.244.1.11") {
		t.Fatalf("read back %+v", got)
	}
	must(t, lb.DeleteService(svc.Frontend), "delete")
	if s, b, r := mapCounts(t, lb); s+b+r != 0 {
		t.Fatalf("left %d %d %d entries", s, b, r)
	}
}

// TestAttachCgroupGuards: the root cgroup needs an explicit opt-in, and a
// path outside cgroup v2 is refused with a clear error.
func TestAttachCgroupGuards(t *testing.T) {
	lb := newTestLB(t, Options{})
	root, err := cgroup2.Mount()
	must(t, err, "cgroup2 mount")
	if err := lb.AttachCgroup(root); err == nil {
		t.Fatal("attached to the root cgroup without AllowRootCgroup")
	}
	if err := lb.AttachCgroup(t.TempDir()); err == nil {
		t.Fatal("attached to a directory outside cgroup v2")
	}
	if links, _ := filepath.Glob(filepath.Join(lb.PinDir(), "links", "*")); len(links) != 0 {
		t.Fatalf("links left: %v", links)
	}
}
