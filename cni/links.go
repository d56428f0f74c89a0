package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/cni/ipam"
)

// hostVethPrefix marks the host ends of skep's veths, so GC can tell ours
// from other ports someone put on the bridge.
const hostVethPrefix = "skv"

// HostVethName is the host end of an attachment's veth. It is derived from
// the attachment rather than random, so DEL and GC find it without entering
// the pod's namespace (which may be gone) and without the store.
func HostVethName(network string, a ipam.Attachment) string {
	sum := sha256.Sum256([]byte(network + "/" + a.ContainerID + "/" + a.IfName))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:15-len(hostVethPrefix)]
}

// macForIP is a locally administered unicast MAC that embeds an IPv4
// address (0a:58:a:b:c:d, the scheme OVN-Kubernetes uses). The bridge's MAC
// is derived from the gateway, so it is the same every time the bridge is
// made; a pod's from its address, so a neighbour's ARP entry for a reused
// address is still right.
func macForIP(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// ensureBridge makes the node's bridge exist, up, with the pinned MAC and the
// gateway address, and turns on IPv4 forwarding in this (the node's)
// namespace. It only writes what differs, so the common case is reads.
func ensureBridge(c *NetConf) (*netlink.Bridge, error) {
	mac := macForIP(c.pool.Gateway())
	l, err := netlinksafe.LinkByName(c.Bridge)
	if isNotFound(err) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = c.Bridge
		attrs.MTU = c.MTU
		// An address given at creation is "set by user": the kernel then
		// keeps it instead of taking the lowest MAC of the ports, which
		// would change as pods come and go and break neighbours' ARP.
		attrs.HardwareAddr = mac
		attrs.Flags = net.FlagUp
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		if err != nil && !errors.Is(err, syscall.EEXIST) { // EEXIST: a concurrent ADD made it
			return nil, fmt.Errorf("create bridge %s: %w", c.Bridge, err)
		}
		l, err = netlinksafe.LinkByName(c.Bridge)
	}
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", c.Bridge, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("%s exists and is a %s, not a bridge", c.Bridge, l.Type())
	}
	if br.Attrs().HardwareAddr.String() != mac.String() {
		// A bridge made by someone else: pin it now (this also marks the
		// address as user-set).
		if err := netlink.LinkSetHardwareAddr(br, mac); err != nil {
			return nil, fmt.Errorf("pin bridge mac: %w", err)
		}
		br.Attrs().HardwareAddr = mac
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge up: %w", err)
		}
	}
	if err := ensureGatewayAddr(br, c.GatewayNet()); err != nil {
		return nil, err
	}
	if err := enableForwarding(); err != nil {
		return nil, err
	}
	return br, nil
}

// enableForwarding turns on IPv4 forwarding in this (the node's) namespace,
// so pods reach other nodes' pods and the outside through the node. It
// writes only when it is off.
func enableForwarding() error {
	if v, err := sysctl.Sysctl("net/ipv4/ip_forward"); err == nil && v == "1" {
		return nil
	}
	if _, err := sysctl.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("enable ip_forward: %w", err)
	}
	return nil
}

func ensureGatewayAddr(br netlink.Link, gw *net.IPNet) error {
	addrs, err := netlinksafe.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list bridge addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == gw.String() {
			return nil
		}
	}
	err = netlink.AddrAdd(br, &netlink.Addr{IPNet: gw})
	if err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add gateway %s to bridge: %w", gw, err)
	}
	return nil
}

// deleteHostVeth removes an attachment's host veth; its peer in the pod goes
// with it. A missing link is not an error.
func deleteHostVeth(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// hostVethAlias labels a host veth with its network and attachment
// (ip link shows it), so GC removes only its own network's veths even when
// two networks share a bridge, and CHECK can tell a veth is this pod's.
func hostVethAlias(network string, a ipam.Attachment) string {
	return aliasPrefix(network) + a.ContainerID + "/" + a.IfName
}

func aliasPrefix(network string) string { return "skep-cni:" + network + "/" }

// isNetworkVeth reports whether l is a host veth skep-cni made for network.
func isNetworkVeth(l netlink.Link, network string) bool {
	return l.Type() == "veth" && strings.HasPrefix(l.Attrs().Alias, aliasPrefix(network))
}
