package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/cni/ipam"
)

// cmdGC frees every allocation whose attachment is not in
// cni.dev/valid-attachments, with its host veth if still there, then removes
// any skep veth left on the bridge that no allocation accounts for. This is
// what recovers addresses a crash leaked (the runtime lost the pod, so DEL
// never came). The runtime runs GC exclusively of ADD and DEL (spec), so an
// allocation of an ADD in progress cannot be mistaken for a leak. Errors are
// collected, not fatal: GC removes as much as it can.
func cmdGC(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := make(map[ipam.Attachment]bool, len(c.ValidAttachments))
	for _, a := range c.ValidAttachments {
		valid[ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}

	s, err := openStore(c)
	if err != nil {
		return cniError(err)
	}
	defer s.Close()

	var errs []error
	keep := map[string]bool{}
	err = s.Update(func(tx *ipam.Tx) error {
		recs, err := tx.List()
		if err != nil {
			return err
		}
		for _, rec := range recs {
			hostName := HostVethName(c.Name, rec.Attachment)
			if valid[rec.Attachment] {
				keep[hostName] = true
				continue
			}
			if err := deleteHostVeth(hostName); err != nil {
				// Keep the address while its link lives on.
				errs = append(errs, err)
				keep[hostName] = true
				continue
			}
			if _, _, err := tx.Release(rec.Attachment); err != nil {
				errs = append(errs, fmt.Errorf("release %s: %w", rec.Attachment, err))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("gc allocations: %w", err))
	}
	errs = append(errs, removeOrphanVeths(c, keep)...)
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrInternal, "gc incomplete", err.Error())
	}
	return nil
}

// removeOrphanVeths deletes this network's host veths not in keep: debris of
// an invocation killed between creating the veth and returning, or of a
// store that was lost.
func removeOrphanVeths(c *NetConf, keep map[string]bool) []error {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return []error{fmt.Errorf("list links: %w", err)}
	}
	var errs []error
	for _, l := range links {
		if !isNetworkVeth(l, c.Name) || keep[l.Attrs().Name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete orphan %s: %w", l.Attrs().Name, err))
		}
	}
	return errs
}

// statusNotAvailable is spec code 50: the plugin cannot service ADD.
const statusNotAvailable = 50

// cmdStatus reports ready when ADD can succeed: the bridge name is free or a
// bridge, the store opens and the pod range has a free address; otherwise
// code 50.
func cmdStatus(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	if l, err := netlinksafe.LinkByName(c.Bridge); err == nil && l.Type() != "bridge" {
		return types.NewError(statusNotAvailable, fmt.Sprintf("%s exists and is a %s, not a bridge", c.Bridge, l.Type()), "")
	}
	s, err := openStore(c)
	if errors.Is(err, ipam.ErrLockTimeout) {
		return cniError(err)
	}
	if err != nil {
		return types.NewError(statusNotAvailable, "ipam store unavailable", err.Error())
	}
	defer s.Close()
	var free int
	if err := s.View(func(tx *ipam.Tx) error { free = tx.Free(); return nil }); err != nil {
		return types.NewError(statusNotAvailable, "ipam store unreadable", err.Error())
	}
	if free <= 0 {
		return types.NewError(statusNotAvailable, fmt.Sprintf("pod range %s exhausted", c.Pool().Prefix()), "")
	}
	return nil
}
