package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProto marks the lab's routes in the root netns (`ip route` shows
// "proto 77"); with the lab's metric it tells one lab's routes from another's.
const routeProto = netlink.RouteProtocol(77)

// guardedPrefixes are the lab CIDRs the root netns must never route out of
// its real interface. The root netns has no link into the lab (see the
// package doc), so it routes none of them itself: all get unreachable.
func (c Config) guardedPrefixes() []netip.Prefix {
	return []netip.Prefix{c.PodCIDR, c.ServiceCIDR, c.Underlay}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addGuardRoutes adds `unreachable <prefix> proto 77 metric <m>` in the
// root netns for every guarded prefix: a packet to a lab address that
// escapes the lab's namespaces fails at once instead of leaving on eth0.
func (c Config) addGuardRoutes() error {
	for _, p := range c.guardedPrefixes() {
		r := &netlink.Route{Dst: ipNet(p), Type: unix.RTN_UNREACHABLE, Protocol: routeProto,
			Priority: c.routeMetric(), Table: unix.RT_TABLE_MAIN}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add unreachable route %s: %w", p, err)
		}
	}
	return nil
}

// guardRoutes lists this lab's unreachable routes in the root netns.
func (c Config) guardRoutes() ([]netlink.Route, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routeProto},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []netlink.Route
	for _, r := range rs {
		if r.Type == unix.RTN_UNREACHABLE && r.Priority == c.routeMetric() {
			out = append(out, r)
		}
	}
	return out, nil
}

// delGuardRoutes removes this lab's unreachable routes, whatever prefixes
// they were made for.
func (c Config) delGuardRoutes() error {
	rs, err := c.guardRoutes()
	if err != nil {
		return err
	}
	var errs []error
	for i := range rs {
		if err := netlink.RouteDel(&rs[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", rs[i].Dst, err))
		}
	}
	return errors.Join(errs...)
}
