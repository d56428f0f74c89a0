package netns

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/internal/testutil"
)

// testDir is a netns dir of the test's own; Create makes it a mount point,
// so it is unmounted before the temp dir is removed.
func testDir(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestCreateRemove(t *testing.T) {
	dir := testDir(t)
	path, err := Create(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(dir, "a") })
	if path != filepath.Join(dir, "a") {
		t.Errorf("path %s", path)
	}
	if inode(t, path) == inode(t, "/proc/self/ns/net") {
		t.Fatal("the namespace is this process's own")
	}
	// A mount point of its own, shared, as `ip netns add` leaves it.
	var found bool
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 6 && f[4] == dir {
			found = true
			if !slices.ContainsFunc(f[6:], func(s string) bool { return strings.HasPrefix(s, "shared:") }) {
				t.Errorf("%s is not a shared mount: %s", dir, l)
			}
		}
	}
	if !found {
		t.Errorf("%s is not a mount point", dir)
	}
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&unix.IFF_UP == 0 {
			t.Error("loopback is down")
		}
		links, err := netlink.LinkList()
		if len(links) != 1 {
			t.Errorf("links in a new namespace: %d (%v)", len(links), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := Create(dir, "a"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second create: %v, want ErrExist", err)
	}
	if _, err := Create(dir, "b"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(dir, "b") })
	if names, err := List(dir, ""); err != nil || !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("list: %v %v", names, err)
	}
	if names, _ := List(dir, "b"); !slices.Equal(names, []string{"b"}) {
		t.Errorf("list with prefix b: %v", names)
	}

	for range 2 {
		if err := Remove(dir, "a"); err != nil {
			t.Errorf("remove: %v", err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after remove: %v", err)
	}
	// A file a crashed Create left unmounted.
	if err := os.WriteFile(filepath.Join(dir, "half"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir, "half"); err != nil {
		t.Errorf("remove an unmounted file: %v", err)
	}
	if names, _ := List(filepath.Join(dir, "none"), ""); names != nil {
		t.Errorf("list of a missing dir: %v", names)
	}
	for _, bad := range []string{"", ".", "..", "x/y"} {
		if _, err := Create(dir, bad); err == nil {
			t.Errorf("create %q succeeded", bad)
		}
	}
}
