package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

var (
	churnBackends = []string{"10.244.1.11", "10.244.1.12", "10.244.1.13", "10.244.1.14"}
	// churnSets are the ready backends of successive updates; the rest are
	// alternately absent or terminating.
	churnSets = [][]string{
		{churnBackends[0], churnBackends[1]},
		{churnBackends[1], churnBackends[2], churnBackends[3]},
		{churnBackends[3]},
		{churnBackends[0], churnBackends[2]},
		{churnBackends[2]},
		churnBackends,
	}
	churnFrontend = datapath.Frontend{IP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: datapath.TCP}
)

// maxGen bounds the updates of one churn test: each has its marker address.
const maxGen = 200

// churnAddrs are the backends and every update's marker, all served, so a
// connect handed to a marker (a Terminating backend, never Active) succeeds
// and is caught by its reply rather than by a failure.
func churnAddrs() []string {
	addrs := slices.Clone(churnBackends)
	for g := range maxGen + 1 {
		addrs = append(addrs, markerAddr(g))
	}
	return addrs
}

func markerAddr(gen int) string { return fmt.Sprintf("10.244.200.%d", gen) }

func churnService() *corev1.Service {
	return clusterIPService("default", "churn", "10.96.0.10", svcPort("http", corev1.ProtocolTCP, 80, 0))
}

// churnSlice has ready endpoints and, with terminating, the others as
// terminating (not picked, flows kept); without, the others are absent. A
// terminating endpoint 10.244.200.<gen> makes every update's state unique,
// so seeing it in the data path proves that this update landed (a set equal
// to an older update's could be that one, left over while no proxy ran).
func churnSlice(ready []string, terminating bool, gen int) *discoveryv1.EndpointSlice {
	eps := []ep{{markerAddr(gen), "node-b", "terminating"}}
	for _, b := range churnBackends {
		switch {
		case slices.Contains(ready, b):
			eps = append(eps, ep{b, "node-b", "ready"})
		case terminating:
			eps = append(eps, ep{b, "node-b", "terminating"})
		}
	}
	return slice("default", "churn", "churn-1", []discoveryv1.EndpointPort{epPort("http", corev1.ProtocolTCP, 8080)}, eps...)
}

// isState reports whether bs are the backends of churnSlice(ready, _, gen):
// exactly ready Active, and gen's marker present.
func isState(bs []datapath.Backend, ready []string, gen int) bool {
	var active []string
	marker := false
	for _, b := range bs {
		if b.State == datapath.BackendActive {
			active = append(active, b.IP.String())
		}
		marker = marker || b.IP.String() == markerAddr(gen)
	}
	slices.Sort(active)
	want := slices.Clone(ready)
	slices.Sort(want)
	return marker && slices.Equal(active, want)
}

// checkChurn fails the test on any failed connect, and on any connect made
// entirely after an update landed (and before the next began) that reached a
// backend not ready in that update. An update that never landed (e.g. while
// no proxy ran) checks nothing. It returns how many connects it checked.
func checkChurn(t *testing.T, log []testutil.Attempt, updates []testutil.Change) int {
	t.Helper()
	failed, checked, toTerminating := 0, 0, 0
	for _, a := range log {
		if strings.HasPrefix(a.Reply, "10.244.200.") {
			toTerminating++
		}
		if a.Err != "" {
			failed++
			if failed <= 5 {
				t.Errorf("connect failed: %s", a.Err)
			}
		}
	}
	testutil.EachInForce(log, updates, func(i int, a testutil.Attempt) {
		checked++
		host, _, _ := strings.Cut(a.Reply, ":")
		if !slices.Contains(updates[i].Ready, host) {
			t.Errorf("connect after update %d (ready %v) reached %s", i, updates[i].Ready, a.Reply)
		}
	})
	t.Logf("%d connects, %d updates, %d connects checked against their update, %d failed", len(log), len(updates), checked, failed)
	if toTerminating > 0 {
		// Outside the checked windows, i.e. while an update was being
		// written: the data path's write order lets a reader holding the
		// old count pick a slot that already holds a Terminating backend.
		t.Logf("DATA PATH RACE: %d new connects went to a Terminating (never Active) backend while an update was written", toTerminating)
	}
	if failed > 0 {
		t.Fatalf("%d of %d connects failed", failed, len(log))
	}
	if len(log) < 100 {
		t.Fatalf("only %d connects: the client loop did not run", len(log))
	}
	return checked
}

