package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
)

// Addresses of the bench topology. Every one of them lives only inside the
// namespaces the harness creates; the root namespace gets no address, route
// or link from it.
var (
	podSubnet  = netip.MustParsePrefix("10.244.77.0/24")
	gatewayIP  = netip.MustParseAddr("10.244.77.1")     // on the node's bridge
	serviceNet = netip.MustParsePrefix("10.96.0.0/12")  // routed to the gateway from clients
	clusterNet = netip.MustParsePrefix("10.244.0.0/16") // kube-proxy's --cluster-cidr
)

// Pod is one pod-like network namespace attached to the node's bridge.
type Pod struct {
	Name string     // label, "<prefix>-<role>", for logs and reports
	IP   netip.Addr // address on its pod0 interface
	NS   ns.NetNS   // open handle, closed by Topology.Close
	Path string     // /proc/<pid>/fd/<fd>: how children enter it
	ID   string     // "net:[inode]", as /proc/*/ns/net links show it
}

// Topology is a node netns with a bridge and pods on it:
//
//	node netns:  br0 10.244.77.1/24 ── veths ── pod netns (pod0)
//	clients:     cli (plain: direct and skep), nft, legacy (kube-proxy rules)
//	backends:    be0, be1, be2 running the echo servers
//
// Each iptables backend gets its own client netns so the nft and legacy rule
// sets are programmed once per service count and never see each other's
// hooks, while direct and skep share a client netns that has no rule at all.
type Topology struct {
	Prefix   string // unique per run: every netns name starts with it
	Node     Pod
	Clients  map[string]*Pod // "plain", "nft", "legacy"
	Backends []*Pod

	cleanup []func() error
}

// clientIPs fixes each client's address so results and rules are readable.
var clientIPs = map[string]netip.Addr{
	"plain":  netip.MustParseAddr("10.244.77.2"),
	"nft":    netip.MustParseAddr("10.244.77.3"),
	"legacy": netip.MustParseAddr("10.244.77.4"),
}

// backendIP is the address of backend i.
func backendIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 244, 77, byte(11 + i)})
}

// NewTopology builds the namespaces. On error everything built so far is
// removed before it returns.
func NewTopology(prefix string, backends int) (t *Topology, err error) {
	t = &Topology{Prefix: prefix, Clients: map[string]*Pod{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
			t = nil
		}
	}()
	node, err := t.newNetns("node")
	if err != nil {
		return t, err
	}
	node.IP = gatewayIP
	t.Node = *node
	nh, err := netlinkIn(node.NS)
	if err != nil {
		return t, fmt.Errorf("node: %w", err)
	}
	defer nh.Close()
	if err := setUp(nh, "lo"); err != nil {
		return t, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := nh.LinkAdd(br); err != nil {
		return t, fmt.Errorf("add bridge: %w", err)
	}
	if err := addAddr(nh, "br0", netip.PrefixFrom(gatewayIP, podSubnet.Bits())); err != nil {
		return t, err
	}
	if err := setUp(nh, "br0"); err != nil {
		return t, err
	}
	// Bridged pod-to-pod frames need no netfilter pass in the node; where
	// br_netfilter is built in, turn it off so it costs every mode nothing.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		_ = node.NS.Do(func(ns.NetNS) error {
			// net.* sysctls are per namespace, resolved by the opener's.
			_, err := sysctl.Sysctl("net/bridge/bridge-nf-call-iptables", "0")
			return err
		})
	}

	for _, name := range []string{"plain", "nft", "legacy"} {
		p, err := t.addPod(nh, "c"+name, clientIPs[name], true)
		if err != nil {
			return t, err
		}
		t.Clients[name] = p
	}
	for i := range backends {
		p, err := t.addPod(nh, fmt.Sprintf("be%d", i), backendIP(i), false)
		if err != nil {
			return t, err
		}
		t.Backends = append(t.Backends, p)
	}
	return t, nil
}

