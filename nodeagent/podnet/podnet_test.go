package podnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/cni"
	"github.com/skep-dev/skep/cni/ipam"
	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/nodeagent/netns"
)

// pluginDir holds skep-cni for the tests: a link to the test binary itself,
// which is the plugin when it runs under that name (TestMain), exactly as
// cmd/skep-cni is.
var pluginDir string

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "skep-cni" {
		skel.PluginMainFuncs(cni.Funcs(), cni.VersionInfo, cni.About)
		os.Exit(0)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	self, err := os.Executable()
	if err == nil {
		pluginDir, err = os.MkdirTemp("", "skep-podnet-plugin-")
	}
	if err == nil {
		defer os.RemoveAll(pluginDir)
		err = os.Symlink(self, filepath.Join(pluginDir, "skep-cni"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "plugin link:", err)
		return 1
	}
	return m.Run()
}

func TestNewRejects(t *testing.T) {
	good := Config{Network: cni.NetConf{PluginConf: types.PluginConf{Name: "n"}, Subnet: "10.250.1.0/24"}}
	if _, err := New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no subnet":       func(c *Config) { c.Network.Subnet = "" },
		"no name":         func(c *Config) { c.Network.Name = "" },
		"bad prefix":      func(c *Config) { c.NetnsPrefix = "a/b" },
		"bad prefix head": func(c *Config) { c.NetnsPrefix = "-x" },
		"bad ifname":      func(c *Config) { c.IfName = "a/b" },
	} {
		c := good
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	n, _ := New(good)
	for _, id := range []string{"", "a/b", "-a", "a b"} {
		if _, err := n.Setup(context.Background(), Pod{ID: id}); err == nil {
			t.Errorf("setup with ID %q accepted", id)
		}
		if err := n.Teardown(context.Background(), id); err == nil {
			t.Errorf("teardown with ID %q accepted", id)
		}
	}
}

// node is a node of the test's own: a namespace where the plugin runs
// (its bridge and host veths live there) and dirs for everything else.
type node struct {
	cfg    Config
	netns  string // the node netns path
	nsDir  string
	subnet netip.Prefix
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireRoot(t)
	b := make([]byte, 4)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	dir := t.TempDir()
	nsDir := filepath.Join(dir, "netns")
	t.Cleanup(func() { _ = unix.Unmount(nsDir, unix.MNT_DETACH) })
	nodeNS, err := netns.Create(nsDir, "node-"+suffix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Remove(nsDir, "node-"+suffix) })
	subnet := netip.MustParsePrefix("10.250.7.0/24")
	return &node{
		netns:  nodeNS,
		nsDir:  nsDir,
		subnet: subnet,
		cfg: Config{
			Network:     cni.NetConf{PluginConf: types.PluginConf{Name: "podnet-test"}, Subnet: subnet.String(), DataDir: filepath.Join(dir, "cni")},
			PluginDirs:  []string{pluginDir},
			CacheDir:    filepath.Join(dir, "cache"),
			NetnsDir:    nsDir,
			NetnsPrefix: "pt" + suffix + "-",
			NodeNetns:   nodeNS,
			Stderr:      io.Discard,
		},
	}
}

