package bpf

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// veth links a veth named a in na to one named b in nb.
func veth(t *testing.T, na ns.NetNS, a string, nb ns.NetNS, b string) {
	t.Helper()
	err := na.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
			return err
		}
		peer, err := netlink.LinkByName(b)
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(nb.Fd()))
	})
	must(t, err, "veth %s-%s", a, b)
}

// ifup brings name up in n with addr (a CIDR) if given.
func ifup(t *testing.T, n ns.NetNS, name, addr string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if addr != "" {
			a, err := netlink.ParseAddr(addr)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(l, a); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(l)
	})
	must(t, err, "up %s", name)
}

func route(t *testing.T, n ns.NetNS, dst, via string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		r := &netlink.Route{Gw: net.ParseIP(via)}
		if dst != "" {
			_, d, err := net.ParseCIDR(dst)
			if err != nil {
				return err
			}
			r.Dst = d
		}
		return netlink.RouteAdd(r)
	})
	must(t, err, "route %s via %s", dst, via)
}

// dialRead connects from n to addr and returns what the server says.
func dialRead(n ns.NetNS, network, addr string) (string, string, error) {
	var got, local string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		local = c.LocalAddr().String()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp4" {
			if _, err := c.Write([]byte("q")); err != nil {
				return err
			}
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		got = string(buf[:n])
		return nil
	})
	return got, local, err
}

// TestNodePortTraffic sends real traffic through the tcx programs:
//
//	wire netns: bridge br0 172.31.77.1 (the client) ── n0 ─┬─ node netns
//	                                                 └── r0 ─ remote node
//	node netns: n0 172.31.77.10 (uplink, tcx), p0 10.244.1.1 ── pod 10.244.1.11
//	remote node: r0 172.31.77.20, pod address 10.244.2.21 on lo
func TestNodePortTraffic(t *testing.T) {
	testNodePortTraffic(t)
}

// TestNodePortTrafficClsact is the same through the cls_bpf fallback of
// kernels without tcx.
func TestNodePortTrafficClsact(t *testing.T) {
	kernelHasTCX = func() bool { return false }
	defer func() { kernelHasTCX = func() bool { return true } }()
	testNodePortTraffic(t)
}

func testNodePortTraffic(t *testing.T) {
	wire := testutil.NewNetns(t)
	node := testutil.NewNetns(t)
	pod := testutil.NewNetns(t)
	remote := testutil.NewNetns(t, "10.244.2.21")

	err := wire.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}})
	})
	must(t, err, "bridge")
	ifup(t, wire, "br0", "172.31.77.1/24")
	veth(t, node, "n0", wire, "n0p")
	veth(t, remote, "r0", wire, "r0p")
	veth(t, node, "p0", pod, "eth0")
	err = wire.Do(func(ns.NetNS) error {
		br, _ := netlink.LinkByName("br0")
		for _, p := range []string{"n0p", "r0p"} {
			l, err := netlink.LinkByName(p)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMaster(l, br); err != nil {
				return err
			}
		}
		return nil
	})
	must(t, err, "enslave")
	ifup(t, wire, "n0p", "")
	ifup(t, wire, "r0p", "")
	ifup(t, node, "n0", "172.31.77.10/24")
	ifup(t, node, "p0", "10.244.1.1/24")
	ifup(t, pod, "eth0", "10.244.1.11/24")
	ifup(t, remote, "r0", "172.31.77.20/24")
	route(t, pod, "", "10.244.1.1")
	route(t, node, "10.244.2.0/24", "172.31.77.20")
	err = node.Do(func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	must(t, err, "forwarding")

	testutil.ServeAddrs(t, pod, 8080, "10.244.1.11")
	testutil.ServeAddrs(t, pod, 5353, "10.244.1.11")
	testutil.ServeAddrs(t, remote, 8080, "10.244.2.21")

	rulesBefore := ruleSets(t, node)
	lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
	must(t, node.Do(func(ns.NetNS) error { return lb.AttachTCX("n0") }), "attach tcx")
	for _, s := range []datapath.Service{
		{Frontend: extFrontend(30080, datapath.TCP), Name: "default/local:http", Backends: backends(datapath.BackendActive, 8080, "10.244.1.11")},
		{Frontend: extFrontend(30081, datapath.TCP), Name: "default/remote:http", Backends: backends(datapath.BackendActive, 8080, "10.244.2.21")},
		{Frontend: extFrontend(30053, datapath.UDP), Name: "default/dns:dns", Backends: backends(datapath.BackendActive, 5353, "10.244.1.11")},
	} {
		must(t, lb.UpsertService(s), "upsert %s", s.Frontend)
	}

	for _, c := range []struct{ network, addr, want string }{
		{"tcp4", "172.31.77.10:30080", "10.244.1.11:8080"},
		{"tcp4", "172.31.77.10:30081", "10.244.2.21:8080"},
		{"udp4", "172.31.77.10:30053", "10.244.1.11:5353"},
	} {
		for i := range 5 {
			got, local, err := dialRead(wire, c.network, c.addr)
			if err != nil || got != c.want {
				t.Fatalf("%s %s (try %d, from %s): got %q, %v; want %q", c.network, c.addr, i, local, got, err, c.want)
			}
		}
	}

	// The remote backend saw the node, not the client (SNAT), and each
	// flow left a conntrack pair behind.
	p, err := OpenPinned(lb.PinDir())
	must(t, err, "open pinned")
	defer p.Close()
	cts, err := p.Conntrack()
	must(t, err, "conntrack")
	snat := 0
	for _, c := range cts {
		if c.SNAT && c.Reply && c.Dst.Addr() == nodeIP {
			snat++
		}
	}
	if snat != 5 {
		t.Errorf("want 5 SNATed reply entries, have %d in %+v", snat, cts)
	}

	// The links are pinned: a second attach (a restarted proxy) swaps
	// programs in place instead of stacking a second pair.
	must(t, node.Do(func(ns.NetNS) error { return lb.AttachTCX("n0") }), "re-attach tcx")
	links, _ := filepath.Glob(filepath.Join(lb.PinDir(), "links", "tcx_*"))
	if kernelHasTCX() && len(links) != 2 {
		t.Fatalf("pinned tcx links: %v", links)
	}
	if !kernelHasTCX() {
		var filters []netlink.Filter
		err := node.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("n0")
			if err != nil {
				return err
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				fs, err := netlink.FilterList(l, parent)
				if err != nil {
					return err
				}
				filters = append(filters, fs...)
			}
			return nil
		})
		must(t, err, "list filters")
		if len(links) != 0 || len(filters) != 2 {
			t.Fatalf("cls_bpf fallback: links %v, filters %v", links, filters)
		}
	}
	if got, _, err := dialRead(wire, "tcp4", "172.31.77.10:30080"); err != nil || got != "10.244.1.11:8080" {
		t.Fatalf("after re-attach: %q %v", got, err)
	}
	if after := ruleSets(t, node); !bytes.Equal(rulesBefore, after) {
		t.Errorf("iptables/nftables rules changed:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
}
