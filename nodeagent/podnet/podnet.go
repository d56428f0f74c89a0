// Package podnet gives a node's pods their network the way a container
// runtime does it for the kubelet, without a pause container: per pod a
// network namespace the node agent owns (package netns), and skep-cni
// called on it through libcni with the node's conflist (cni.ConfList). The
// agent then starts the pod's containers into that namespace.
//
// What a Network keeps on the node, and nothing else:
//
//	<NetnsDir>/<NetnsPrefix><pod ID>          the pod's netns (a bind mount)
//	<CacheDir>/results/<network>-<NetnsPrefix><pod ID>-<ifname>
//	                                          libcni's record of the attachment:
//	                                          result, netns, CNI_ARGS
//	skep-cni's own state                      bridge, host veth, IPAM record
//
// The netns name doubles as the CNI container ID, so it is unique on the
// machine and ties the three together. List reads the first two back, which
// is how an agent restarted after a crash finds the sandboxes it made (and
// whose they are, from the recorded CNI_ARGS), adopts the live ones and
// removes the rest with GC; GC then has skep-cni free whatever a crash
// leaked below libcni's records too (CNI GC with the valid attachments).
//
// Every removal is idempotent and tolerates what is already gone: a CNI DEL
// frees the address even when the namespace has vanished, and a namespace
// or record that is not there counts as removed.
package podnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniutils "github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skep-dev/skep/cni"
	"github.com/skep-dev/skep/nodeagent/netns"
)

// Defaults of Config.
const (
	DefaultNetnsPrefix = "skep-"
	DefaultIfName      = "eth0"
)

// Config says how a node's pods get their network.
type Config struct {
	// Network is the node's skep-cni configuration: Name and Subnet (the
	// node's podCIDR) are required; it is rendered with cni.ConfList.
	Network cni.NetConf
	// PluginDirs are searched for the skep-cni binary (CNI_PATH).
	PluginDirs []string
	// CacheDir holds libcni's records of attachments (default
	// libcni.CacheDir, /var/lib/cni). GC deletes every attachment of the
	// network recorded there that it is not told to keep: the network's
	// records there belong to this Network alone.
	CacheDir string
	// NetnsDir holds the pods' namespaces (default /run/netns).
	NetnsDir string
	// NetnsPrefix starts the name of every pod namespace made here, which
	// is also its CNI container ID: <NetnsPrefix><pod ID> (default
	// "skep-"). List and GC look only at names with this prefix, so
	// Networks sharing a NetnsDir (the lab's nodes) need different ones.
	NetnsPrefix string
	// NodeNetns is the path of the node's network namespace, where the
	// plugin runs (the bridge and the host ends of the veths live there).
	// Empty: the caller's own, as for an agent running on its node. The
	// lab sets it: its nodes are namespaces of a process that lives in
	// the machine's.
	NodeNetns string
	// IfName is the pod's interface (default eth0).
	IfName string
	// Stderr receives the plugin's stderr (default os.Stderr).
	Stderr io.Writer
}

// Pod is a pod to give a network to. ID names its sandbox: it must be
// unique among the node's pods and stay the same for the pod's whole life
// there (the agent uses the pod's UID); letters, digits, '_', '.', '-'.
// Namespace, Name and UID go to the plugin as the CNI_ARGS kubelet-style
// runtimes pass (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID,
// K8S_POD_INFRA_CONTAINER_ID) and are recorded with the attachment.
type Pod struct {
	ID        string
	Namespace string
	Name      string
	UID       string
}

// Sandbox is a pod's network as found on the node.
type Sandbox struct {
	// Pod has the ID always; Namespace, Name and UID when the attachment
	// recorded them.
	Pod Pod
	// Netns is the path of the pod's namespace; empty when there is none.
	Netns string
	// Attached says a CNI attachment is recorded: ADD succeeded and no DEL
	// came since. IPs are its addresses.
	Attached bool
	IPs      []netip.Addr
}

// Network gives pods their network on one node. Calls for different pods
// may run concurrently; calls for one pod must not overlap (an agent's
// per-pod worker serializes them). GC runs alone, as the CNI spec asks of
// a runtime: no ADD or DEL while the plugin collects.
type Network struct {
	cfg  Config
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	mu   sync.RWMutex
}

// New checks cfg and renders the node's conflist. It makes nothing on the
// node.
func New(cfg Config) (*Network, error) {
	if cfg.CacheDir == "" {
		cfg.CacheDir = libcni.CacheDir
	}
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = netns.DefaultDir
	}
	if cfg.NetnsPrefix == "" {
		cfg.NetnsPrefix = DefaultNetnsPrefix
	}
	if cfg.IfName == "" {
		cfg.IfName = DefaultIfName
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if err := cniutils.ValidateContainerID(cfg.NetnsPrefix + "x"); err != nil {
		return nil, fmt.Errorf("netns prefix %q: %s", cfg.NetnsPrefix, err.Msg)
	}
	if err := cniutils.ValidateInterfaceName(cfg.IfName); err != nil {
		return nil, fmt.Errorf("interface %q: %s", cfg.IfName, err.Msg)
	}
	conf, err := cni.ConfList(cfg.Network)
	if err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	// The exec is explicit: left nil, CNIConfig fills it in lazily on
	// first use, a data race when goroutines share one CNIConfig.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: cfg.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Network{
		cfg:  cfg,
		cni:  libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cfg.CacheDir, exec),
		list: list,
	}, nil
}

