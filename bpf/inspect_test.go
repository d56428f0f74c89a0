package bpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/skep-dev/skep/proxy/datapath"
)

func TestPinnedView(t *testing.T) {
	lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
	web := datapath.Service{Frontend: extFrontend(30080, datapath.TCP), Name: "default/web:http",
		Backends: append(backends(datapath.BackendActive, 8080, "10.244.2.21"), backends(datapath.BackendTerminating, 8080, "10.244.1.12")...), AffinityTimeout: time.Minute}
	empty := datapath.Service{Frontend: tcpFrontend("10.96.0.12", 80), Name: "default/empty:http"}
	must(t, lb.UpsertService(web), "upsert")
	must(t, lb.UpsertService(empty), "upsert")
	for range 3 {
		run(t, lb.objs.TcNodeportIn, packet(datapath.TCP, client, ap("172.31.77.10:30080"), "abc"))
	}

	p, err := OpenPinned(lb.PinDir())
	must(t, err, "open pinned")
	defer p.Close()
	svcs, err := p.Services()
	must(t, err, "services")
	if len(svcs) != 2 {
		t.Fatalf("%d services", len(svcs))
	}
	e, w := svcs[0], svcs[1] // 10.96.0.12 sorts first
	if e.Name != "default/empty:http" || len(e.Slots) != 0 {
		t.Fatalf("empty service: %+v", e)
	}
	if w.Name != "default/web:http" || len(w.Slots) != 2 || w.Slots[1].Backend.State != datapath.BackendTerminating || w.AffinityTimeout != time.Minute {
		t.Fatalf("web service: %+v", w)
	}
	if w.Counters.Packets != 3 || w.Counters.Bytes == 0 || w.Counters.Connects != 1 {
		t.Fatalf("web counters: %+v", w.Counters)
	}
	counts, err := lb.ServiceCounters()
	must(t, err, "service counters")
	if c := counts[web.Frontend]; c.Packets != 3 || c.Connections != 1 || c.Bytes != w.Counters.Bytes || len(counts) != 2 {
		t.Fatalf("ServiceCounters: %+v", counts)
	}
	bes, err := p.Backends()
	must(t, err, "backends")
	if len(bes) != 2 || bes[0].Addr != netip.MustParseAddrPort("10.244.2.21:8080") || bes[1].State != datapath.BackendTerminating {
		t.Fatalf("backends: %+v", bes)
	}
	cts, err := p.Conntrack()
	must(t, err, "conntrack")
	if len(cts) != 2 {
		t.Fatalf("conntrack: %+v", cts)
	}
	for _, c := range cts {
		if !c.SNAT || c.BackendID != bes[0].ID || c.ServiceID != w.ID {
			t.Errorf("conntrack entry: %+v", c)
		}
		if c.Reply && (c.Frontend != ap("172.31.77.10:30080") || c.NAT != client) {
			t.Errorf("reply entry: %+v", c)
		}
	}
}
