package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/cni/ipam"
	"github.com/skep-dev/skep/internal/testutil"
)

// Every configuration version the plugin supports round-trips ADD, CHECK and
// DEL, with the result in the version asked for; older ones are refused.
func TestConfigVersions(t *testing.T) {
	node := testutil.NewNetns(t)
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			n := newNetwork(t, "10.244.8.0/24", withVersion(v), withNode(node))
			pod := testutil.NewNetns(t)
			var res types.Result
			if err := n.inNode(func() (err error) {
				res, err = n.cni.AddNetworkList(context.Background(), n.list, rt("c1", pod))
				return err
			}); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("result version %s, want %s", res.Version(), v)
			}
			if err := n.check("c1", pod); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := n.del("c1", pod); err != nil {
				t.Errorf("DEL: %v", err)
			}
			if recs := n.allocations(); len(recs) != 0 {
				t.Errorf("left %v", recs)
			}
		})
	}
	t.Run("VERSION", func(t *testing.T) {
		n := newNetwork(t, "10.244.8.0/24", withNode(node))
		info, err := n.cni.GetVersionInfo(context.Background(), "skep-cni")
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(info.SupportedVersions()); got != "[0.4.0 1.0.0 1.1.0]" {
			t.Fatalf("supported versions %s", got)
		}
	})
	t.Run("0.3.1 refused", func(t *testing.T) {
		n := newNetwork(t, "10.244.8.0/24", withVersion("0.3.1"), withNode(node))
		_, err := n.add("c1", testutil.NewNetns(t))
		if cniCode(err) != types.ErrIncompatibleCNIVersion {
			t.Fatalf("ADD with 0.3.1: %v (code %d), want code 1", err, cniCode(err))
		}
	})
}

// execPlugin runs the binary directly with raw stdin, as a runtime does,
// and returns the error object it printed.
func execPlugin(t *testing.T, node *testutil.Netns, command string, stdin []byte, pod *testutil.Netns) error {
	t.Helper()
	args := &invoke.Args{Command: command, ContainerID: "bad-" + testutil.RandSuffix(), IfName: "eth0", Path: pluginDir}
	if pod != nil {
		args.NetNS = pod.Path()
	}
	var err error
	node.Do(func(ns.NetNS) error {
		_, err = invoke.ExecPluginWithResult(context.Background(), filepath.Join(pluginDir, "skep-cni"), stdin, args, nil)
		return nil
	})
	return err
}