// NetnsPath is where the namespace of the pod with this ID is (or would be).
func (n *Network) NetnsPath(id string) string {
	return filepath.Join(n.cfg.NetnsDir, n.name(id))
}

func (n *Network) name(id string) string { return n.cfg.NetnsPrefix + id }

func validID(id string) error {
	if id == "" {
		return errors.New("pod sandbox: empty ID")
	}
	if err := cniutils.ValidateContainerID(id); err != nil {
		return fmt.Errorf("pod sandbox ID %q: %s", id, err.Msg)
	}
	return nil
}

// Setup gives the pod its network: a namespace, then CNI ADD on it. A pod
// already set up (by a Setup before the agent restarted) is returned as
// recorded; what a Setup that crashed half-way left is removed first. A
// failing Setup removes what it made, so it leaves nothing behind.
func (n *Network) Setup(ctx context.Context, pod Pod) (sb *Sandbox, err error) {
	if err := validID(pod.ID); err != nil {
		return nil, err
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	path := n.NetnsPath(pod.ID)
	rt := n.runtimeConf(pod)
	_, nsErr := os.Stat(path)
	res, _ := n.cni.GetNetworkListCachedResult(n.list, rt)
	if res != nil && nsErr == nil {
		ips, err := resultIPs(res)
		if err == nil {
			return &Sandbox{Pod: pod, Netns: path, Attached: true, IPs: ips}, nil
		}
	}
	if res != nil || nsErr == nil {
		if err := n.teardown(ctx, pod.ID); err != nil {
			return nil, fmt.Errorf("setup %s: remove what an earlier setup left: %w", pod.ID, err)
		}
	}

	if _, err := netns.Create(n.cfg.NetnsDir, n.name(pod.ID)); err != nil {
		return nil, fmt.Errorf("setup %s: %w", pod.ID, err)
	}
	defer func() {
		if err != nil {
			if terr := n.teardown(context.WithoutCancel(ctx), pod.ID); terr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", terr))
			}
		}
	}()
	err = n.inNode(func() (err error) {
		res, err = n.cni.AddNetworkList(ctx, n.list, rt)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setup %s: cni add: %w", pod.ID, err)
	}
	ips, err := resultIPs(res)
	if err != nil {
		return nil, fmt.Errorf("setup %s: cni add: %w", pod.ID, err)
	}
	return &Sandbox{Pod: pod, Netns: path, Attached: true, IPs: ips}, nil
}

// Teardown removes the pod's network: CNI DEL (the host veth and the
// address; the plugin does it even when the namespace is gone), then the
// namespace. A sandbox partly or wholly gone already is fine. When the
// node's own namespace (NodeNetns) no longer exists, there is nothing left
// to DEL in it and only the pod's namespace is removed.
func (n *Network) Teardown(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.teardown(ctx, id)
}

func (n *Network) teardown(ctx context.Context, id string) error {
	if n.nodeGone() {
		return netns.Remove(n.cfg.NetnsDir, n.name(id))
	}
	var errs []error
	rt := n.recordedConf(id)
	if _, err := os.Stat(rt.NetNS); err != nil {
		rt.NetNS = ""
	}
	err := n.inNode(func() error { return n.cni.DelNetworkList(ctx, n.list, rt) })
	if err != nil {
		errs = append(errs, fmt.Errorf("teardown %s: cni del: %w", id, err))
	}
	// The namespace goes even when DEL failed: its end of the veth goes
	// with it, and the record stays for a later Teardown or GC to DEL.
	errs = append(errs, netns.Remove(n.cfg.NetnsDir, n.name(id)))
	return errors.Join(errs...)
}

// Check asks the plugin whether the pod's network is still as ADD left it
// (CNI CHECK against the recorded result).
func (n *Network) Check(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	rt := n.recordedConf(id)
	if res, _ := n.cni.GetNetworkListCachedResult(n.list, rt); res == nil {
		return fmt.Errorf("check %s: no attachment recorded", id)
	}
	if err := n.inNode(func() error { return n.cni.CheckNetworkList(ctx, n.list, rt) }); err != nil {
		return fmt.Errorf("check %s: %w", id, err)
	}
	return nil
}

// List returns the sandboxes on the node, by ID: every namespace with the
// prefix and every recorded attachment, whole or not.
func (n *Network) List() ([]Sandbox, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.sandboxes()
}

func (n *Network) sandboxes() ([]Sandbox, error) {
	byID := map[string]*Sandbox{}
	get := func(id string) *Sandbox {
		if sb, ok := byID[id]; ok {
			return sb
		}
		sb := &Sandbox{Pod: Pod{ID: id}}
		byID[id] = sb
		return sb
	}
	names, err := netns.List(n.cfg.NetnsDir, n.cfg.NetnsPrefix)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		id := strings.TrimPrefix(name, n.cfg.NetnsPrefix)
		if validID(id) == nil {
			get(id).Netns = filepath.Join(n.cfg.NetnsDir, name)
		}
	}
	atts, err := n.cni.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	for _, a := range atts {
		id, ok := strings.CutPrefix(a.ContainerID, n.cfg.NetnsPrefix)
		if a.Network != n.list.Name || a.IfName != n.cfg.IfName || !ok || validID(id) != nil {
			continue
		}
		sb := get(id)
		sb.Attached = true
		sb.Pod = podFromArgs(id, a.CniArgs)
		rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, IfName: a.IfName}
		if res, err := n.cni.GetNetworkListCachedResult(n.list, rt); err == nil && res != nil {
			sb.IPs, _ = resultIPs(res)
		}
	}
	out := make([]Sandbox, 0, len(byID))
	for _, sb := range byID {
		out = append(out, *sb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod.ID < out[j].Pod.ID })
	return out, nil
}

