package lab

import (
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/nodeagent/netns"
)

// Interface names inside the lab's namespaces (each namespace has its own
// link names, so these never meet the machine's).
const (
	switchBridge = "sw0"  // the "physical switch", in the switch netns
	uplinkName   = "lab0" // a node's underlay interface, in its netns
)

// makeUnderlay builds the switch netns with its bridge and one netns per
// node, each joined to the bridge by a veth made in the switch netns with
// its peer created straight in the node's netns (no link ever exists in
// the root netns). Every node gets its underlay address, forwarding, and a
// route to every other node's pod CIDR via that node (host-gw).
func (c Config) makeUnderlay() error {
	sw := c.netnsPath(c.switchNetns())
	if _, err := netns.Create(netns.DefaultDir, c.switchNetns()); err != nil {
		return err
	}
	err := inNetns(sw, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: switchBridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge: %w", err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.SwitchIP().AsSlice(), Mask: net.CIDRMask(c.Underlay.Bits(), 32)}}
		if err := netlink.AddrAdd(br, addr); err != nil {
			return fmt.Errorf("address bridge: %w", err)
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	nodes := c.AllNodes()
	for _, n := range nodes {
		if _, err := netns.Create(netns.DefaultDir, n.Name); err != nil {
			return err
		}
		if err := c.plugNode(n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	for _, n := range nodes {
		if err := c.nodeRoutes(n, nodes); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	// The switch routes the pod ranges too, as a top-of-rack router with
	// host-gw routes would: pods reach the API at the switch's address,
	// and its replies must find their way back.
	return inNetns(sw, func() error {
		for _, n := range nodes {
			r := &netlink.Route{Dst: ipNet(n.PodCIDR), Gw: n.IP.AsSlice()}
			if err := netlink.RouteAdd(r); err != nil {
				return fmt.Errorf("switch route %s via %s: %w", n.PodCIDR, n.IP, err)
			}
		}
		return nil
	})
}

// plugNode cables a node to the switch.
func (c Config) plugNode(n Node) error {
	nodeNS, err := os.Open(c.netnsPath(n.Name))
	if err != nil {
		return err
	}
	defer nodeNS.Close()
	err = inNetns(c.netnsPath(c.switchNetns()), func() error {
		br, err := netlink.LinkByName(switchBridge)
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: n.Short, MasterIndex: br.Attrs().Index},
			PeerName:      uplinkName,
			PeerNamespace: netlink.NsFd(int(nodeNS.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		return netlink.LinkSetUp(veth)
	})
	if err != nil {
		return fmt.Errorf("switch port: %w", err)
	}
	return inNetns(c.netnsPath(n.Name), func() error {
		if _, err := sysctl.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			return fmt.Errorf("ip_forward: %w", err)
		}
		l, err := netlink.LinkByName(uplinkName)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.IP.AsSlice(), Mask: net.CIDRMask(c.Underlay.Bits(), 32)}}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("address %s: %w", uplinkName, err)
		}
		return netlink.LinkSetUp(l)
	})
}

// nodeRoutes routes every other node's pod CIDR via that node's underlay
// address (flannel's host-gw). A node has no default route: an address
// outside the lab is unreachable from it.
func (c Config) nodeRoutes(n Node, all []Node) error {
	return inNetns(c.netnsPath(n.Name), func() error {
		for _, o := range all {
			if o.Index == n.Index {
				continue
			}
			r := &netlink.Route{Dst: ipNet(o.PodCIDR), Gw: o.IP.AsSlice()}
			if err := netlink.RouteAdd(r); err != nil {
				return fmt.Errorf("route %s via %s: %w", o.PodCIDR, o.IP, err)
			}
		}
		return nil
	})
}