// newNetns creates the netns of a pod and registers its release.
func (t *Topology) newNetns(suffix string) (*Pod, error) {
	n, err := newNetns()
	if err != nil {
		return nil, err
	}
	t.cleanup = append(t.cleanup, func() error { return n.Close() })
	p := &Pod{Name: t.Prefix + "-" + suffix, NS: n, Path: nsPath(n)}
	p.ID, _ = os.Readlink(p.Path)
	return p, nil
}

// addPod creates a pod netns with pod0 on the node's bridge. Clients also get
// a route for the service range to the gateway, as a pod's default route
// would give them: iptables DNAT in OUTPUT runs after the first route lookup,
// so a ClusterIP must be routable for kube-proxy-shaped rules to see it. Pods
// get no default route, so nothing they send can leave the topology.
func (t *Topology) addPod(nh *netlink.Handle, suffix string, ip netip.Addr, client bool) (*Pod, error) {
	p, err := t.newNetns(suffix)
	if err != nil {
		return nil, err
	}
	p.IP = ip
	host := "v" + suffix // node-side end, ≤ 15 chars
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: host},
		PeerName:      "pod0",
		PeerNamespace: netlink.NsFd(int(p.NS.Fd())),
	}
	if err := nh.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s: %w", host, err)
	}
	br, err := nh.LinkByName("br0")
	if err != nil {
		return nil, fmt.Errorf("find bridge: %w", err)
	}
	hl, err := nh.LinkByName(host)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", host, err)
	}
	if err := nh.LinkSetMaster(hl, br); err != nil {
		return nil, fmt.Errorf("enslave %s: %w", host, err)
	}
	if err := nh.LinkSetUp(hl); err != nil {
		return nil, fmt.Errorf("up %s: %w", host, err)
	}

	ph, err := netlinkIn(p.NS)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, err)
	}
	defer ph.Close()
	if err := setUp(ph, "lo"); err != nil {
		return nil, err
	}
	if err := addAddr(ph, "pod0", netip.PrefixFrom(ip, podSubnet.Bits())); err != nil {
		return nil, err
	}
	if err := setUp(ph, "pod0"); err != nil {
		return nil, err
	}
	if client {
		l, err := ph.LinkByName("pod0")
		if err != nil {
			return nil, err
		}
		r := &netlink.Route{
			LinkIndex: l.Attrs().Index,
			Dst:       ipNet(serviceNet),
			Gw:        net.IP(gatewayIP.AsSlice()),
		}
		if err := ph.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("route %s in %s: %w", serviceNet, p.Name, err)
		}
	}
	return p, nil
}

// NetnsIDs lists every namespace of the topology ("net:[inode]"), so a
// test can check that nothing holds one after the run.
func (t *Topology) NetnsIDs() []string {
	pods := []*Pod{&t.Node}
	for _, n := range []string{"plain", "nft", "legacy"} {
		if c := t.Clients[n]; c != nil {
			pods = append(pods, c)
		}
	}
	pods = append(pods, t.Backends...)
	var ids []string
	for _, p := range pods {
		ids = append(ids, p.ID)
	}
	return ids
}

// Close releases every namespace; the kernel removes each (with every link,
// address, route and iptables rule in it) once the last socket in it is
// closed. It is safe to call more than once.
func (t *Topology) Close() error {
	var errs []error
	for i := len(t.cleanup) - 1; i >= 0; i-- {
		errs = append(errs, t.cleanup[i]())
	}
	t.cleanup = nil
	return errors.Join(errs...)
}

func setUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	return nil
}

func addAddr(h *netlink.Handle, name string, p netip.Prefix) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p, name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Masked().Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// prefixPID parses the pid out of a "skepbench<pid>x<rand>…" name.
func prefixPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	pid := 0
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		pid = pid*10 + int(rest[n]-'0')
		n++
	}
	return pid, n > 0
}

func pidAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}