// TestChurnThroughControlLoop changes a service's EndpointSlice at 10 Hz
// through the API (fake clientset) while a client in the test's cgroup
// connects to the ClusterIP in a loop: no connect fails, and none made after
// an update landed reaches a backend that update took away.
func TestChurnThroughControlLoop(t *testing.T) {
	requireIntegration(t)
	n := testutil.NewNetns(t, churnAddrs()...)
	testutil.ServeAddrs(t, n, 8080, churnAddrs()...)
	cg := testutil.NewCgroup(t)
	lb := loadLB(t)
	if err := lb.AttachCgroup(cg); err != nil {
		t.Fatal(err)
	}

	c := fake.NewClientset()
	s := churnSlice(churnSets[len(churnSets)-1], false, 0)
	create(t, c, churnService(), s)
	p, _ := startProxy(t, c, lb, nil)
	landed := func(want []string, gen int, within time.Duration) int64 {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if isState(p.Applied()[churnFrontend].Backends, want, gen) {
				return testutil.MonoNow()
			}
			time.Sleep(time.Millisecond)
		}
		return 0
	}
	if landed(churnSets[len(churnSets)-1], 0, 10*time.Second) == 0 {
		t.Fatal("initial state did not land")
	}

	stop := startClient(t, cg, n, "10.96.0.10:80")
	time.Sleep(100 * time.Millisecond)
	var updates []testutil.Change
	var lat []time.Duration
	for i := range 20 { // 2 s at 10 Hz, slower if the machine is
		set := churnSets[i%len(churnSets)]
		u := testutil.Change{Start: testutil.MonoNow(), Ready: set}
		s = churnSlice(set, i%2 == 1, i+1)
		if _, err := c.DiscoveryV1().EndpointSlices("default").Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// A sanity bound, not a timing target (that is the benchmark's).
		if u.Landed = landed(set, i+1, 10*time.Second); u.Landed == 0 {
			t.Fatalf("update %d (%v) did not land", i, set)
		}
		lat = append(lat, time.Duration(u.Landed-u.Start))
		updates = append(updates, u)
		time.Sleep(time.Duration(u.Start + 100e6 - testutil.MonoNow()))
	}
	log := stop()
	if checked := checkChurn(t, log, updates); checked == 0 {
		t.Fatal("no connect fell entirely after an update landed")
	}
	slices.Sort(lat)
	t.Logf("API write → data path: p50 %v, max %v (%d updates)", lat[len(lat)/2], lat[len(lat)-1], len(lat))
	// The data path holds what the loop last applied, terminating ones too.
	got, err := lb.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !isState(got[0].Backends, churnSets[19%len(churnSets)], 20) {
		t.Fatalf("data path holds %+v", got)
	}
}

// proxyArgs configure a proxy child: the data path pinned in PinDir attached
// to Cgroup, fed from State (a JSON file the parent rewrites), standing in
// for the API server, which is not shared across processes with a fake.
type proxyArgs struct {
	PinDir, Cgroup, State string
}

// proxyState is the content of the state file.
type proxyState struct {
	Service *corev1.Service
	Slice   *discoveryv1.EndpointSlice
}

func writeState(t *testing.T, path string, st proxyState) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// proxyChild runs the control loop over the real data path until killed.
func proxyChild(a proxyArgs) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "proxy child: %s: %v\n", what, err)
		return 2
	}
	t0 := time.Now()
	lb, err := bpf.Load(bpf.Options{PinDir: a.PinDir, Logger: log})
	if err != nil {
		return fail("load", err)
	}
	if err := lb.AttachCgroup(a.Cgroup); err != nil {
		return fail("attach", err)
	}
	loaded := time.Since(t0)
	c := fake.NewClientset()
	ctx := context.Background()
	var last []byte
	sync := func() error {
		b, err := os.ReadFile(a.State)
		if err != nil || string(b) == string(last) {
			return err
		}
		var st proxyState
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		if last == nil {
			_, err = c.CoreV1().Services("default").Create(ctx, st.Service, metav1.CreateOptions{})
			if err == nil {
				_, err = c.DiscoveryV1().EndpointSlices("default").Create(ctx, st.Slice, metav1.CreateOptions{})
			}
		} else {
			_, err = c.DiscoveryV1().EndpointSlices("default").Update(ctx, st.Slice, metav1.UpdateOptions{})
		}
		last = b
		return err
	}
	if err := sync(); err != nil {
		return fail("initial state", err)
	}
	p, err := New(Config{Client: c, Datapath: lb, Node: node("127.0.0.1"), Logger: log})
	if err != nil {
		return fail("new proxy", err)
	}
	go func() {
		if err := p.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "proxy child: run:", err)
			os.Exit(2)
		}
	}()
	for !p.Healthy() {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("ready")
	fmt.Fprintf(os.Stderr, "proxy child: data path loaded and attached in %v, loop synced %v later\n", loaded, time.Since(t0)-loaded)
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(2 * time.Millisecond) {
		if err := sync(); err != nil {
			return fail("sync state", err)
		}
	}
	return 0
}

