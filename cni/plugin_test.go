package cni

import (
	"net"
	"os"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/internal/testutil"
)

// Two pods on one node: ADD through libcni, the results, the node side
// (bridge, pinned MAC, hairpin, forwarding), CHECK, ping and TCP between the
// pods and to the gateway, then DEL and its idempotence.
func TestTwoPodsOnOneNode(t *testing.T) {
	n := newNetwork(t, "10.244.7.0/24")
	podA, podB := testutil.NewNetns(t), testutil.NewNetns(t)

	ra := n.mustAdd("pod-a", podA)
	rb := n.mustAdd("pod-b", podB)
	ipA, ipB := podIP(t, ra), podIP(t, rb)
	if ipA.String() != "10.244.7.2" || ipB.String() != "10.244.7.3" {
		t.Fatalf("pod addresses %s %s, want 10.244.7.2 and .3", ipA, ipB)
	}
	checkResult(t, ra, podA, "skep0")
	gw := net.ParseIP("10.244.7.1")

	// Node side.
	var br netlink.Link
	n.node.Run(t, func() (err error) { br, err = netlinksafe.LinkByName("skep0"); return err })
	if got := br.Attrs().HardwareAddr.String(); got != "0a:58:0a:f4:07:01" {
		t.Errorf("bridge mac %s, want pinned 0a:58:0a:f4:07:01", got)
	}
	if br.Attrs().MTU != 1400 {
		t.Errorf("bridge mtu %d", br.Attrs().MTU)
	}
	for _, r := range []*current.Result{ra, rb} {
		n.node.Run(t, func() error {
			host, err := netlinksafe.LinkByName(r.Interfaces[1].Name)
			if err != nil {
				return err
			}
			if host.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("%s not on the bridge", host.Attrs().Name)
			}
			pi, err := netlinksafe.LinkGetProtinfo(host)
			if err != nil {
				return err
			}
			if !pi.Hairpin {
				t.Errorf("hairpin off on %s", host.Attrs().Name)
			}
			return nil
		})
	}
	n.node.Run(t, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if strings.TrimSpace(string(b)) != "1" {
			t.Errorf("ip_forward in node = %q", b)
		}
		return err
	})

	for id, pod := range map[string]*testutil.Netns{"pod-a": podA, "pod-b": podB} {
		if err := n.check(id, pod); err != nil {
			t.Fatalf("CHECK %s: %v", id, err)
		}
	}

	ping(t, podA, ipB)
	ping(t, podB, ipA)
	ping(t, podA, gw)
	tcpRoundTrip(t, podA, podB, ipB)
	tcpRoundTrip(t, podB, podA, ipA)
	tcpRoundTrip(t, podA, n.node, gw)

	// The bridge keeps its MAC when a port with a lower MAC joins: the
	// kernel would otherwise adopt the lowest port MAC.
	n.node.Run(t, func() error {
		a := netlink.NewLinkAttrs()
		a.Name = "lowmac" + testutil.RandSuffix()[:4]
		a.HardwareAddr = net.HardwareAddr{0, 0, 0, 0, 0, 1}
		a.MasterIndex = br.Attrs().Index
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: a, PeerName: a.Name + "p"}); err != nil {
			return err
		}
		defer netlink.LinkDel(&netlink.Veth{LinkAttrs: a})
		l, err := netlinksafe.LinkByName("skep0")
		if err != nil {
			return err
		}
		if got := l.Attrs().HardwareAddr.String(); got != "0a:58:0a:f4:07:01" {
			t.Errorf("bridge mac changed to %s when a low-MAC port joined", got)
		}
		return nil
	})

	if err := n.del("pod-a", podA); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := n.del("pod-a", podA); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if err := n.check("pod-b", podB); err != nil {
		t.Fatalf("CHECK pod-b after deleting pod-a: %v", err)
	}
	var left []netlink.Link
	podA.Run(t, func() (err error) { left, err = netlinksafe.LinkList(); return err })
	if len(left) != 1 {
		t.Errorf("pod-a namespace still has %d links after DEL", len(left))
	}
	if err := n.del("pod-b", podB); err != nil {
		t.Fatalf("DEL pod-b: %v", err)
	}
	if recs := n.allocations(); len(recs) != 0 {
		t.Errorf("allocations left after DEL: %v", recs)
	}
	if v := n.skepVeths(); len(v) != 0 {
		t.Errorf("host veths left after DEL: %v", v)
	}
	// DEL for a pod whose namespace is gone, and with no netns at all.
	if err := n.delPath("pod-a", "/run/netns/gone-"+testutil.RandSuffix()); err != nil {
		t.Errorf("DEL with a vanished netns: %v", err)
	}
	if err := n.delPath("never-added", ""); err != nil {
		t.Errorf("DEL without netns: %v", err)
	}
}

