package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/internal/testutil"
)

// The integration tests drive the control loop into the real eBPF data path.
// Clients run in a child process (this test binary, re-executed by
// testutil.StartChild) started in the test's cgroup and entering the test's
// netns, because the socket-LB hooks act on a cgroup's processes; the
// restart test also runs the proxy itself in a child, so it can be
// SIGKILLed.

func TestMain(m *testing.M) {
	testutil.ChildMain(map[string]func([]byte) int{
		"client": testutil.ChildRole(clientChild),
		"proxy":  testutil.ChildRole(proxyChild),
		"udp":    testutil.ChildRole(udpChild),
	})
	os.Exit(m.Run())
}

// newPinDir returns a fresh bpffs pin directory whose pins and links are
// removed when the test ends.
func newPinDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(bpf.PinRoot, "test-proxy-"+testutil.RandSuffix())
	t.Cleanup(func() {
		if err := bpf.Uninstall(dir); err != nil {
			t.Errorf("uninstall %s: %v", dir, err)
		}
	})
	return dir
}

// loadLB loads a data path pinned in a directory of its own, closed and
// removed when the test ends.
func loadLB(t testing.TB) *bpf.LB {
	t.Helper()
	testutil.RequireRoot(t)
	lb, err := bpf.Load(bpf.Options{PinDir: newPinDir(t), Logger: testutil.QuietLogger()})
	if err != nil {
		t.Fatalf("load data path: %v", err)
	}
	t.Cleanup(func() { lb.Close() })
	return lb
}

// Bounds of one client loop, whatever the test does.
const (
	clientMaxTime     = 60 * time.Second
	clientMaxAttempts = 300000
)

// startClient starts a connect loop to target in cgroup cg and netns n; the
// returned function stops it and returns its log.
func startClient(t *testing.T, cg string, n ns.NetNS, target string) (stop func() []testutil.Attempt) {
	t.Helper()
	c, err := testutil.StartChild(t, testutil.ChildSpec{Role: "client", Arg: target, Netns: n.Path(), Cgroup: cg,
		MaxLife: clientMaxTime + 30*time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return func() []testutil.Attempt {
		t.Helper()
		c.Stdin.Close() // the child stops at EOF on its stdin
		var log []testutil.Attempt
		decErr := json.NewDecoder(c.Stdout).Decode(&log)
		if err := c.Wait(); err != nil {
			t.Fatalf("client: %v", err)
		}
		if decErr != nil {
			t.Fatalf("client output: %v", decErr)
		}
		return log
	}
}

// clientChild connects, reads the backend's address and closes, in a loop
// that ends when its stdin closes (or at its bounds in time and count), and
// prints the log as JSON.
func clientChild(target string) int {
	sa := testutil.Sockaddr(netip.MustParseAddrPort(target), false)
	var stop atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop.Store(true)
	}()
	var log []testutil.Attempt
	deadline := testutil.MonoNow() + clientMaxTime.Nanoseconds()
	for i := 0; i < clientMaxAttempts && testutil.MonoNow() < deadline && !stop.Load(); i++ {
		at := testutil.Attempt{Start: testutil.MonoNow()}
		at.Reply, at.Err = testutil.TCPOnce(sa)
		at.End = testutil.MonoNow()
		log = append(log, at)
	}
	if err := json.NewEncoder(os.Stdout).Encode(log); err != nil {
		return 2
	}
	return 0
}

// requireIntegration is the gate of every test that loads BPF.
func requireIntegration(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
}

// udpChild exchanges a datagram over a UDP socket connected to a frontend,
// prints the reply, waits for a line on stdin (the parent removes that
// backend meanwhile), then prints what is left of the socket and what a new
// one reaches.
func udpChild(target string) int {
	sa := testutil.Sockaddr(netip.MustParseAddrPort(target), false)
	dial := func() (int, string) {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, "socket: " + testutil.ErrName(err)
		}
		testutil.SetRecvTimeout(s)
		if err := unix.Connect(s, sa); err != nil {
			return -1, "connect: " + testutil.ErrName(err)
		}
		return s, testutil.UDPExchange(s)
	}
	res := map[string]string{}
	s, first := dial()
	res["first"] = first
	json.NewEncoder(os.Stdout).Encode(res)
	bufio.NewReader(os.Stdin).ReadString('\n')
	buf := make([]byte, 64)
	_, _, err := unix.Recvfrom(s, buf, unix.MSG_DONTWAIT)
	res["recv"] = testutil.ErrName(err)
	_, err = unix.Getpeername(s)
	res["getpeername"] = testutil.ErrName(err)
	_, res["second"] = dial()
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}