// A bad configuration gets the spec's error code and creates nothing: no
// bridge, no store, nothing in the pod.
func TestBadConfig(t *testing.T) {
	n := newNetwork(t, "10.244.9.0/24")
	pod := testutil.NewNetns(t)
	conf := func(mut func(m map[string]any)) []byte {
		m := n.pluginConf()
		m["name"], m["cniVersion"] = n.name, "1.1.0"
		mut(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name  string
		stdin []byte
		code  uint
	}{
		{"missing subnet", conf(func(m map[string]any) { delete(m, "subnet") }), types.ErrInvalidNetworkConfig},
		{"malformed subnet", conf(func(m map[string]any) { m["subnet"] = "10.244.9.0/33" }), types.ErrInvalidNetworkConfig},
		{"host bits", conf(func(m map[string]any) { m["subnet"] = "10.244.9.1/24" }), types.ErrInvalidNetworkConfig},
		{"too small", conf(func(m map[string]any) { m["subnet"] = "10.244.9.0/31" }), types.ErrInvalidNetworkConfig},
		{"ipv6", conf(func(m map[string]any) { m["subnet"] = "fd00::/64" }), types.ErrInvalidNetworkConfig},
		{"bad mtu", conf(func(m map[string]any) { m["mtu"] = 70000 }), types.ErrInvalidNetworkConfig},
		{"long bridge", conf(func(m map[string]any) { m["bridge"] = "a-very-long-bridge-name" }), types.ErrInvalidNetworkConfig},
		{"relative dataDir", conf(func(m map[string]any) { m["dataDir"] = "rel/dir" }), types.ErrInvalidNetworkConfig},
		{"wrong type", conf(func(m map[string]any) { m["subnet"] = 42 }), types.ErrDecodingFailure},
		{"malformed json", []byte(`{"cniVersion":"1.1.0","name":"x","type":"skep-cni",`), types.ErrDecodingFailure},
		{"unknown version", conf(func(m map[string]any) { m["cniVersion"] = "9.9.9" }), types.ErrIncompatibleCNIVersion},
		{"missing version field", conf(func(m map[string]any) { m["cniVersion"] = "0.3.0" }), types.ErrIncompatibleCNIVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, verb := range []string{"ADD", "STATUS"} {
				err := execPlugin(t, n.node, verb, c.stdin, pod)
				if cniCode(err) != c.code {
					t.Errorf("%s: %v (code %d), want code %d", verb, err, cniCode(err), c.code)
				}
			}
		})
	}
	if ls := n.links(); len(ls) != 1 {
		t.Errorf("node has %d links after bad configs, want only lo", len(ls))
	}
	var podLinks []netlink.Link
	pod.Run(t, func() (err error) { podLinks, err = netlinksafe.LinkList(); return err })
	if len(podLinks) != 1 {
		t.Errorf("pod has %d links after bad configs", len(podLinks))
	}
	if ents, _ := os.ReadDir(n.dataDir); len(ents) != 0 {
		t.Errorf("data dir not empty: %v", ents)
	}
}

// A failure after any step of ADD leaves no address held, no host veth and
// nothing in the pod.
func TestAddRollback(t *testing.T) {
	n := newNetwork(t, "10.244.10.0/24")
	stdin := func() []byte {
		m := n.pluginConf()
		m["name"], m["cniVersion"] = n.name, "1.1.0"
		b, _ := json.Marshal(m)
		return b
	}()
	for _, step := range []string{"allocate", "bridge", "veth", "hairpin", "pod"} {
		t.Run(step, func(t *testing.T) {
			pod := testutil.NewNetns(t)
			stepHook = func(s string) error {
				if s == step {
					return fmt.Errorf("injected failure after %s", s)
				}
				return nil
			}
			defer func() { stepHook = func(string) error { return nil } }()
			var err error
			n.node.Run(t, func() error {
				err = cmdAdd(&skel.CmdArgs{ContainerID: "rb-" + step, Netns: pod.Path(), IfName: "eth0", StdinData: stdin})
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("ADD: %v, want injected failure", err)
			}
			assertNothingFor(t, n, pod)
		})
	}
	// CNI_NETNS naming the node's own namespace: refused before anything
	// is set on the node.
	t.Run("netns is the node", func(t *testing.T) {
		_, err := n.add("self", n.node)
		if cniCode(err) != types.ErrInvalidNetNS {
			t.Fatalf("ADD into the node's own netns: %v, want code 8", err)
		}
		assertNothingFor(t, n, testutil.NewNetns(t))
		n.node.Run(t, func() error {
			if _, err := netlinksafe.LinkByName("eth0"); err == nil {
				t.Error("eth0 created in the node")
			}
			routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
			for _, r := range routes {
				if r.Dst == nil {
					t.Errorf("default route added to the node: %v", r)
				}
			}
			return err
		})
	})
	// A real failure: the pod already has an eth0.
	t.Run("ifname taken", func(t *testing.T) {
		pod := testutil.NewNetns(t)
		pod.Run(t, func() error {
			a := netlink.NewLinkAttrs()
			a.Name = "eth0"
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: a, PeerName: "eth0peer"})
		})
		if _, err := n.add("taken", pod); err == nil {
			t.Fatal("ADD into a pod that has eth0 succeeded")
		}
		if recs := n.allocations(); len(recs) != 0 {
			t.Fatalf("allocation kept: %v", recs)
		}
		if v := n.skepVeths(); len(v) != 0 {
			t.Fatalf("host veth kept: %v", v)
		}
	})
	// And ADD still works afterwards, reusing the bridge.
	pod := testutil.NewNetns(t)
	r := n.mustAdd("after", pod)
	if got := podIP(t, r).String(); got == "" {
		t.Fatal("no ip")
	}
}