// GC removes every sandbox whose ID is not in keep (Teardown), then has
// the plugin free what no record accounts for (CNI GC with keep's
// attachments as the valid ones): addresses and veths a crash leaked
// between the plugin's work and libcni's record. It runs alone: Setup and
// Teardown wait for it.
func (n *Network) GC(ctx context.Context, keep []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	valid := make([]types.GCAttachment, 0, len(keep))
	kept := map[string]bool{}
	for _, id := range keep {
		kept[id] = true
		valid = append(valid, types.GCAttachment{ContainerID: n.name(id), IfName: n.cfg.IfName})
	}
	sbs, err := n.sandboxes()
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range sbs {
		if !kept[sb.Pod.ID] {
			errs = append(errs, n.teardown(ctx, sb.Pod.ID))
		}
	}
	if !n.nodeGone() {
		err := n.inNode(func() error {
			return n.cni.GCNetworkList(ctx, n.list, &libcni.GCArgs{ValidAttachments: valid})
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("cni gc: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Status asks the plugin whether it can set up pods now (CNI STATUS): a
// node agent reports its node not ready for pods while this fails.
func (n *Network) Status(ctx context.Context) error {
	return n.inNode(func() error { return n.cni.GetStatusNetworkList(ctx, n.list) })
}

// runtimeConf is what ADD gets: the namespace path, and the CNI_ARGS
// containerd's CRI plugin passes.
func (n *Network) runtimeConf(pod Pod) *libcni.RuntimeConf {
	name := n.name(pod.ID)
	return &libcni.RuntimeConf{
		ContainerID: name,
		NetNS:       n.NetnsPath(pod.ID),
		IfName:      n.cfg.IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", name},
			{"K8S_POD_UID", pod.UID},
		},
	}
}

// recordedConf is the runtime configuration of the pod's attachment as
// recorded (its CNI_ARGS), for DEL and CHECK; without a record, the bare
// attachment.
func (n *Network) recordedConf(id string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: n.name(id), NetNS: n.NetnsPath(id), IfName: n.cfg.IfName}
	if _, cached, err := n.cni.GetNetworkListCachedConfig(n.list, rt); err == nil && cached != nil {
		return cached
	}
	return rt
}

func podFromArgs(id string, args [][2]string) Pod {
	p := Pod{ID: id}
	for _, kv := range args {
		switch kv[0] {
		case "K8S_POD_NAMESPACE":
			p.Namespace = kv[1]
		case "K8S_POD_NAME":
			p.Name = kv[1]
		case "K8S_POD_UID":
			p.UID = kv[1]
		}
	}
	return p
}

// inNode runs fn in the node's namespace, so the plugin it starts runs
// there too (a child inherits its thread's namespace).
func (n *Network) inNode(fn func() error) error {
	if n.cfg.NodeNetns == "" {
		return fn()
	}
	return ns.WithNetNSPath(n.cfg.NodeNetns, func(ns.NetNS) error { return fn() })
}

// nodeGone reports that NodeNetns is set but no longer exists: everything
// the plugin made in it went with it.
func (n *Network) nodeGone() bool {
	if n.cfg.NodeNetns == "" {
		return false
	}
	_, err := os.Stat(n.cfg.NodeNetns)
	return err != nil
}

func resultIPs(res types.Result) ([]netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, ip := range r.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 {
		return nil, errors.New("no address in the result")
	}
	return ips, nil
}
