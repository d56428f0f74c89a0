package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/internal/testutil"
)

func TestConfigAddressing(t *testing.T) {
	c := Config{Dir: "/tmp/x", Prefix: "skeplab"}.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	n2 := c.Node(2)
	if n2.Name != "skeplab-n2" || n2.IP.String() != "172.31.77.12" || n2.PodCIDR.String() != "10.244.2.0/24" {
		t.Errorf("node 2 = %+v", n2)
	}
	if c.SwitchIP().String() != "172.31.77.1" {
		t.Errorf("switch ip %s", c.SwitchIP())
	}
	c.PodCIDR = netip.MustParsePrefix("10.244.192.0/18")
	if got := c.Node(1).PodCIDR.String(); got != "10.244.193.0/24" {
		t.Errorf("node 1 pod CIDR in 10.244.192.0/18 = %s", got)
	}
	other := c
	other.Prefix = "skt1"
	if c.routeMetric() == other.routeMetric() {
		t.Errorf("two prefixes share route metric %d", c.routeMetric())
	}
	for _, bad := range []Config{
		{Dir: "/tmp/x", Prefix: "skep-lab"}, // a dash would let one lab's glob match another's names
		{Dir: "/tmp/x", Prefix: "Lab"},
		{Dir: "relative", Prefix: "lab"},
		{Dir: "/tmp/x", Prefix: "lab", Nodes: 10},
		{Dir: "/tmp/x", Prefix: "lab", PodCIDR: netip.MustParsePrefix("10.244.1.0/24")},
	} {
		if err := bad.Defaults().Validate(); err == nil {
			t.Errorf("config %+v validated", bad)
		}
	}
}