// checkResult asserts the shape of an ADD result.
func checkResult(t *testing.T, r *current.Result, pod *testutil.Netns, bridge string) {
	t.Helper()
	if len(r.Interfaces) != 3 || r.Interfaces[0].Name != bridge ||
		!strings.HasPrefix(r.Interfaces[1].Name, hostVethPrefix) ||
		r.Interfaces[2].Name != "eth0" || r.Interfaces[2].Sandbox != pod.Path() {
		t.Fatalf("interfaces: %v", r.Interfaces)
	}
	if len(r.IPs) != 1 || *r.IPs[0].Interface != 2 || r.IPs[0].Gateway.String() != "10.244.7.1" ||
		r.IPs[0].Address.Mask.String() != net.CIDRMask(24, 32).String() {
		t.Fatalf("ips: %v", r.IPs)
	}
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" || !r.Routes[0].GW.Equal(r.IPs[0].Gateway) {
		t.Fatalf("routes: %v", r.Routes)
	}
	var eth0 netlink.Link
	pod.Run(t, func() (err error) { eth0, err = netlinksafe.LinkByName("eth0"); return err })
	if eth0.Attrs().HardwareAddr.String() != r.Interfaces[2].Mac || eth0.Attrs().MTU != 1400 {
		t.Fatalf("eth0 mac %s mtu %d, result %s", eth0.Attrs().HardwareAddr, eth0.Attrs().MTU, r.Interfaces[2].Mac)
	}
}

// A bridge someone else made (down, random MAC, no address) is adopted: ADD
// pins its MAC, brings it up and gives it the gateway.
func TestAdoptsExistingBridge(t *testing.T) {
	n := newNetwork(t, "10.244.24.0/24")
	n.node.Run(t, func() error {
		a := netlink.NewLinkAttrs()
		a.Name = "skep0"
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: a})
	})
	r := n.mustAdd("adopt", testutil.NewNetns(t))
	if r.Interfaces[0].Mac != "0a:58:0a:f4:18:01" {
		t.Errorf("result bridge mac %s", r.Interfaces[0].Mac)
	}
	n.node.Run(t, func() error {
		br, err := netlinksafe.LinkByName("skep0")
		if err != nil {
			return err
		}
		if br.Attrs().HardwareAddr.String() != "0a:58:0a:f4:18:01" || br.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("bridge mac %s flags %v", br.Attrs().HardwareAddr, br.Attrs().Flags)
		}
		return hasAddr(br, n.conf().GatewayNet())
	})
}

// hairpinMode false is honoured, and CHECK expects it.
func TestHairpinOff(t *testing.T) {
	n := newNetwork(t, "10.244.25.0/24", withPluginField("hairpinMode", false))
	pod := testutil.NewNetns(t)
	r := n.mustAdd("nohairpin", pod)
	n.node.Run(t, func() error {
		l, err := netlinksafe.LinkByName(r.Interfaces[1].Name)
		if err != nil {
			return err
		}
		pi, err := netlinksafe.LinkGetProtinfo(l)
		if err == nil && pi.Hairpin {
			t.Error("hairpin on with hairpinMode false")
		}
		return err
	})
	if err := n.check("nohairpin", pod); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
}
