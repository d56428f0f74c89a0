package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/cni/ipam"
	"github.com/skep-dev/skep/internal/testutil"
)

// pluginDir holds the skep-cni binary built once for the package's tests, so
// every test drives the plugin the way a runtime does: exec with env + stdin.
var pluginDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "skep-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "skep-cni"), "github.com/skep-dev/skep/cmd/skep-cni").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build skep-cni: %v\n%s", err, out)
		return 1
	}
	pluginDir = dir
	return m.Run()
}

// network is one skep network on one test node: a node namespace (where the
// runtime, and so the plugin, runs), a data dir and a libcni runtime.
type network struct {
	t       testing.TB
	node    *testutil.Netns
	name    string
	subnet  string
	bridge  string
	dataDir string
	version string
	extra   map[string]any // more plugin config fields
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
}

type netOpt func(*network)

func withVersion(v string) netOpt          { return func(n *network) { n.version = v } }
func withNode(node *testutil.Netns) netOpt { return func(n *network) { n.node = node } }
func withPluginField(k string, v any) netOpt {
	return func(n *network) { n.extra = map[string]any{k: v} }
}

func newNetwork(t testing.TB, subnet string, opts ...netOpt) *network {
	t.Helper()
	testutil.RequireRoot(t)
	n := &network{
		t:       t,
		name:    "skeptest-" + testutil.RandSuffix(),
		subnet:  subnet,
		bridge:  "skep0",
		dataDir: t.TempDir(),
		version: "1.1.0",
	}
	for _, o := range opts {
		o(n)
	}
	if n.node == nil {
		n.node = testutil.NewNetns(t)
	}
	n.cni = newRuntime([]string{pluginDir}, t.TempDir())
	var err error
	n.list, err = libcni.NetworkConfFromBytes(n.confList())
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return n
}

func (n *network) pluginConf() map[string]any {
	m := map[string]any{
		"type":    "skep-cni",
		"bridge":  n.bridge,
		"subnet":  n.subnet,
		"mtu":     1400,
		"dataDir": n.dataDir,
	}
	for k, v := range n.extra {
		m[k] = v
	}
	return m
}

func (n *network) confList() []byte {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": n.version,
		"name":       n.name,
		"plugins":    []any{n.pluginConf()},
	})
	return b
}

// newRuntime is libcni as a runtime links it. The exec is explicit: with nil,
// CNIConfig fills it in lazily on first use, a data race when goroutines
// share one CNIConfig (as a runtime starting pods in parallel does).
func newRuntime(path []string, cacheDir string) *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir(path, cacheDir, exec)
}

// inNode runs fn on a thread in the node's namespace, so the plugin processes
// libcni starts are in the node's namespace, as under a real runtime.
func (n *network) inNode(fn func() error) error {
	return n.node.Do(func(ns.NetNS) error { return fn() })
}

func rt(id string, pod *testutil.Netns) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
}

func (n *network) add(id string, pod *testutil.Netns) (*current.Result, error) {
	var res types.Result
	err := n.inNode(func() (err error) {
		res, err = n.cni.AddNetworkList(context.Background(), n.list, rt(id, pod))
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (n *network) mustAdd(id string, pod *testutil.Netns) *current.Result {
	n.t.Helper()
	r, err := n.add(id, pod)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", id, err)
	}
	return r
}

func (n *network) check(id string, pod *testutil.Netns) error {
	return n.inNode(func() error { return n.cni.CheckNetworkList(context.Background(), n.list, rt(id, pod)) })
}

func (n *network) del(id string, pod *testutil.Netns) error {
	return n.inNode(func() error { return n.cni.DelNetworkList(context.Background(), n.list, rt(id, pod)) })
}

func (n *network) delPath(id, netnsPath string) error {
	return n.inNode(func() error {
		return n.cni.DelNetworkList(context.Background(), n.list, &libcni.RuntimeConf{ContainerID: id, NetNS: netnsPath, IfName: "eth0"})
	})
}

func (n *network) status() error {
	return n.inNode(func() error { return n.cni.GetStatusNetworkList(context.Background(), n.list) })
}

// gc runs GC the way a runtime that lost its state after a crash does: with
// an empty libcni cache, so nothing is DELeted by libcni itself and only the
// plugin's GC can find what leaked.
func (n *network) gc(valid ...string) error {
	var args libcni.GCArgs
	for _, id := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	fresh := newRuntime([]string{pluginDir}, n.t.TempDir())
	return n.inNode(func() error { return fresh.GCNetworkList(context.Background(), n.list, &args) })
}

// allocations reads the plugin's store directly.
func (n *network) allocations() []ipam.Allocation {
	n.t.Helper()
	c := n.conf()
	s, err := ipam.Open(c.StoreDir(), c.Pool(), 10*time.Second)
	if err != nil {
		n.t.Fatalf("open store: %v", err)
	}
	defer s.Close()
	var recs []ipam.Allocation
	s.View(func(tx *ipam.Tx) (err error) { recs, err = tx.List(); return err })
	return recs
}

func (n *network) conf() *NetConf {
	n.t.Helper()
	pc := n.pluginConf()
	pc["name"], pc["cniVersion"] = n.name, n.version
	b, _ := json.Marshal(pc)
	c, err := LoadConf(b)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// links returns the node namespace's links.
func (n *network) links() []netlink.Link {
	n.t.Helper()
	var ls []netlink.Link
	n.node.Run(n.t, func() (err error) { ls, err = netlinksafe.LinkList(); return err })
	return ls
}

func (n *network) skepVeths() []string {
	var names []string
	for _, l := range n.links() {
		if strings.HasPrefix(l.Attrs().Name, hostVethPrefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// podIP is the pod's address from an ADD result.
func podIP(t testing.TB, r *current.Result) net.IP {
	t.Helper()
	for _, ipc := range r.IPs {
		if ipc.Interface != nil && r.Interfaces[*ipc.Interface].Sandbox != "" {
			return ipc.Address.IP
		}
	}
	t.Fatalf("result has no pod address: %v", r)
	return nil
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// ping sends one ICMP echo from inside from.
func ping(t testing.TB, from *testutil.Netns, dst net.IP) {
	t.Helper()
	testutil.RequireBinary(t, "busybox")
	if out, err := from.Command("busybox", "ping", "-c", "1", "-W", "2", dst.String()).CombinedOutput(); err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", dst, from.Name, err, out)
	}
}

// tcpRoundTrip connects from `from` to a listener in `to` and echoes a line.
func tcpRoundTrip(t testing.TB, from, to *testutil.Netns, dst net.IP) {
	t.Helper()
	var ln net.Listener
	to.Run(t, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(dst.String(), "0"))
		return err
	})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.Copy(c, c)
	}()
	var conn net.Conn
	from.Run(t, func() (err error) {
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second)
		return err
	})
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	msg := "hello from " + from.Name + "\n"
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("tcp write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
		t.Fatalf("tcp echo %s -> %s: %q %v", from.Name, ln.Addr(), buf, err)
	}
}
