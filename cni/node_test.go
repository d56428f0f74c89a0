package cni

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/internal/testutil"
)

// A pod on one node reaches a pod on another through host-gw routes: each
// node routes the other's pod range via the other's underlay address, the way
// the node agent will.
func TestCrossNodeHostGW(t *testing.T) {
	node1, node2 := testutil.NewNetns(t), testutil.NewNetns(t)
	// The underlay: one veth between the two nodes.
	node1.Run(t, func() error {
		a := netlink.NewLinkAttrs()
		a.Name = "ul0"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: a, PeerName: "ul0", PeerNamespace: netlink.NsFd(int(node2.Fd()))})
	})
	underlay := map[*testutil.Netns]string{node1: "172.31.77.1/24", node2: "172.31.77.2/24"}
	for node, addr := range underlay {
		node.Run(t, func() error {
			l, err := netlinksafe.LinkByName("ul0")
			if err != nil {
				return err
			}
			ipn, _ := netlink.ParseIPNet(addr)
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		})
	}
	n1 := newNetwork(t, "10.244.21.0/24", withNode(node1))
	n2 := newNetwork(t, "10.244.22.0/24", withNode(node2))
	p1, p2 := testutil.NewNetns(t), testutil.NewNetns(t)
	ip1 := podIP(t, n1.mustAdd("p1", p1))
	ip2 := podIP(t, n2.mustAdd("p2", p2))

	route := func(node *testutil.Netns, dst, via string) {
		node.Run(t, func() error {
			_, d, _ := net.ParseCIDR(dst)
			return netlink.RouteAdd(&netlink.Route{Dst: d, Gw: net.ParseIP(via)})
		})
	}
	route(node1, "10.244.22.0/24", "172.31.77.2")
	route(node2, "10.244.21.0/24", "172.31.77.1")

	ping(t, p1, ip2)
	ping(t, p2, ip1)
	tcpRoundTrip(t, p1, p2, ip2)
	tcpRoundTrip(t, p2, p1, ip1)

	if err := n1.del("p1", p1); err != nil {
		t.Fatal(err)
	}
	if err := n2.del("p2", p2); err != nil {
		t.Fatal(err)
	}
}

// The real cnitool (what a person debugging a node would use) drives ADD,
// CHECK, DEL, GC and STATUS. cnitool runs in the node's namespace with its
// libcni cache bind-mounted from a temp dir (ip netns exec gives each run a
// private mount namespace), so nothing is written under /var/lib.
func TestCnitool(t *testing.T) {
	cnitool := testutil.RequireBinary(t, "cnitool")
	n := newNetwork(t, "10.244.23.0/24")
	confDir, cache, emptyCache := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "10-skep.conflist"), n.confList(), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(cacheDir string, args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.node.Name, "sh", "-c",
			`mount --bind "$CACHE" /var/lib && exec "$CNITOOL" "$@"`, "sh"}, args...)...)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+pluginDir,
			"CNI_IFNAME=eth0", "CACHE="+cacheDir, "CNITOOL="+cnitool)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(cache, args...)
		if err != nil {
			t.Fatalf("cnitool %v: %v\n%s", args, err, out)
		}
		return out
	}

	must("status", n.name, "/unused")
	pod1, pod2 := testutil.NewNetns(t), testutil.NewNetns(t)
	var ips []net.IP
	for _, pod := range []*testutil.Netns{pod1, pod2} {
		out := must("add", n.name, pod.Path())
		var r current.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("cnitool add output: %v\n%s", err, out)
		}
		if r.CNIVersion != "1.1.0" {
			t.Errorf("result version %q", r.CNIVersion)
		}
		ips = append(ips, podIP(t, &r))
		must("check", n.name, pod.Path())
	}
	ping(t, pod1, ips[1])
	if got := len(n.allocations()); got != 2 {
		t.Fatalf("%d allocations after two adds", got)
	}

	must("del", n.name, pod1.Path())
	must("del", n.name, pod1.Path()) // idempotent
	if out, err := run(cache, "check", n.name, pod1.Path()); err == nil {
		t.Fatalf("check after del passed: %s", out)
	}
	recs := n.allocations()
	if len(recs) != 1 || !strings.HasPrefix(recs[0].ContainerID, "cnitool-") {
		t.Fatalf("after del: %v", recs)
	}

	// cnitool gc names no valid attachments, and with an empty libcni cache
	// only the plugin's own GC can find pod2's allocation and veth.
	if out, err := run(emptyCache, "gc", n.name, "/unused"); err != nil {
		t.Fatalf("cnitool gc: %v\n%s", err, out)
	}
	if recs := n.allocations(); len(recs) != 0 {
		t.Fatalf("allocations after gc: %v", recs)
	}
	if v := n.skepVeths(); len(v) != 0 {
		t.Fatalf("veths after gc: %v", v)
	}
	must("status", n.name, "/unused")
}
