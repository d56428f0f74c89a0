package testutil

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// Netns is a network namespace of one test's own, bind-mounted under
// /run/netns with a random name, so `ip netns exec <Name>` reaches it too.
type Netns struct {
	ns.NetNS
	Name string

	remove sync.Once
	err    error
}

// NewNetns makes a network namespace with lo up and each of addrs (host
// addresses) on lo, and removes it when the test ends, failed or not. It
// needs root: without, the test skips (fails under CI=true).
func NewNetns(t testing.TB, addrs ...string) *Netns {
	t.Helper()
	RequireRoot(t)
	h, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	n := &Netns{NetNS: h, Name: filepath.Base(h.Path())}
	t.Cleanup(func() {
		if err := n.Remove(); err != nil {
			t.Errorf("remove netns %s: %v", n.Name, err)
		}
	})
	n.Run(t, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: netlink.NewIPNet(net.IP(ip.AsSlice()))}); err != nil {
				return fmt.Errorf("add %s: %w", a, err)
			}
		}
		return nil
	})
	return n
}

// Run runs fn on a thread inside the namespace; an error fails the test.
func (n *Netns) Run(t testing.TB, fn func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatalf("in netns %s: %v", n.Name, err)
	}
}

// Command is name with args to run inside the namespace (ip netns exec).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Remove closes and unmounts the namespace; the kernel frees it once
// nothing else holds it. A test that removes one early calls it; later
// calls, the test's cleanup among them, return the first call's result.
func (n *Netns) Remove() error {
	n.remove.Do(func() {
		n.Close()
		n.err = testutils.UnmountNS(n.NetNS)
	})
	return n.err
}

// ServeAddrs runs in namespace n a TCP server and a UDP echo on each
// addr:port that answer with their own address (addr:port), until the test
// ends: a client sees which backend it reached.
func ServeAddrs(t testing.TB, n ns.NetNS, port int, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		id := []byte(net.JoinHostPort(a, strconv.Itoa(port)))
		var (
			ln net.Listener
			pc net.PacketConn
		)
		err := n.Do(func(ns.NetNS) error {
			var err error
			if ln, err = net.Listen("tcp4", string(id)); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp4", string(id))
			return err
		})
		t.Cleanup(func() {
			if ln != nil {
				ln.Close()
			}
			if pc != nil {
				pc.Close()
			}
		})
		if err != nil {
			t.Fatalf("listen %s: %v", id, err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write(id)
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(id, from)
			}
		}()
	}
}
