// Package netns makes and removes named network namespaces: a namespace kept
// alive by a bind mount of its nsfs file at <dir>/<name>, the way `ip netns
// add` and container runtimes keep a pod's namespace alive while no process
// is in it. The default dir is /run/netns, where `ip netns` finds them.
//
// The dir is made a shared mount point first (bind-mounted onto itself when
// it is not a mount point yet), exactly as iproute2 does. Two reasons: an
// unmount then propagates to every mount namespace the dir was copied into,
// so a removed namespace is really freed; and a later `ip netns add` finds
// the dir already shared and does not bind-mount it over itself, which would
// hide the mounts made before it where no unmount can reach them.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultDir is where iproute2 keeps named namespaces.
const DefaultDir = "/run/netns"

// Create makes a network namespace named name under dir (DefaultDir when
// empty), with its loopback up, and returns its path. A namespace of that
// name already there is an error wrapping fs.ErrExist. Whatever fails
// part-way is undone.
func Create(dir, name string) (path string, err error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := validName(name); err != nil {
		return "", err
	}
	if err := sharedMountPoint(dir); err != nil {
		return "", err
	}
	path = filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			_ = Remove(dir, name)
		}
	}()
	// The namespace is made by unsharing a locked thread, which then
	// returns to its own namespace before it may run anything else. If it
	// cannot, it stays locked and Go retires it with the goroutine.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		orig, err := os.Open(self)
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = unix.Mount(self, path, "none", unix.MS_BIND, "")
		if err != nil {
			err = fmt.Errorf("bind mount %s: %w", path, err)
		} else if err = loopbackUp(); err != nil {
			err = fmt.Errorf("loopback up: %w", err)
		}
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("back to the original netns: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	return path, nil
}

// Remove unmounts and deletes the namespace dir/name (DefaultDir when dir
// is empty). One already gone, or a file never mounted (a Create that
// crashed half-way), is fine. The namespace itself, with its links, goes
// once no process and no open file holds it.
func Remove(dir, name string) error {
	if dir == "" {
		dir = DefaultDir
	}
	if err := validName(name); err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	// EINVAL: not a mount point; ENOENT: no file.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("remove netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
	}
	return nil
}

func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// List returns the names in dir (DefaultDir when empty) that start with
// prefix, sorted. A dir that does not exist holds none.
func List(dir, prefix string) ([]string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// mountMu keeps this process's Creates from both finding dir not yet a
// mount point and both bind-mounting it onto itself. (Between processes
// the race is iproute2's too.)
var mountMu sync.Mutex

// sharedMountPoint makes dir a shared mount point, as iproute2 does before
// its first namespace: make it shared, and if that fails because dir is not
// a mount point, bind-mount it onto itself (recursively, so namespaces
// already mounted there stay reachable) and try again.
func sharedMountPoint(dir string) error {
	mountMu.Lock()
	defer mountMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("netns dir: %w", err)
	}
	bound := false
	for {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if err != unix.EINVAL || bound {
			return fmt.Errorf("make %s a shared mount: %w", dir, err)
		}
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s onto itself: %w", dir, err)
		}
		bound = true
	}
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("netns name %q: want a file name", name)
	}
	return nil
}
