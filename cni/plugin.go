// Package cni is skep-cni, the node's CNI plugin: a docker0-style Linux
// bridge (skep0) holding the gateway address of the node's pod range, one
// veth per pod, and address management from that range kept in a bbolt file
// (package ipam). It implements every verb of CNI spec 1.1.0 (ADD, DEL,
// CHECK, GC, STATUS, VERSION) for configurations of version 0.4.0 to 1.1.0;
// cmd/skep-cni hands these functions to skel.
//
// The plugin runs in the node's network namespace (where the runtime runs):
// the bridge and the host ends of the veths live there, the pod ends in the
// namespace named by CNI_NETNS. A node's conflist (see ConfList):
//
//	{"cniVersion": "1.1.0", "name": "skep",
//	 "plugins": [{"type": "skep-cni", "subnet": "10.244.1.0/24"}]}
//
// What each verb does:
//
//   - ADD allocates the next free address after the last one handed out,
//     makes sure of the bridge (created or adopted; MAC 0a:58:<gateway>
//     pinned; gateway address; up; ip_forward on), creates the veth pair in
//     one request (host end skv<hash> on the bridge, labelled
//     "skep-cni:<network>/<container>/<ifname>", hairpin on; pod end
//     CNI_IFNAME with MAC 0a:58:<pod ip> and the MTU), then sets the pod's
//     address and default route via the gateway. Any failure undoes the
//     steps before it.
//   - DEL removes the host veth (the pod end goes with it) and frees the
//     address; everything already gone counts as done.
//   - CHECK compares the allocation, bridge, host veth and pod interface
//     with prevResult.
//   - GC frees allocations and veths of attachments not in
//     cni.dev/valid-attachments.
//   - STATUS fails with 50 when ADD cannot succeed (store unusable, range
//     exhausted, bridge name taken by a non-bridge).
//
// Error codes: 1 unsupported cniVersion, 6 undecodable config, 7 invalid
// config (missing or malformed subnet, bad mtu, subnet changed under live
// allocations), 11 try again later (range exhausted, store locked past the
// timeout), 50 not available (STATUS), 999 anything else.
package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/cni/ipam"
)

// VersionInfo lists the spec versions skep-cni accepts configurations of.
var VersionInfo = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// About is printed when the binary is run without CNI_COMMAND.
const About = "skep-cni: bridge + IPAM CNI plugin of skep"

// lockTimeout bounds how long one invocation waits for the allocation store.
// Past it the invocation fails with "try again later" rather than hanging the
// runtime. A variable so tests can shorten it.
var lockTimeout = 30 * time.Second

// Funcs is the plugin's verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// stepHook lets tests fail ADD after a named step to prove the rollback.
var stepHook = func(step string) error { return nil }

// cniError turns library errors whose meaning the runtime cares about into
// CNI error codes; anything else becomes skel's internal error (999).
func cniError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrLockTimeout):
		// Both clear up by themselves: pods are deleted, the holder finishes.
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case errors.Is(err, ipam.ErrSubnetChanged):
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return err
}

func openStore(c *NetConf) (*ipam.Store, error) {
	s, err := ipam.Open(c.StoreDir(), c.Pool(), lockTimeout)
	if err != nil {
		return nil, fmt.Errorf("open ipam store: %w", err)
	}
	return s, nil
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := c.prevResult()
	if err != nil {
		return err
	}
	// skel refuses a CNI_NETNS equal to the plugin's own namespace only after
	// ADD returns; by then the "pod" address and default route would be set
	// on the node itself. Refuse before touching anything.
	if !strings.EqualFold(args.NetnsOverride, "true") && args.NetnsOverride != "1" {
		if same, err := cnins.CheckNetNS(args.Netns); err != nil {
			return err
		} else if same {
			return types.NewError(types.ErrInvalidNetNS, "CNI_NETNS is the plugin's own (node) namespace", args.Netns)
		}
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open netns %q: %w", args.Netns, err)
	}
	defer podNS.Close()

	// Every step that changes something pushes its undo; a failure runs
	// them in reverse, so a failed ADD leaves no link and holds no address.
	// The bridge is not undone: it is the node's, shared by every pod and
	// possibly just reused by a concurrent ADD.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			err = cniError(err)
		}
	}()

	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	hostName := HostVethName(c.Name, att)
	podIP, err := allocate(c, ipam.Allocation{Attachment: att, HostIfName: hostName, Netns: args.Netns, Pod: podName(args.Args)})
	if err != nil {
		return err
	}
	undo = append(undo, func() { _ = release(c, att) })
	if err := stepHook("allocate"); err != nil {
		return err
	}

	br, err := ensureBridge(c)
	if err != nil {
		return err
	}
	if err := stepHook("bridge"); err != nil {
		return err
	}

	hostLink, podMAC, err := createVeth(c, br, hostName, hostVethAlias(c.Name, att), args.IfName, podIP, podNS)
	if err != nil {
		return err
	}
	undo = append(undo, func() { _ = deleteHostVeth(hostName) })
	if err := stepHook("veth"); err != nil {
		return err
	}

	if err := netlink.LinkSetHairpin(hostLink, c.Hairpin()); err != nil {
		return fmt.Errorf("set hairpin on %s: %w", hostName, err)
	}
	if err := stepHook("hairpin"); err != nil {
		return err
	}

	podAddr := net.IPNet{IP: podIP.AsSlice(), Mask: net.CIDRMask(c.Pool().Prefix().Bits(), 32)}
	gw := c.Pool().Gateway().AsSlice()
	if err := podNS.Do(func(ns.NetNS) error { return configurePod(args.IfName, podAddr, gw) }); err != nil {
		return err
	}
	if err := stepHook("pod"); err != nil {
		return err
	}

	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: c.DNS}
	if prev != nil {
		// Chained after another plugin: keep what it reported and add ours.
		result.Interfaces, result.IPs, result.Routes = prev.Interfaces, prev.IPs, prev.Routes
		if prev.DNS.Nameservers != nil || prev.DNS.Domain != "" {
			result.DNS = prev.DNS
		}
	}
	base := len(result.Interfaces)
	result.Interfaces = append(result.Interfaces,
		&current.Interface{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
		&current.Interface{Name: hostName, Mac: hostLink.Attrs().HardwareAddr.String()},
		&current.Interface{Name: args.IfName, Mac: podMAC.String(), Sandbox: args.Netns},
	)
	result.IPs = append(result.IPs, &current.IPConfig{Interface: current.Int(base + 2), Address: podAddr, Gateway: gw})
	result.Routes = append(result.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw})
	return types.PrintResult(result, c.CNIVersion)
}

