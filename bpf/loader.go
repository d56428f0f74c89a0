package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PinRoot is where every node's maps and links are pinned.
const PinRoot = "/sys/fs/bpf/skep"

// PinDirFor is the pin directory of a node's data path.
func PinDirFor(node string) string { return filepath.Join(PinRoot, node) }

// Options configure one node's data path.
type Options struct {
	// Node names the node; the pins go to PinRoot/Node unless PinDir is set.
	Node   string
	PinDir string
	// NodeIP is the SNAT source for NodePort traffic to remote backends and
	// the address a 0.0.0.0 NodePort frontend answers on. Unset: no SNAT.
	NodeIP netip.Addr
	// PodCIDR holds this node's pods: backends in it are local (no SNAT).
	PodCIDR netip.Prefix
	// SNATPorts is the source port range of SNATed flows; default
	// 40000-59999 (outside the NodePort range and the usual ephemeral one).
	SNATPorts [2]uint16
	// CTClosingTimeout is how long a NodePort flow that saw a FIN or RST
	// keeps its SNAT port before a new flow may take it; default 10 s,
	// negative for at once.
	CTClosingTimeout time.Duration
	// PodNetns lists the network namespaces (paths) whose connected UDP
	// sockets are checked when a UDP backend goes away. Nil: those of the
	// processes in the cgroup AttachCgroup attached to (NetnsInCgroup),
	// and the caller's own.
	PodNetns func() ([]string, error)
	// AllowRootCgroup lets AttachCgroup attach to the root of the cgroup2
	// hierarchy (all of the machine's processes): only a real install
	// does that, never a test or a lab.
	AllowRootCgroup bool
	Logger          *slog.Logger
}

// LB is one node's loaded data path. It implements datapath.Datapath.
type LB struct {
	opts   Options
	pinDir string
	objs   lbObjects
	log    *slog.Logger

	mu     sync.Mutex
	st     *state
	cgroup string // where AttachCgroup attached, for the UDP socket sweep
}