func (nd *node) network(t *testing.T) *Network {
	t.Helper()
	n, err := New(nd.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// hostVeths lists the skep veths in the node's namespace.
func (nd *node) hostVeths(t *testing.T) []string {
	t.Helper()
	var out []string
	err := ns.WithNetNSPath(nd.netns, func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if _, ok := l.(*netlink.Veth); ok {
				out = append(out, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// allocations lists the plugin's IPAM records by container ID.
func (nd *node) allocations(t *testing.T) []string {
	t.Helper()
	pool, err := ipam.NewPool(nd.subnet)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ipam.Open(filepath.Join(nd.cfg.Network.DataDir, nd.cfg.Network.Name), pool, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	err = s.View(func(tx *ipam.Tx) error {
		all, err := tx.List()
		for _, a := range all {
			ids = append(ids, a.ContainerID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// podAddr reads eth0's IPv4 address inside the pod's namespace.
func podAddr(t *testing.T, path string) netip.Addr {
	t.Helper()
	var a netip.Addr
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 {
			return fmt.Errorf("addresses of eth0: %v %v", addrs, err)
		}
		a, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSetupTeardown(t *testing.T) {
	nd := newNode(t)
	n := nd.network(t)
	ctx := context.Background()
	t.Cleanup(func() { _ = n.GC(ctx, nil) })

	// Concurrently, as an agent's workers would (run with -race: the
	// plugin exec is shared).
	pods := []Pod{
		{ID: "uid-a", Namespace: "default", Name: "a", UID: "uid-a"},
		{ID: "uid-b", Namespace: "default", Name: "b", UID: "uid-b"},
		{ID: "uid-c", Namespace: "other", Name: "c", UID: "uid-c"},
	}
	sbs := make([]*Sandbox, len(pods))
	var wg sync.WaitGroup
	errs := make([]error, len(pods))
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sbs[i], errs[i] = n.Setup(ctx, p)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for i, sb := range sbs {
		if len(sb.IPs) != 1 || !nd.subnet.Contains(sb.IPs[0]) || seen[sb.IPs[0]] {
			t.Fatalf("pod %s: IPs %v", pods[i].ID, sb.IPs)
		}
		seen[sb.IPs[0]] = true
		if sb.Netns != n.NetnsPath(pods[i].ID) || !sb.Attached {
			t.Errorf("sandbox %+v", sb)
		}
		if got := podAddr(t, sb.Netns); got != sb.IPs[0] {
			t.Errorf("pod %s: eth0 has %s, result says %s", pods[i].ID, got, sb.IPs[0])
		}
		if err := n.Check(ctx, pods[i].ID); err != nil {
			t.Errorf("check %s: %v", pods[i].ID, err)
		}
	}
	if v := nd.hostVeths(t); len(v) != 3 {
		t.Errorf("host veths: %v, want 3", v)
	}

	// Setup again (an agent restarted, the pod is still there): the same
	// network, no second ADD.
	again, err := n.Setup(ctx, pods[0])
	if err != nil || again.IPs[0] != sbs[0].IPs[0] {
		t.Errorf("second setup: %+v %v, want %v", again, err, sbs[0].IPs)
	}
	if v := nd.hostVeths(t); len(v) != 3 {
		t.Errorf("host veths after a second setup: %v, want 3", v)
	}

	// A new Network on the same node (the agent after a restart) finds
	// every sandbox with its pod.
	list, err := nd.network(t).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("list: %+v", list)
	}
	for i, sb := range list {
		if sb.Pod != pods[i] || !sb.Attached || sb.Netns != sbs[i].Netns || !slices.Equal(sb.IPs, sbs[i].IPs) {
			t.Errorf("listed %+v, want %+v at %s with %v", sb, pods[i], sbs[i].Netns, sbs[i].IPs)
		}
	}

	for range 2 {
		if err := n.Teardown(ctx, "uid-b"); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	if _, err := os.Stat(sbs[1].Netns); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("netns after teardown: %v", err)
	}
	if v := nd.hostVeths(t); len(v) != 2 {
		t.Errorf("host veths after teardown: %v, want 2", v)
	}
	if a := nd.allocations(t); slices.Contains(a, n.name("uid-b")) || len(a) != 2 {
		t.Errorf("allocations after teardown: %v", a)
	}
	if err := n.Check(ctx, "uid-b"); err == nil {
		t.Error("check of a removed sandbox passed")
	}

	// The pod's namespace vanished under us (an operator ran ip netns
	// del): teardown still frees the address.
	if err := netns.Remove(nd.nsDir, n.name("uid-c")); err != nil {
		t.Fatal(err)
	}
	if err := n.Teardown(ctx, "uid-c"); err != nil {
		t.Errorf("teardown without a netns: %v", err)
	}
	if a := nd.allocations(t); !slices.Equal(a, []string{n.name("uid-a")}) {
		t.Errorf("allocations: %v, want only uid-a's", a)
	}
	if err := n.Status(ctx); err != nil {
		t.Errorf("status: %v", err)
	}
}

// TestSetupRollsBack: a Setup that fails leaves no namespace and no record.
func TestSetupRollsBack(t *testing.T) {
	nd := newNode(t)
	ctx := context.Background()

	noPlugin := nd.cfg
	noPlugin.PluginDirs = []string{t.TempDir()}
	n, err := New(noPlugin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Setup(ctx, Pod{ID: "p"}); err == nil {
		t.Fatal("setup without a plugin succeeded")
	}
	if list, err := n.List(); err != nil || len(list) != 0 {
		t.Errorf("after a failed setup: %+v %v", list, err)
	}

	// The plugin itself fails: the pool is full.
	tiny := nd.cfg
	tiny.Network.Subnet = "10.250.8.0/30" // gateway .1, one pod: .2
	n2, err := New(tiny)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.GC(ctx, nil) })
	if _, err := n2.Setup(ctx, Pod{ID: "first"}); err != nil {
		t.Fatal(err)
	}
	_, err = n2.Setup(ctx, Pod{ID: "second"})
	if err == nil {
		t.Fatal("setup in a full pool succeeded")
	}
	t.Logf("full pool: %v", err)
	list, err := n2.List()
	if err != nil || len(list) != 1 || list[0].Pod.ID != "first" {
		t.Errorf("after a failed setup: %+v %v, want only the first pod", list, err)
	}
	if _, err := os.Stat(n2.NetnsPath("second")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("netns of the failed pod: %v", err)
	}
}

// TestGC: what a crash leaves — sandboxes of pods gone meanwhile, a
// namespace made just before the crash, an address the plugin allocated
// with no libcni record — goes; the pods kept stay untouched.
func TestGC(t *testing.T) {
	nd := newNode(t)
	ctx := context.Background()
	n := nd.network(t)
	t.Cleanup(func() { _ = n.GC(ctx, nil) })
	for _, id := range []string{"keep", "gone", "leak"} {
		if _, err := n.Setup(ctx, Pod{ID: id, Namespace: "ns", Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	// A crash right after making a namespace.
	if _, err := netns.Create(nd.nsDir, n.name("half")); err != nil {
		t.Fatal(err)
	}
	// "leak" loses its libcni record and its namespace (with its veth):
	// only the plugin's allocation remains.
	if err := os.Remove(filepath.Join(nd.cfg.CacheDir, "results", nd.cfg.Network.Name+"-"+n.name("leak")+"-eth0")); err != nil {
		t.Fatal(err)
	}
	if err := netns.Remove(nd.nsDir, n.name("leak")); err != nil {
		t.Fatal(err)
	}
	// Something else's namespace in the same dir is not ours to collect.
	if _, err := netns.Create(nd.nsDir, "other-ns"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Remove(nd.nsDir, "other-ns") })

	restarted := nd.network(t)
	list, err := restarted.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sb := range list {
		ids = append(ids, sb.Pod.ID)
	}
	if !slices.Equal(ids, []string{"gone", "half", "keep"}) {
		t.Errorf("listed %v", ids)
	}
	if err := restarted.GC(ctx, []string{"keep"}); err != nil {
		t.Fatalf("gc: %v", err)
	}
	list, err = restarted.List()
	if err != nil || len(list) != 1 || list[0].Pod.ID != "keep" || !list[0].Attached {
		t.Errorf("after gc: %+v %v", list, err)
	}
	if a := nd.allocations(t); !slices.Equal(a, []string{n.name("keep")}) {
		t.Errorf("allocations after gc: %v", a)
	}
	if v := nd.hostVeths(t); len(v) != 1 {
		t.Errorf("host veths after gc: %v", v)
	}
	if err := restarted.Check(ctx, "keep"); err != nil {
		t.Errorf("kept pod: %v", err)
	}
	if names, _ := netns.List(nd.nsDir, "other"); len(names) != 1 {
		t.Errorf("gc removed a namespace not its own: %v", names)
	}
}

// TestNodeGone: once the node's namespace is gone, teardown and GC still
// remove the pods' namespaces.
func TestNodeGone(t *testing.T) {
	nd := newNode(t)
	ctx := context.Background()
	n := nd.network(t)
	if _, err := n.Setup(ctx, Pod{ID: "p"}); err != nil {
		t.Fatal(err)
	}
	if err := netns.Remove(nd.nsDir, filepath.Base(nd.netns)); err != nil {
		t.Fatal(err)
	}
	if err := n.GC(ctx, nil); err != nil {
		t.Errorf("gc: %v", err)
	}
	if names, _ := netns.List(nd.nsDir, nd.cfg.NetnsPrefix); len(names) != 0 {
		t.Errorf("namespaces left: %v", names)
	}
	if _, err := n.Setup(ctx, Pod{ID: "q"}); err == nil || !strings.Contains(err.Error(), "setup q") {
		t.Errorf("setup on a gone node: %v", err)
	}
	if names, _ := netns.List(nd.nsDir, nd.cfg.NetnsPrefix); len(names) != 0 {
		t.Errorf("namespaces left by a failed setup: %v", names)
	}
}