// podName is "namespace/name" from the K8S_POD_NAMESPACE and K8S_POD_NAME
// CNI_ARGS that kubelet-style runtimes pass, or "". Other args are ignored.
func podName(cniArgs string) string {
	var ns, name string
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			ns = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	if name == "" {
		return ""
	}
	return ns + "/" + name
}

func allocate(c *NetConf, a ipam.Allocation) (netip.Addr, error) {
	s, err := openStore(c)
	if err != nil {
		return netip.Addr{}, err
	}
	defer s.Close()
	var ip netip.Addr
	err = s.Update(func(tx *ipam.Tx) (err error) {
		ip, err = tx.Allocate(a)
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate address for %s: %w", a.Attachment, err)
	}
	return ip, nil
}

func release(c *NetConf, a ipam.Attachment) error {
	s, err := openStore(c)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Update(func(tx *ipam.Tx) error {
		_, _, err := tx.Release(a)
		return err
	})
}

// createVeth makes the pair in one netlink request: host end on the bridge
// and up in this namespace, pod end created directly inside the pod's
// namespace under its final name, with its MAC and MTU.
func createVeth(c *NetConf, br *netlink.Bridge, hostName, alias, podIf string, podIP netip.Addr, podNS ns.NetNS) (netlink.Link, net.HardwareAddr, error) {
	// A host veth with our name but no allocation (we just allocated, so
	// none existed) is debris of a killed invocation: it is ours to remove.
	if err := deleteHostVeth(hostName); err != nil {
		return nil, nil, err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = c.MTU
	attrs.MasterIndex = br.Attrs().Index
	attrs.Flags = net.FlagUp
	podMAC := macForIP(podIP)
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         podIf,
		PeerHardwareAddr: podMAC,
		PeerNamespace:    netlink.NsFd(int(podNS.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		// The host name was just freed, so EEXIST is the pod's side.
		return nil, nil, fmt.Errorf("create veth %s/%s (does %s exist in the pod already?): %w", hostName, podIf, podIf, err)
	}
	// The kernel ignores an alias in the create request, so label it now.
	// (A kill in between leaves an unlabelled veth that GC cannot attribute;
	// the next ADD of the same attachment still removes it by name.)
	if err := netlink.LinkSetAlias(veth, alias); err != nil {
		_ = netlink.LinkDel(veth)
		return nil, nil, fmt.Errorf("label veth %s: %w", hostName, err)
	}
	hostLink, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		_ = netlink.LinkDel(veth)
		return nil, nil, fmt.Errorf("look up new veth %s: %w", hostName, err)
	}
	return hostLink, podMAC, nil
}

// configurePod runs inside the pod's namespace.
func configurePod(ifName string, addr net.IPNet, gw net.IP) error {
	l, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %s in pod: %w", ifName, err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &addr}); err != nil {
		return fmt.Errorf("add %s to %s: %w", addr.String(), ifName, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", ifName, err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw, Scope: netlink.SCOPE_UNIVERSE}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

// cmdDel is idempotent: the runtime calls DEL after a failed ADD, again after
// its own crash, and for pods whose namespace is already gone (the pod's veth
// end died with it, taking the host end along). Each step therefore treats
// "already gone" as done, and the address is freed even when CNI_NETNS is
// empty or no longer exists, since the host end and the record are all we
// need and both are found by the attachment alone.
func cmdDel(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	// The link first: if it cannot be removed, keep the address, or a new pod
	// could get the address an old one still answers on.
	if err := deleteHostVeth(HostVethName(c.Name, att)); err != nil {
		return err
	}
	return cniError(release(c, att))
}