// Load loads the programs and creates, or re-opens, the node's pinned maps,
// then adopts whatever services they already hold.
func Load(opts Options) (*LB, error) {
	pinDir := opts.PinDir
	if pinDir == "" {
		if opts.Node == "" {
			return nil, errors.New("load: need Node or PinDir")
		}
		pinDir = PinDirFor(opts.Node)
	}
	if opts.SNATPorts == [2]uint16{} {
		opts.SNATPorts = [2]uint16{40000, 59999}
	}
	if opts.SNATPorts[0] == 0 || opts.SNATPorts[0] > opts.SNATPorts[1] {
		return nil, fmt.Errorf("load: bad SNAT port range %v", opts.SNATPorts)
	}
	if opts.NodeIP.IsValid() && !opts.NodeIP.Is4() {
		return nil, fmt.Errorf("load: node IP %s is not IPv4", opts.NodeIP)
	}
	if opts.PodCIDR.IsValid() && !opts.PodCIDR.Addr().Is4() {
		return nil, fmt.Errorf("load: pod CIDR %s is not IPv4", opts.PodCIDR)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	spec, err := loadLb()
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	var podNet, podMask uint32
	if opts.PodCIDR.IsValid() {
		p := opts.PodCIDR.Masked()
		podNet = ip4(p.Addr())
		mask := net.CIDRMask(p.Bits(), 32)
		podMask = binary.NativeEndian.Uint32(mask)
	}
	consts := map[string]any{
		"node_ip":       ip4(opts.NodeIP),
		"pod_net":       podNet,
		"pod_mask":      podMask,
		"snat_port_min": opts.SNATPorts[0],
		"snat_port_max": opts.SNATPorts[1],
	}
	if opts.CTClosingTimeout != 0 {
		consts["ct_closing_timeout"] = uint32(max(opts.CTClosingTimeout, 0) / time.Second)
	}
	for name, v := range consts {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("load spec: no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}

	if err := os.MkdirAll(filepath.Join(pinDir, "links"), 0o755); err != nil {
		return nil, fmt.Errorf("make pin dir: %w", err)
	}
	lb := &LB{opts: opts, pinDir: pinDir, log: log.With("pins", pinDir)}
	collOpts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	if kernelHasSockDestroy() {
		err = spec.LoadAndAssign(&lb.objs, collOpts)
	} else {
		// Before Linux 6.5 there is no bpf_sock_destroy: load the rest
		// and leave connected UDP sockets to removed backends alone.
		lb.log.Warn("kernel lacks bpf_sock_destroy: connected UDP sockets to removed backends will not be destroyed")
		delete(spec.Programs, "sock_udp_term")
		var objs struct {
			lbMaps
			SockConnect4  *ebpf.Program `ebpf:"sock_connect4"`
			SockConnect6  *ebpf.Program `ebpf:"sock_connect6"`
			SockGetpeer4  *ebpf.Program `ebpf:"sock_getpeer4"`
			SockGetpeer6  *ebpf.Program `ebpf:"sock_getpeer6"`
			SockRecvmsg4  *ebpf.Program `ebpf:"sock_recvmsg4"`
			SockRecvmsg6  *ebpf.Program `ebpf:"sock_recvmsg6"`
			SockSendmsg4  *ebpf.Program `ebpf:"sock_sendmsg4"`
			SockSendmsg6  *ebpf.Program `ebpf:"sock_sendmsg6"`
			TcNodeportIn  *ebpf.Program `ebpf:"tc_nodeport_in"`
			TcNodeportOut *ebpf.Program `ebpf:"tc_nodeport_out"`
		}
		err = spec.LoadAndAssign(&objs, collOpts)
		lb.objs.lbMaps = objs.lbMaps
		lb.objs.lbPrograms = lbPrograms{
			SockConnect4: objs.SockConnect4, SockConnect6: objs.SockConnect6,
			SockGetpeer4: objs.SockGetpeer4, SockGetpeer6: objs.SockGetpeer6,
			SockRecvmsg4: objs.SockRecvmsg4, SockRecvmsg6: objs.SockRecvmsg6,
			SockSendmsg4: objs.SockSendmsg4, SockSendmsg6: objs.SockSendmsg6,
			TcNodeportIn: objs.TcNodeportIn, TcNodeportOut: objs.TcNodeportOut,
		}
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load programs: %+v", ve)
		}
		return nil, fmt.Errorf("load programs (pins in %s may be from an incompatible version: skep lab down removes them): %w", pinDir, err)
	}
	st, err := readState(&lb.objs.lbMaps)
	if err != nil {
		lb.objs.Close()
		return nil, fmt.Errorf("adopt pinned maps: %w", err)
	}
	lb.st = st
	lb.gcOrphans()
	if n := len(st.services); n > 0 {
		lb.log.Info("adopted pinned services", "services", n, "backends", len(st.backends))
	}
	return lb, nil
}

// PinDir is where this data path's maps and links are pinned.
func (lb *LB) PinDir() string { return lb.pinDir }

// Close releases this process's handles. Pinned maps and links, and thus
// the data path, stay in place for the next process to adopt.
func (lb *LB) Close() error {
	return lb.objs.Close()
}

// Remove detaches every pinned link and removes every pin of this data
// path, then closes it.
func (lb *LB) Remove() error {
	err := Uninstall(lb.pinDir)
	return errors.Join(err, lb.Close())
}

// Uninstall detaches and unpins everything under a node's pin directory
// (links first, so no program is left running on a half-removed map set).
// It needs no loaded LB: `skep lab down` and tests use it.
func Uninstall(pinDir string) error {
	var errs []error
	linkDir := filepath.Join(pinDir, "links")
	entries, err := os.ReadDir(linkDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		p := filepath.Join(linkDir, e.Name())
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open link %s: %w", p, err))
			_ = os.Remove(p)
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
		}
	}
	_ = os.Remove(linkDir)
	entries, err = os.ReadDir(pinDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	// The shared root goes with its last node, so a machine whose data paths
	// are all removed holds no skep trace in bpffs; another node's pins keep
	// it (the remove fails on a non-empty directory, which is fine).
	if filepath.Dir(pinDir) == PinRoot {
		_ = os.Remove(PinRoot)
	}
	return errors.Join(errs...)
}

type hook struct {
	name   string
	prog   *ebpf.Program
	attach ebpf.AttachType
}

func (lb *LB) cgroupHooks() []hook {
	p := &lb.objs.lbPrograms
	return []hook{
		{"sock_connect4", p.SockConnect4, ebpf.AttachCGroupInet4Connect},
		{"sock_sendmsg4", p.SockSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{"sock_recvmsg4", p.SockRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		{"sock_getpeer4", p.SockGetpeer4, ebpf.AttachCgroupInet4GetPeername},
		{"sock_connect6", p.SockConnect6, ebpf.AttachCGroupInet6Connect},
		{"sock_sendmsg6", p.SockSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		{"sock_recvmsg6", p.SockRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
		{"sock_getpeer6", p.SockGetpeer6, ebpf.AttachCgroupInet6GetPeername},
	}
}

// AttachCgroup attaches the socket-LB programs to a cgroup v2 directory
// (the node's pod cgroup parent; never the root cgroup in tests and labs).
// Links already pinned for that cgroup get this process's programs swapped
// in atomically; links pinned for another cgroup are replaced.
func (lb *LB) AttachCgroup(cgroupPath string) error {
	var fsst unix.Statfs_t
	if err := unix.Statfs(cgroupPath, &fsst); err != nil {
		return fmt.Errorf("attach cgroup: %w", err)
	}
	if fsst.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("attach cgroup: %s is not in a cgroup v2 hierarchy", cgroupPath)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(cgroupPath, &st); err != nil {
		return fmt.Errorf("attach cgroup: %w", err)
	}
	// The root of the hierarchy has inode 1 on cgroup2.
	if st.Ino == 1 && !lb.opts.AllowRootCgroup {
		return fmt.Errorf("attach cgroup: %s is the root cgroup (every process on the machine); set AllowRootCgroup for a real install", cgroupPath)
	}
	for _, h := range lb.cgroupHooks() {
		pin := filepath.Join(lb.pinDir, "links", "cgroup_"+h.name)
		if done, err := lb.updatePinned(pin, h.prog, func(info *link.Info) bool {
			c := info.Cgroup()
			return c != nil && c.CgroupId == st.Ino
		}); err != nil {
			return fmt.Errorf("attach %s: %w", h.name, err)
		} else if done {
			continue
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: h.prog})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", h.name, cgroupPath, err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin %s: %w", h.name, err)
		}
		l.Close()
	}
	lb.mu.Lock()
	lb.cgroup = cgroupPath
	lb.mu.Unlock()
	return nil
}

// AttachTCX attaches the NodePort programs to an interface of the current
// network namespace (the node's uplink), ingress and egress, as pinned tcx
// links. On kernels without tcx (before 6.6) it falls back to cls_bpf
// filters on a clsact qdisc, which outlive the process by themselves and are
// replaced in place by the next attach.
func (lb *LB) AttachTCX(ifname string) error {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("attach tcx: %w", err)
	}
	p := &lb.objs.lbPrograms
	for _, h := range []hook{
		{"tc_nodeport_in", p.TcNodeportIn, ebpf.AttachTCXIngress},
		{"tc_nodeport_out", p.TcNodeportOut, ebpf.AttachTCXEgress},
	} {
		if !kernelHasTCX() {
			if err := attachClsact(iface.Index, h); err != nil {
				return fmt.Errorf("attach %s to %s: %w", h.name, ifname, err)
			}
			continue
		}
		pin := filepath.Join(lb.pinDir, "links", "tcx_"+sanitize(ifname)+"_"+h.name)
		if done, err := lb.updatePinned(pin, h.prog, func(info *link.Info) bool {
			t := info.TCX()
			return t != nil && int(t.Ifindex) == iface.Index
		}); err != nil {
			return fmt.Errorf("attach %s: %w", h.name, err)
		} else if done {
			continue
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: iface.Index, Program: h.prog, Attach: h.attach})
		if errors.Is(err, ebpf.ErrNotSupported) {
			if err := attachClsact(iface.Index, h); err != nil {
				return fmt.Errorf("attach %s to %s: %w", h.name, ifname, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", h.name, ifname, err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin %s: %w", h.name, err)
		}
		l.Close()
	}
	return nil
}

// kernelHasTCX is false to force the cls_bpf fallback (tests); otherwise
// the fallback is taken when link.AttachTCX says tcx is not supported.
var kernelHasTCX = func() bool { return true }

// attachClsact puts h's program on the interface as a direct-action
// cls_bpf filter with a fixed priority and handle, so attaching again
// replaces it atomically.
func attachClsact(ifindex int, h hook) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if h.attach == ebpf.AttachTCXEgress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           h.prog.FD(),
		Name:         h.name,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("cls_bpf filter: %w", err)
	}
	return nil
}