func assertNothingFor(t *testing.T, n *network, pod *testutil.Netns) {
	t.Helper()
	if recs := n.allocations(); len(recs) != 0 {
		t.Errorf("allocations held: %v", recs)
	}
	if v := n.skepVeths(); len(v) != 0 {
		t.Errorf("host veths left: %v", v)
	}
	var ls []netlink.Link
	pod.Run(t, func() (err error) { ls, err = netlinksafe.LinkList(); return err })
	if len(ls) != 1 {
		t.Errorf("pod has %d links, want only lo", len(ls))
	}
}

// 200 ADDs at once get 200 distinct addresses; DEL of all empties the pool.
func TestConcurrentAdds(t *testing.T) {
	const pods = 200
	n := newNetwork(t, "10.244.11.0/24")
	nss := make([]*testutil.Netns, pods)
	for i := range nss {
		nss[i] = testutil.NewNetns(t)
	}
	ips := make([]net.IP, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := n.add(fmt.Sprint("c", i), nss[i])
			if err != nil {
				errs[i] = err
				return
			}
			ips[i] = podIP(t, r)
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD c%d: %v", i, err)
		}
		if j, dup := seen[ips[i].String()]; dup {
			t.Fatalf("c%d and c%d both got %s", i, j, ips[i])
		}
		seen[ips[i].String()] = i
	}
	if recs := n.allocations(); len(recs) != pods {
		t.Fatalf("%d allocations, want %d", len(recs), pods)
	}
	if v := n.skepVeths(); len(v) != pods {
		t.Fatalf("%d host veths, want %d", len(v), pods)
	}
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.del(fmt.Sprint("c", i), nss[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DEL c%d: %v", i, err)
		}
	}
	if recs := n.allocations(); len(recs) != 0 {
		t.Fatalf("%d allocations after DEL of all", len(recs))
	}
	if v := n.skepVeths(); len(v) != 0 {
		t.Fatalf("%d host veths after DEL of all", len(v))
	}
	if err := n.status(); err != nil {
		t.Fatalf("STATUS after all freed: %v", err)
	}
}