// startProxyChild starts a proxy child and returns once it reported ready
// (caches synced, programmed state adopted and reconciling). It may run on
// any goroutine: it reports failure as an error, not through t.
func startProxyChild(t *testing.T, a proxyArgs) (*testutil.Child, error) {
	c, err := testutil.StartChild(t, testutil.ChildSpec{Role: "proxy", Arg: a})
	if err != nil {
		return nil, err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(c.Stdout)
		ready <- sc.Scan() && sc.Text() == "ready"
		io.Copy(io.Discard, c.Stdout)
	}()
	select {
	case ok := <-ready:
		if !ok {
			return nil, errors.New("proxy child exited before it was ready")
		}
	case <-time.After(30 * time.Second):
		return nil, errors.New("proxy child not ready in 30 s")
	}
	return c, nil
}

// TestProxyRestartUnderChurn runs the proxy in a child process and SIGKILLs
// it in the middle of 10 Hz endpoint churn while a client connects in a
// loop; a new proxy process adopts the pinned data path. No connect fails —
// not while no proxy runs, not while the new one adopts and reconciles — and
// once updates land again, connects reach only that update's ready backends.
func TestProxyRestartUnderChurn(t *testing.T) {
	requireIntegration(t)
	n := testutil.NewNetns(t, churnAddrs()...)
	testutil.ServeAddrs(t, n, 8080, churnAddrs()...)
	cg := testutil.NewCgroup(t)
	args := proxyArgs{PinDir: newPinDir(t), Cgroup: cg, State: filepath.Join(t.TempDir(), "state.json")}
	writeState(t, args.State, proxyState{Service: churnService(), Slice: churnSlice(churnBackends, false, 0)})

	first, err := startProxyChild(t, args)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := bpf.OpenPinned(args.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	landed := func(want []string, gen int, within time.Duration) int64 {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			svcs, err := pinned.Services()
			if err == nil && len(svcs) == 1 && isState(svcs[0].Backends, want, gen) {
				return testutil.MonoNow()
			}
			time.Sleep(time.Millisecond)
		}
		return 0
	}
	if landed(churnBackends, 0, 10*time.Second) == 0 {
		t.Fatal("initial state did not land")
	}

	stop := startClient(t, cg, n, "10.96.0.10:80")
	time.Sleep(100 * time.Millisecond)
	// 10 Hz updates; the proxy is SIGKILLed before update killAt and a new
	// one started at once; the churn goes on until the new proxy has landed
	// wantAfter updates (or a generous bound passes).
	const killAt, wantAfter = 8, 10
	var ups []testutil.Change
	var killed int64
	landedAfter := 0
	second := make(chan error, 1)
	for i := 0; i < maxGen && (i <= killAt || landedAfter < wantAfter); i++ {
		if i == killAt {
			if err := first.Cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup of any kind
				t.Fatal(err)
			}
			_ = first.Wait()
			killed = testutil.MonoNow()
			go func() {
				_, err := startProxyChild(t, args)
				second <- err
			}()
		}
		set := churnSets[i%len(churnSets)]
		u := testutil.Change{Start: testutil.MonoNow(), Ready: set}
		writeState(t, args.State, proxyState{Service: churnService(), Slice: churnSlice(set, i%2 == 1, i+1)})
		// An update that does not land in its slot (no proxy, or a slow
		// one) is simply not checked against.
		u.Landed = landed(set, i+1, 95*time.Millisecond)
		if i >= killAt && u.Landed != 0 {
			landedAfter++
		}
		ups = append(ups, u)
		time.Sleep(time.Duration(u.Start + 100e6 - testutil.MonoNow()))
	}
	log := stop()
	checked := checkChurn(t, log, ups)

	// The second proxy took over: updates landed again after the kill, and
	// connects were checked against them.
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second proxy: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("second proxy never became ready")
	}
	var firstAfter int64
	for _, u := range ups[killAt:] {
		if u.Landed != 0 {
			firstAfter = u.Landed
			break
		}
	}
	checkedAfter := 0
	testutil.EachInForce(log, ups, func(i int, _ testutil.Attempt) {
		if i >= killAt {
			checkedAfter++
		}
	})
	var duringGap int
	for _, a := range log {
		if a.Start >= killed && (firstAfter == 0 || a.Start < firstAfter) {
			duringGap++
		}
	}
	t.Logf("after the kill: first update landed after %v, %d updates landed, %d connects checked against them; %d connects while no proxy served; %d checked in all",
		time.Duration(firstAfter-killed), landedAfter, checkedAfter, duringGap, checked)
	if landedAfter < wantAfter || checkedAfter == 0 {
		t.Fatalf("the restarted proxy did not take over the churn (%d updates landed, %d connects checked)", landedAfter, checkedAfter)
	}
	if duringGap == 0 {
		t.Fatal("no connect was attempted between the kill and the new proxy's first update")
	}
}

