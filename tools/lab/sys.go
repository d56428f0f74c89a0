package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/internal/cgroup2"
)

// netnsRunDir is where `ip netns` keeps named namespaces.
const netnsRunDir = "/run/netns"

// addNetns makes a named network namespace with `ip netns add`, which also
// makes /run/netns a shared mount point first if it is not one yet (doing
// the bind mount ourselves races with other tools doing the same and can
// hide our mounts under theirs), and brings its loopback up.
func addNetns(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return inNetns(filepath.Join(netnsRunDir, name), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
}

// delNetns removes a named namespace; one already gone is fine. Its links
// go with it once no process holds it.
func delNetns(name string) error {
	if _, err := os.Stat(filepath.Join(netnsRunDir, name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// labNetns lists the named namespaces of the lab with this prefix.
func labNetns(prefix string) []string {
	ents, _ := os.ReadDir(netnsRunDir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// inNetns runs fn on a locked thread switched into the namespace at path:
// sockets and netlink handles fn makes, and processes it starts, belong to
// that namespace.
func inNetns(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// writeSysctl sets a per-netns sysctl inside the namespace at path.
func writeSysctl(path, key, value string) error {
	return inNetns(path, func() error {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
		return nil
	})
}

// dialerIn dials from inside a namespace: the socket is made there and
// stays there, whichever thread uses it later.
func dialerIn(path string) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(path, func() (err error) {
			c, err = net.DialTimeout(network, addr, 2*time.Second)
			return err
		})
		return c, err
	}
}

// labCgroup is the root of the lab's cgroup subtree, never the machine's
// root cgroup.
func (c Config) labCgroup() (string, error) {
	mnt, err := cgroup2.Mount()
	if err != nil {
		return "", err
	}
	return filepath.Join(mnt, c.Prefix), nil
}

// mkCgroup makes a cgroup (and its parents) under the lab's subtree.
func mkCgroup(path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("make cgroup %s: %w", path, err)
	}
	return nil
}

// killCgroup kills every process in a cgroup subtree (cgroup.kill, Linux
// 5.14+; else SIGKILL to each listed pid) and waits, bounded, until the
// subtree is empty.
func killCgroup(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0o644); err != nil {
		for _, pid := range cgroupPids(path) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(path, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes still running after SIGKILL: %v", path, cgroupPids(path))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupPids lists the processes of a cgroup subtree.
func cgroupPids(path string) []int {
	var pids []int
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// rmCgroupTree removes a cgroup subtree, deepest first. The kernel may
// take a moment to let go of just-killed tasks, so rmdir is retried.
func rmCgroupTree(path string) error {
	var dirs []string
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		var err error
		for range 100 {
			if err = os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
	}
	return nil
}