// updatePinned swaps prog into the link pinned at pin when same says it is
// attached where we want it. A pinned link attached elsewhere is detached.
func (lb *LB) updatePinned(pin string, prog *ebpf.Program, same func(*link.Info) bool) (bool, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open pinned link: %w", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("link info: %w", err)
	}
	if same(info) {
		if err := l.Update(prog); err != nil {
			return false, fmt.Errorf("update pinned link: %w", err)
		}
		return true, nil
	}
	if err := l.Unpin(); err != nil {
		return false, fmt.Errorf("unpin stale link: %w", err)
	}
	return false, nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '.' {
			return '_'
		}
		return r
	}, s)
}

// ip4 is an IPv4 address as the programs hold it: network byte order in
// memory, read as a host-endian integer. The zero Addr is 0.
func ip4(a netip.Addr) uint32 {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// port16 is a port in network byte order, read as a host-endian integer.
func port16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func hostPort(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

// gcOrphans deletes what a writer that died mid-update left unreferenced:
// slots of no service, backends no slot names and reverse-NAT entries of
// no service.
func (lb *LB) gcOrphans() {
	st := lb.st
	if err := lb.deleteKeys(lb.objs.Lb4Services, st.strays); err != nil {
		lb.log.Warn("delete stray slots", "err", err)
	}
	st.strays = nil
	for k, e := range st.backends {
		if e.refs > 0 {
			continue
		}
		if err := lb.objs.Lb4Backends.Delete(e.id); err == nil {
			lb.log.Info("removed orphan backend", "id", e.id, "addr", k.addr.String())
		}
		delete(st.backends, k)
		delete(st.byID, e.id)
	}
	var (
		id  uint16
		rn  lbLb4Revnat
		ids []uint16
	)
	it := lb.objs.Lb4Revnat.Iterate()
	for it.Next(&id, &rn) {
		if _, ok := st.revNats[id]; !ok {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		_ = lb.objs.Lb4Revnat.Delete(id)
		_ = lb.objs.Lb4SvcNames.Delete(id)
	}
}

// kernelHasSockDestroy is haveSockDestroy; tests replace it to load as on
// an older kernel.
var kernelHasSockDestroy = haveSockDestroy

// haveSockDestroy reports whether the kernel has the bpf_sock_destroy kfunc
// (Linux 6.5+), which sock_udp_term calls.
func haveSockDestroy() bool {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return false
	}
	_, err = kernel.AnyTypeByName("bpf_sock_destroy")
	return err == nil
}
