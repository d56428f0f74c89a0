package cni

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/cni/ipam"
)

// cmdCheck verifies that the attachment ADD reported (prevResult) still
// exists as made: the allocation, the bridge with its gateway and pinned MAC,
// the host veth on the bridge with hairpin, and in the pod the interface with
// its MAC, address and default route via the gateway.
func cmdCheck(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := c.prevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "")
	}
	var podIf *current.Interface
	podIfIdx := -1
	for i, intf := range prev.Interfaces {
		if intf.Name == args.IfName && intf.Sandbox != "" {
			podIf, podIfIdx = intf, i
		}
	}
	if podIf == nil {
		return fmt.Errorf("prevResult has no interface %s in a sandbox", args.IfName)
	}
	var podIP *current.IPConfig
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface == podIfIdx {
			podIP = ipc
		}
	}
	if podIP == nil {
		return fmt.Errorf("prevResult has no address for %s", args.IfName)
	}

	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	if err := checkAllocation(c, att, podIP.Address.IP); err != nil {
		return err
	}

	br, err := netlinksafe.LinkByName(c.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("%s is a %s, not a bridge", c.Bridge, br.Type())
	}
	if want := macForIP(c.Pool().Gateway()).String(); br.Attrs().HardwareAddr.String() != want {
		return fmt.Errorf("bridge %s mac is %s, want pinned %s", c.Bridge, br.Attrs().HardwareAddr, want)
	}
	if err := hasAddr(br, c.GatewayNet()); err != nil {
		return err
	}

	hostName := HostVethName(c.Name, att)
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostName, err)
	}
	if host.Type() != "veth" || host.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("%s is not a veth on %s", hostName, c.Bridge)
	}
	if want := hostVethAlias(c.Name, att); host.Attrs().Alias != want {
		return fmt.Errorf("host veth %s is labelled %q, want %q", hostName, host.Attrs().Alias, want)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", hostName)
	}
	pi, err := netlinksafe.LinkGetProtinfo(host)
	if err != nil {
		return fmt.Errorf("bridge port info of %s: %w", hostName, err)
	}
	if pi.Hairpin != c.Hairpin() {
		return fmt.Errorf("hairpin on %s is %v, want %v", hostName, pi.Hairpin, c.Hairpin())
	}

	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open netns %q: %w", args.Netns, err)
	}
	defer podNS.Close()
	return podNS.Do(func(ns.NetNS) error {
		return checkPod(args.IfName, podIf.Mac, host.Attrs().Index, podIP.Address, c.Pool().Gateway().AsSlice())
	})
}

func checkAllocation(c *NetConf, att ipam.Attachment, ip net.IP) error {
	s, err := openStore(c)
	if err != nil {
		return cniError(err)
	}
	defer s.Close()
	return s.View(func(tx *ipam.Tx) error {
		rec, ok, err := tx.Get(att)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no address allocated to %s", att)
		}
		if !net.IP(rec.IP.AsSlice()).Equal(ip) {
			return fmt.Errorf("%s holds %s, result says %s", att, rec.IP, ip)
		}
		return nil
	})
}

func hasAddr(l netlink.Link, want *net.IPNet) error {
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			return nil
		}
	}
	return fmt.Errorf("%s lacks address %s", l.Attrs().Name, want)
}

// checkPod runs inside the pod's namespace.
func checkPod(ifName, mac string, hostIndex int, addr net.IPNet, gw net.IP) error {
	l, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", ifName, err)
	}
	veth, ok := l.(*netlink.Veth)
	if !ok {
		return fmt.Errorf("pod interface %s is a %s, not a veth", ifName, l.Type())
	}
	if peer, err := netlink.VethPeerIndex(veth); err != nil || peer != hostIndex {
		return fmt.Errorf("pod interface %s peers with ifindex %d (%v), want host veth %d", ifName, peer, err, hostIndex)
	}
	if mac != "" && l.Attrs().HardwareAddr.String() != mac {
		return fmt.Errorf("pod interface %s mac %s, result says %s", ifName, l.Attrs().HardwareAddr, mac)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("pod interface %s is down", ifName)
	}
	if err := hasAddr(l, &addr); err != nil {
		return err
	}
	routes, err := netlinksafe.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("routes of %s: %w", ifName, err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw) {
			return nil
		}
	}
	return fmt.Errorf("pod has no default route via %s on %s", gw, ifName)
}