// TestRemovedUDPBackendLeavesNoConnectedSocket removes a UDP backend through
// the API while a client holds a socket connected to it through the
// ClusterIP: the data path destroys that socket (kube-proxy users know the
// alternative: a stale conntrack entry black-holing the client), and a new
// socket reaches the remaining backend.
func TestRemovedUDPBackendLeavesNoConnectedSocket(t *testing.T) {
	requireIntegration(t)
	bes := []string{"10.244.1.21", "10.244.1.22"}
	n := testutil.NewNetns(t, bes...)
	testutil.ServeAddrs(t, n, 5353, bes...)
	cg := testutil.NewCgroup(t)
	lb := loadLB(t)
	if err := lb.AttachCgroup(cg); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientset()
	dnsPort := []discoveryv1.EndpointPort{epPort("dns", corev1.ProtocolUDP, 5353)}
	create(t, c, clusterIPService("kube-system", "dns", "10.96.0.10", svcPort("dns", corev1.ProtocolUDP, 53, 0)),
		slice("kube-system", "dns", "dns-1", dnsPort, ep{bes[0], "node-b", "ready"}, ep{bes[1], "node-b", "ready"}))
	p, _ := startProxy(t, c, lb, nil)
	fe := datapath.Frontend{IP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: datapath.UDP}
	testutil.Eventually(t, 10*time.Second, "both backends", func() error {
		if n := len(p.Applied()[fe].Backends); n != 2 {
			return fmt.Errorf("%d backends", n)
		}
		return nil
	})

	udp, err := testutil.StartChild(t, testutil.ChildSpec{Role: "udp", Arg: "10.96.0.10:53", Netns: n.Path(), Cgroup: cg, MaxLife: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewScanner(udp.Stdout)
	read := func() map[string]string {
		t.Helper()
		if !out.Scan() {
			t.Fatal("udp child exited early")
		}
		var r map[string]string
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := read()["first"]
	host, _, _ := strings.Cut(first, ":")
	if !slices.Contains(bes, host) {
		t.Fatalf("first exchange: %q", first)
	}
	other := bes[0]
	if host == bes[0] {
		other = bes[1]
	}
	if _, err := c.DiscoveryV1().EndpointSlices("kube-system").Update(context.Background(),
		slice("kube-system", "dns", "dns-1", dnsPort, ep{other, "node-b", "ready"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "backend removed", func() error {
		if bs := p.Applied()[fe].Backends; len(bs) != 1 || bs[0].IP.String() != other {
			return fmt.Errorf("backends %v", bs)
		}
		return nil
	})
	fmt.Fprintln(udp.Stdin, "go")
	after := read()
	if after["recv"] != "ECONNABORTED" || after["getpeername"] != "ENOTCONN" {
		t.Fatalf("socket connected to the removed backend %s was not destroyed: %v", first, after)
	}
	if after["second"] != other+":5353" {
		t.Fatalf("a new socket reached %q, want %s:5353", after["second"], other)
	}
}
