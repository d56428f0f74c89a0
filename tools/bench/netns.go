package bench

import (
	"fmt"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// The harness works in namespaces through the CNI plugins' ns package, as
// the rest of skep does: NetNS.Do runs a function on an OS thread switched
// into the namespace, and retires the thread if switching back fails, so no
// other goroutine ever runs in the wrong namespace. Sockets made inside Do
// belong to that namespace for their whole life, whichever thread later
// uses them.

// newNetns creates an anonymous network namespace and returns an open
// handle to it. Nothing is mounted anywhere: the namespace lives exactly as
// long as this handle, a socket or a process in it, so it vanishes with the
// harness process even when that is killed. Children reach it by path
// (nsPath) through nsenter. (Named namespaces under /run/netns were tried
// first: another tool's first `ip netns add` bind-mounts /run/netns over
// itself, hiding mounts made before it so they can never be removed.)
func newNetns() (ns.NetNS, error) {
	n, err := ns.TempNetNS()
	if err != nil {
		return nil, fmt.Errorf("create netns: %w", err)
	}
	return n, nil
}

// nsPath is a path other processes can open to enter n while this process
// holds it open. (n.Path() names the thread that created the namespace,
// which has left it since.)
func nsPath(n ns.NetNS) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.Fd())
}

// netlinkIn returns a netlink handle whose sockets were made in n, so the
// links, addresses and routes it manages are n's from any thread.
func netlinkIn(n ns.NetNS) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := n.Do(func(ns.NetNS) error {
		var err error
		h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}