// Binaries built once for the package's tests: skep and skep-cni in one
// directory, as `make build` puts them into bin/ (the lab finds the plugin
// next to skep).
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "skep-lab-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "github.com/skep-dev/skep/cmd/skep", "github.com/skep-dev/skep/cmd/skep-cni")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return binDir
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestLabUpDemoDown brings a 2-node lab up under a prefix, port, underlay
// and pod range of its own (a user's lab may be up meanwhile), runs the
// demo, checks what it saw and what kubectl sees, re-ups over a crashed
// lab, and checks that down leaves nothing behind — also when it fails.
func TestLabUpDemoDown(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range []string{"ip", "nsenter"} {
		testutil.RequireBinary(t, b)
	}
	kubectl := testutil.RequireBinary(t, "kubectl")
	bin := buildBinaries(t)

	suffix := make([]byte, 4)
	rand.Read(suffix)
	var logs bytes.Buffer
	cfg := Config{
		Dir:         t.TempDir(),
		Listen:      freePort(t),
		Binary:      filepath.Join(bin, "skep"),
		Prefix:      "lt" + hex.EncodeToString(suffix),
		Nodes:       2,
		Underlay:    netip.MustParsePrefix("172.31.78.0/24"),
		PodCIDR:     netip.MustParsePrefix("10.244.192.0/18"),
		ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	}.Defaults()
	t.Cleanup(func() {
		if err := Down(cfg, true); err != nil {
			t.Errorf("down: %v", err)
		}
		if tr := cfg.Traces(); len(tr) > 0 {
			t.Errorf("traces after down: %v", tr)
		}
		if t.Failed() {
			t.Logf("lab log:\n%s", logs.String())
			dumpLogs(t, cfg)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	rootLinks := labLikeLinks(t)
	start := time.Now()
	if err := Up(ctx, cfg); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("up in %s", time.Since(start).Round(time.Millisecond))
	if err := Up(ctx, cfg); err == nil || !strings.Contains(err.Error(), "already up in") {
		t.Errorf("second up on a running lab: %v, want 'already up'", err)
	}

	// Safety: while the lab is up the root netns cannot send to lab
	// addresses (no route out of eth0).
	rs, err := cfg.guardRoutes()
	if err != nil || len(rs) != 3 {
		t.Errorf("guard routes: %d, %v; want 3", len(rs), err)
	}
	for _, a := range []string{"10.244.193.2", "10.96.0.1", "172.31.78.11"} {
		if _, err := netlink.RouteGet(net.ParseIP(a)); err == nil {
			t.Errorf("root netns routes %s; want unreachable", a)
		}
	}

	var out bytes.Buffer
	start = time.Now()
	res, err := Demo(ctx, cfg, &out)
	t.Logf("demo in %s:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	nodesAnswering := map[string]bool{}
	for pod, node := range res.Backends {
		if res.Answers[pod] == 0 {
			t.Errorf("backend %s on %s never answered through ClusterIP %s: %v", pod, node, res.ClusterIP, res.Answers)
		}
		nodesAnswering[node] = true
	}
	if len(res.Backends) != 3 || len(nodesAnswering) != 2 {
		t.Errorf("backends %v: want 3 over 2 nodes", res.Backends)
	}
	if res.Failures != 0 {
		t.Errorf("%d of %d ClusterIP requests failed", res.Failures, demoRequests)
	}
	np := 0
	for _, n := range res.NodePortAnswers {
		np += n
	}
	if res.NodePortFailures != 0 || np != demoNodePortRequest {
		t.Errorf("NodePort %d: %d answers, %d failures, want %d answers", res.NodePort, np, res.NodePortFailures, demoNodePortRequest)
	}

	if res.InClusterAPI != "ok" {
		t.Errorf("https://10.96.0.1/readyz from a pod: %q, want ok", res.InClusterAPI)
	}

	// Nothing leaves the lab: a pod's packet to an address outside it
	// (TEST-NET-2) is refused by its node, which has no default route.
	lines, err := cfg.get(ctx, "client", "http://198.51.100.7/", 1)
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], "unreachable") {
		t.Errorf("pod to an outside address: %q, %v; want unreachable", lines, err)
	}

	kc := exec.CommandContext(ctx, kubectl, "--kubeconfig", cfg.Kubeconfig(), "get", "nodes,pods,svc", "-o", "wide")
	kout, err := kc.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl: %v\n%s", err, kout)
	}
	for _, want := range []string{
		"node/" + cfg.Node(1).Name, "node/" + cfg.Node(2).Name, "Ready",
		"pod/web-1", "pod/web-2", "pod/web-3", "pod/client", "Running",
		"service/web ", "service/web-nodeport", res.ClusterIP, fmt.Sprintf("80:%d/TCP", res.NodePort),
	} {
		if !strings.Contains(string(kout), want) {
			t.Errorf("kubectl get nodes,pods,svc lacks %q:\n%s", want, kout)
		}
	}

	// A crash: the server dies, everything else stays. Up cleans it away
	// and makes a fresh lab.
	pid, ok := cfg.running()
	if !ok {
		t.Fatal("server not running")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50 && alive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if err := Up(ctx, cfg); err != nil {
		t.Fatalf("up over a crashed lab: %v", err)
	}
	if pods := cfg.pods(); len(pods) != 0 {
		t.Errorf("pods of the crashed lab survive: %v", pods)
	}
	if n := labNetns(cfg.Prefix); len(n) != 1+cfg.Nodes {
		t.Errorf("netns after re-up: %v, want switch + %d nodes", n, cfg.Nodes)
	}

	procs := cgroup2.Pids(mustLabCgroup(t, cfg))
	if len(procs) < 2+cfg.Nodes {
		t.Errorf("lab processes %v: want server, relay and %d proxies", procs, cfg.Nodes)
	}
	if err := Down(cfg, false); err != nil {
		t.Fatalf("down: %v", err)
	}
	if tr := cfg.Traces(); len(tr) > 0 {
		t.Errorf("traces after down: %v", tr)
	}
	for _, p := range procs {
		if alive(p) {
			t.Errorf("process %d survived down", p)
		}
	}
	if err := Down(cfg, false); err != nil {
		t.Errorf("second down: %v", err)
	}
	// The lab never makes a link in the root netns; check none appeared.
	for name := range labLikeLinks(t) {
		if !rootLinks[name] {
			t.Errorf("link %s in the root netns after down", name)
		}
	}
	if _, err := os.Stat(cfg.Kubeconfig()); err != nil {
		t.Errorf("down without purge removed the data: %v", err)
	}
}

// TestLabUpFailureRollsBack makes the proxies fail to start: up must
// report it and leave nothing behind (netns, cgroups, pins, routes,
// processes) without a down.
func TestLabUpFailureRollsBack(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range []string{"ip", "nsenter", "sh"} {
		testutil.RequireBinary(t, b)
	}
	bin := buildBinaries(t)
	// skep, except that `skep proxy` dies at once.
	wrapper := filepath.Join(bin, "skep-broken")
	script := "#!/bin/sh\n[ \"$1\" = proxy ] && { echo broken proxy >&2; exit 3; }\nexec " + filepath.Join(bin, "skep") + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	cfg := Config{
		Dir:      t.TempDir(),
		Listen:   freePort(t),
		Binary:   wrapper,
		Prefix:   "lf" + hex.EncodeToString(suffix),
		Underlay: netip.MustParsePrefix("172.31.79.0/24"),
		PodCIDR:  netip.MustParsePrefix("10.244.128.0/18"),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}.Defaults()
	t.Cleanup(func() { _ = Down(cfg, true) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	err := Up(ctx, cfg)
	t.Logf("up failed in %s: %v", time.Since(start).Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "proxy of "+cfg.Node(1).Name) {
		t.Fatalf("up with a broken proxy: %v, want a proxy error", err)
	}
	if tr := cfg.Traces(); len(tr) > 0 {
		t.Errorf("failed up left traces: %v", tr)
	}
	if _, ok := cfg.running(); ok {
		t.Error("failed up left the server running")
	}
}

// labLikeLinks lists the root netns's links named like the lab's
// (switch bridge, node uplinks and switch ports, pod bridge and veths).
func labLikeLinks(t *testing.T) map[string]bool {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		n := l.Attrs().Name
		if n == switchBridge || n == uplinkName || n == "skep0" || strings.HasPrefix(n, "skv") ||
			(len(n) == 2 && n[0] == 'n' && n[1] >= '1' && n[1] <= '9') {
			out[n] = true
		}
	}
	return out
}

func mustLabCgroup(t *testing.T, c Config) string {
	t.Helper()
	p, err := c.labCgroup()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func dumpLogs(t *testing.T, c Config) {
	ents, _ := os.ReadDir(c.logDir())
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(c.logDir(), e.Name()))
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("== %s:\n%s", e.Name(), b)
	}
}