// A crash: pods are gone (netns deleted, or still there but forgotten) and
// DEL never came. GC with the surviving attachment frees the rest.
func TestGCAfterCrash(t *testing.T) {
	n := newNetwork(t, "10.244.12.0/28") // 13 pod addresses
	keep := testutil.NewNetns(t)
	n.mustAdd("keep", keep)
	var leakedIPs []string
	for i := range 4 {
		pod := testutil.NewNetns(t)
		leakedIPs = append(leakedIPs, podIP(t, n.mustAdd(fmt.Sprint("dead", i), pod)).String())
		if i%2 == 0 {
			// The pod's namespace goes away without DEL: its veth dies
			// with it, the address stays held.
			if err := pod.Remove(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// An orphan veth of this network no record accounts for (an ADD killed
	// after creating it), and one of another network sharing the bridge,
	// which GC must leave alone.
	foreign := hostVethPrefix + "foreign" + testutil.RandSuffix()[:3]
	n.node.Run(t, func() error {
		br, err := netlinksafe.LinkByName("skep0")
		if err != nil {
			return err
		}
		for name, alias := range map[string]string{
			hostVethPrefix + "orphan" + testutil.RandSuffix()[:3]: hostVethAlias(n.name, ipam.Attachment{ContainerID: "ghost", IfName: "eth0"}),
			foreign: hostVethAlias("other-net", ipam.Attachment{ContainerID: "x", IfName: "eth0"}),
		} {
			a := netlink.NewLinkAttrs()
			a.Name, a.MasterIndex = name, br.Attrs().Index
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: a, PeerName: "p" + testutil.RandSuffix()}); err != nil {
				return err
			}
			if err := netlink.LinkSetAlias(&netlink.Veth{LinkAttrs: a}, alias); err != nil {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() {
		n.node.Do(func(ns.NetNS) error { return deleteHostVeth(foreign) })
	})
	if got := len(n.allocations()); got != 5 {
		t.Fatalf("%d allocations before GC, want 5", got)
	}
	// A namespace is torn down asynchronously; its veths go with it.
	testutil.Eventually(t, 10*time.Second, "host veths before GC: keep, dead1, dead3, orphan, foreign", func() error {
		if v := n.skepVeths(); len(v) != 5 {
			return fmt.Errorf("%v", v)
		}
		return nil
	})

	if err := n.gc("keep"); err != nil {
		t.Fatalf("GC: %v", err)
	}
	recs := n.allocations()
	if len(recs) != 1 || recs[0].ContainerID != "keep" {
		t.Fatalf("after GC: %v, want only keep", recs)
	}
	if v := n.skepVeths(); len(v) != 2 || !slices.Contains(v, foreign) ||
		!slices.Contains(v, HostVethName(n.name, ipam.Attachment{ContainerID: "keep", IfName: "eth0"})) {
		t.Fatalf("host veths after GC: %v, want keep's and the foreign one", v)
	}
	if err := n.check("keep", keep); err != nil {
		t.Fatalf("CHECK of the valid pod after GC: %v", err)
	}
	// The leaked addresses come back: allocate the rest of the pool.
	got := map[string]bool{}
	for i := range 12 {
		got[podIP(t, n.mustAdd(fmt.Sprint("new", i), testutil.NewNetns(t))).String()] = true
	}
	for _, ip := range leakedIPs {
		if !got[ip] {
			t.Errorf("leaked %s not handed out again", ip)
		}
	}
	if err := n.status(); cniCode(err) != 50 {
		t.Errorf("STATUS with a full pool: %v, want code 50", err)
	}
}

// STATUS: ready, then 50 when the store cannot be opened.
func TestStatus(t *testing.T) {
	n := newNetwork(t, "10.244.13.0/30") // one pod address
	if err := n.status(); err != nil {
		t.Fatalf("STATUS on a fresh node: %v", err)
	}
	n.mustAdd("only", testutil.NewNetns(t))
	if err := n.status(); cniCode(err) != 50 {
		t.Fatalf("STATUS with the range exhausted: %v, want 50", err)
	}
	if _, err := n.add("one-too-many", testutil.NewNetns(t)); cniCode(err) != types.ErrTryAgainLater {
		t.Fatalf("ADD with the range exhausted: %v, want 11", err)
	}

	// The bridge's name is taken by something that is not a bridge.
	taken := newNetwork(t, "10.244.14.0/24")
	taken.node.Run(t, func() error {
		a := netlink.NewLinkAttrs()
		a.Name = "skep0"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: a, PeerName: "notabridge"})
	})
	if err := taken.status(); cniCode(err) != 50 {
		t.Fatalf("STATUS with skep0 taken by a veth: %v, want 50", err)
	}

	broken := newNetwork(t, "10.244.14.0/24", withNode(n.node))
	// The store's directory is a file: it cannot be opened.
	if err := os.WriteFile(filepath.Join(broken.dataDir, broken.name), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := broken.status(); cniCode(err) != 50 {
		t.Fatalf("STATUS with an unopenable store: %v, want 50", err)
	}
}

// CHECK notices when what ADD made is damaged.
func TestCheckDetectsDamage(t *testing.T) {
	n := newNetwork(t, "10.244.15.0/24")
	damage := map[string]func(pod *testutil.Netns, hostIf string){
		"address removed": func(pod *testutil.Netns, _ string) {
			pod.Run(t, func() error {
				l, _ := netlinksafe.LinkByName("eth0")
				addrs, _ := netlinksafe.AddrList(l, netlink.FAMILY_V4)
				return netlink.AddrDel(l, &addrs[0])
			})
		},
		"default route removed": func(pod *testutil.Netns, _ string) {
			pod.Run(t, func() error {
				_, dst, _ := net.ParseCIDR("0.0.0.0/0")
				return netlink.RouteDel(&netlink.Route{Dst: dst, Gw: net.ParseIP("10.244.15.1")})
			})
		},
		"pod link down": func(pod *testutil.Netns, _ string) {
			pod.Run(t, func() error {
				l, _ := netlinksafe.LinkByName("eth0")
				return netlink.LinkSetDown(l)
			})
		},
		"hairpin off": func(_ *testutil.Netns, hostIf string) {
			n.node.Run(t, func() error {
				l, _ := netlinksafe.LinkByName(hostIf)
				return netlink.LinkSetHairpin(l, false)
			})
		},
		"host veth off bridge": func(_ *testutil.Netns, hostIf string) {
			n.node.Run(t, func() error {
				l, _ := netlinksafe.LinkByName(hostIf)
				return netlink.LinkSetNoMaster(l)
			})
		},
	}
	i := 0
	for name, breakIt := range damage {
		t.Run(name, func(t *testing.T) {
			i++
			id := fmt.Sprint("chk", i)
			pod := testutil.NewNetns(t)
			r := n.mustAdd(id, pod)
			if err := n.check(id, pod); err != nil {
				t.Fatalf("CHECK before damage: %v", err)
			}
			breakIt(pod, r.Interfaces[1].Name)
			if err := n.check(id, pod); err == nil {
				t.Fatal("CHECK passed after damage")
			}
			if err := n.del(id, pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}
}

// Chaining: skep-cni keeps what an earlier plugin reported (prevResult) and
// appends its own, and a reference plugin chained after it (tuning, which
// works on the interfaces of skep-cni's result) runs ADD, CHECK and DEL.
func TestChaining(t *testing.T) {
	t.Run("prevResult kept", func(t *testing.T) {
		n := newNetwork(t, "10.244.16.0/24")
		pod := testutil.NewNetns(t)
		m := n.pluginConf()
		m["name"], m["cniVersion"] = n.name, "1.1.0"
		m["prevResult"] = map[string]any{
			"cniVersion": "1.1.0",
			"interfaces": []any{map[string]any{"name": "earlier0", "sandbox": pod.Path()}},
			"ips":        []any{map[string]any{"address": "192.168.99.5/24", "interface": 0}},
		}
		stdin, _ := json.Marshal(m)
		args := &invoke.Args{Command: "ADD", ContainerID: "chained", NetNS: pod.Path(), IfName: "eth0", Path: pluginDir}
		var res types.Result
		var err error
		n.node.Do(func(ns.NetNS) error {
			res, err = invoke.ExecPluginWithResult(context.Background(), filepath.Join(pluginDir, "skep-cni"), stdin, args, nil)
			return nil
		})
		if err != nil {
			t.Fatalf("ADD with prevResult: %v", err)
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Interfaces) != 4 || r.Interfaces[0].Name != "earlier0" || r.Interfaces[3].Name != "eth0" {
			t.Fatalf("interfaces %v", r.Interfaces)
		}
		if len(r.IPs) != 2 || r.IPs[0].Address.String() != "192.168.99.5/24" || *r.IPs[0].Interface != 0 ||
			*r.IPs[1].Interface != 3 || r.IPs[1].Address.IP.String() != "10.244.16.2" {
			t.Fatalf("ips %v", r.IPs)
		}
		if err := n.del("chained", pod); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("reference tuning after skep-cni", func(t *testing.T) {
		testutil.RequireBinary(t, filepath.Join(referencePluginDir, "tuning"))
		n := newNetwork(t, "10.244.17.0/24", withVersion("1.0.0"))
		b, _ := json.Marshal(map[string]any{
			"cniVersion": "1.0.0", "name": n.name,
			"plugins": []any{n.pluginConf(), map[string]any{
				"type": "tuning", "sysctl": map[string]string{"net.ipv4.conf.eth0.arp_notify": "1"},
			}},
		})
		var err error
		if n.list, err = libcni.NetworkConfFromBytes(b); err != nil {
			t.Fatal(err)
		}
		n.cni.Path = []string{pluginDir, referencePluginDir}
		pod := testutil.NewNetns(t)
		n.mustAdd("tuned", pod)
		pod.Run(t, func() error {
			v, err := os.ReadFile("/proc/sys/net/ipv4/conf/eth0/arp_notify")
			if strings.TrimSpace(string(v)) != "1" {
				t.Errorf("tuning did not run on skep's eth0: %q", v)
			}
			return err
		})
		if err := n.check("tuned", pod); err != nil {
			t.Fatalf("CHECK of the chain: %v", err)
		}
		if err := n.del("tuned", pod); err != nil {
			t.Fatalf("DEL of the chain: %v", err)
		}
		if recs := n.allocations(); len(recs) != 0 {
			t.Fatalf("left %v", recs)
		}
	})
}

// A freed address is not handed out again at once (round robin across
// invocations of the binary).
func TestFreedAddressNotReusedAtOnce(t *testing.T) {
	n := newNetwork(t, "10.244.18.0/24")
	p1, p2 := testutil.NewNetns(t), testutil.NewNetns(t)
	first := podIP(t, n.mustAdd("first", p1))
	if err := n.del("first", p1); err != nil {
		t.Fatal(err)
	}
	second := podIP(t, n.mustAdd("second", p2))
	if second.Equal(first) {
		t.Fatalf("freed %s handed out again at once", first)
	}
	if second.String() != "10.244.18.3" {
		t.Fatalf("second pod got %s, want the next address 10.244.18.3", second)
	}
}

// While another invocation holds the store past the lock timeout, ADD fails
// with "try again later" (11) and leaves nothing behind.
func TestAddTryAgainWhenStoreBusy(t *testing.T) {
	n := newNetwork(t, "10.244.19.0/24")
	c := n.conf()
	held, err := ipam.Open(c.StoreDir(), c.Pool(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	saved := lockTimeout
	lockTimeout = 200 * time.Millisecond
	defer func() { lockTimeout = saved }()
	m := n.pluginConf()
	m["name"], m["cniVersion"] = n.name, "1.1.0"
	stdin, _ := json.Marshal(m)
	pod := testutil.NewNetns(t)
	n.node.Run(t, func() error {
		err = cmdAdd(&skel.CmdArgs{ContainerID: "busy", Netns: pod.Path(), IfName: "eth0", StdinData: stdin})
		return nil
	})
	held.Close()
	if cniCode(err) != types.ErrTryAgainLater {
		t.Fatalf("ADD with the store held: %v (code %d), want 11", err, cniCode(err))
	}
	assertNothingFor(t, n, pod)
	// Once released, the retry the code asks for succeeds.
	n.mustAdd("busy", pod)
}

// DEL after the pod's namespace is gone (the runtime removed it first, or
// the pod died) still frees the address and succeeds; a repeat is a no-op.
func TestDelAfterNetnsGone(t *testing.T) {
	n := newNetwork(t, "10.244.20.0/24")
	pod := testutil.NewNetns(t)
	n.mustAdd("gone", pod)
	path := pod.Path()
	if err := pod.Remove(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := n.delPath("gone", path); err != nil {
			t.Fatalf("DEL with the netns gone: %v", err)
		}
	}
	if recs := n.allocations(); len(recs) != 0 {
		t.Fatalf("address still held: %v", recs)
	}
	testutil.Eventually(t, 10*time.Second, "no host veth left", func() error {
		if v := n.skepVeths(); len(v) != 0 {
			return fmt.Errorf("%v", v)
		}
		return nil
	})
}
