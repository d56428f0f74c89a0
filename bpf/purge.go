package bpf

import (
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skep-dev/skep/proxy/datapath"
)

// purgeGone forgets flows to backends that no service names any more: their
// conntrack entries go (only the tc path, so only External frontends' backends
// have any), and connected UDP sockets still aimed at them are
// destroyed (the application sees ECONNABORTED and reconnects through the
// frontend to a live backend), so no UDP flow stays stuck on a dead backend.
func (lb *LB) purgeGone(gone []goneBackend) error {
	if len(gone) == 0 {
		return nil
	}
	ids := map[uint32]bool{}
	var udp []netip.AddrPort
	for _, g := range gone {
		if g.external {
			ids[g.id] = true
		}
		if g.key.proto == datapath.UDP {
			udp = append(udp, g.key.addr)
		}
	}
	var errs []error
	if len(ids) > 0 {
		if err := lb.purgeConntrack(ids); err != nil {
			errs = append(errs, err)
		}
	}
	if len(udp) > 0 {
		if err := lb.destroyUDPSockets(udp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (lb *LB) purgeConntrack(ids map[uint32]bool) error {
	var dead []lbLb4CtKey
	err := batchRead(lb.objs.Lb4Ct, func(k *lbLb4CtKey, v *lbLb4CtEntry) {
		if ids[v.BackendId] {
			dead = append(dead, *k)
		}
	})
	if err != nil {
		return fmt.Errorf("purge conntrack: %w", err)
	}
	for i := range dead {
		if err := lb.objs.Lb4Ct.Delete(&dead[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("purge conntrack: %w", err)
		}
	}
	return nil
}

// DestroyUDPSockets destroys every connected UDP socket whose peer is one of
// backends, in each network namespace Options.PodNetns lists (by default
// those of the attached cgroup's processes, and the caller's). It runs the sock_udp_term iterator, which calls the
// bpf_sock_destroy kfunc; an iterator walks the sockets of the namespace it
// is opened in, hence one pass per namespace.
func (lb *LB) DestroyUDPSockets(backends []netip.AddrPort) error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.destroyUDPSockets(backends)
}

func (lb *LB) destroyUDPSockets(backends []netip.AddrPort) error {
	if lb.objs.SockUdpTerm == nil {
		return nil // no bpf_sock_destroy on this kernel (Load said so)
	}
	m := lb.objs.Lb4SockTerm
	var keys []lbLb4TermKey
	for _, b := range backends {
		keys = append(keys, lbLb4TermKey{Address: ip4(b.Addr()), Port: port16(b.Port())})
	}
	one := uint8(1)
	for i := range keys {
		if err := m.Put(&keys[i], one); err != nil {
			return fmt.Errorf("destroy udp sockets: fill filter: %w", err)
		}
	}
	defer func() {
		for i := range keys {
			_ = m.Delete(&keys[i])
		}
	}()

	it, err := link.AttachIter(link.IterOptions{Program: lb.objs.SockUdpTerm})
	if err != nil {
		return fmt.Errorf("destroy udp sockets: attach iterator: %w", err)
	}
	defer it.Close()
	run := func() error {
		rd, err := it.Open()
		if err != nil {
			return err
		}
		defer rd.Close()
		_, err = io.Copy(io.Discard, rd)
		return err
	}

	var paths []string
	switch {
	case lb.opts.PodNetns != nil:
		if paths, err = lb.opts.PodNetns(); err != nil {
			return fmt.Errorf("destroy udp sockets: list netns: %w", err)
		}
	case lb.cgroup != "":
		if paths, err = NetnsInCgroup(lb.cgroup); err != nil {
			return fmt.Errorf("destroy udp sockets: %w", err)
		}
		fallthrough
	default:
		if err := run(); err != nil {
			return fmt.Errorf("destroy udp sockets: %w", err)
		}
	}
	var errs []error
	for _, p := range paths {
		// The iterator walks the sockets of the namespace its reader is
		// opened in; WithNetNSPath runs run on a thread switched there.
		err := ns.WithNetNSPath(p, func(ns.NetNS) error { return run() })
		if err != nil {
			errs = append(errs, fmt.Errorf("destroy udp sockets in %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
