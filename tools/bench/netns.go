package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on an OS thread switched into ns. Sockets fn creates belong
// to ns for their whole life, whichever thread later uses them. The thread is
// switched back before it is unlocked; if that fails the thread stays locked
// and Go retires it when the goroutine ends, so no other goroutine ever runs
// in the wrong namespace.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return // thread stays locked: retired
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// newNetns creates an anonymous network namespace and returns an open
// handle to it. Nothing is mounted anywhere: the namespace lives exactly as
// long as this handle, a socket or a process in it, so it vanishes with the
// harness process even when that is killed. Children reach it by path
// (nsPath) through nsenter. (Named namespaces under /run/netns were tried
// first: another tool's first `ip netns add` bind-mounts /run/netns over
// itself, hiding mounts made before it so they can never be removed.)
func newNetns() (netns.NsHandle, error) {
	type res struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			c <- res{netns.None(), fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New() // unshares this thread into the new netns
		if rerr := netns.Set(orig); rerr != nil {
			if err == nil {
				ns.Close()
			}
			c <- res{netns.None(), fmt.Errorf("restore netns: %w", rerr)}
			return // thread stays locked: retired
		}
		runtime.UnlockOSThread()
		if err != nil {
			c <- res{netns.None(), fmt.Errorf("create netns: %w", err)}
			return
		}
		c <- res{ns, nil}
	}()
	r := <-c
	return r.ns, r.err
}

// nsPath is a path other processes can open to enter ns while this process
// holds it open.
func nsPath(ns netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

// writeSysctl writes a /proc/sys value as seen from inside ns (net.* sysctls
// are per namespace and resolved by the opener's namespace).
func writeSysctl(ns netns.NsHandle, key, value string) error {
	return inNetns(ns, func() error {
		p := filepath.Join("/proc/sys", filepath.FromSlash(key))
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
		return nil
	})
}
