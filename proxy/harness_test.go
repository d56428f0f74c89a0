package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/internal/testutil"
)

// The integration tests drive the control loop into the real eBPF data path.
// Clients run in a child process (this test binary, re-executed) started in
// the test's cgroup and entering the test's netns, because the socket-LB
// hooks act on a cgroup's processes; the restart test also runs the proxy
// itself in a child, so it can be SIGKILLed.

// childEnv selects a child role and carries its JSON argument.
const childEnv = "SKEP_PROXY_TEST_CHILD"

func TestMain(m *testing.M) {
	if arg := os.Getenv(childEnv); arg != "" {
		role, payload, _ := strings.Cut(arg, ":")
		switch role {
		case "client":
			os.Exit(clientChild(payload))
		case "proxy":
			os.Exit(proxyChild(payload))
		case "udp":
			os.Exit(udpChild(payload))
		}
		fmt.Fprintln(os.Stderr, "unknown child role", role)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// newNetns makes a network namespace with lo up and addrs on it, removed
// when the test ends.
func newNetns(t *testing.T, addrs ...string) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	})
	err = n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range addrs {
			if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: netlink.NewIPNet(net.ParseIP(a))}); err != nil {
				return fmt.Errorf("add %s: %w", a, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("set up netns: %v", err)
	}
	return n
}

// serveTCP runs in netns n a TCP server on each addr:port that writes its
// own address and closes, until the test ends.
func serveTCP(t *testing.T, n ns.NetNS, port int, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		id := net.JoinHostPort(a, strconv.Itoa(port))
		var ln net.Listener
		err := n.Do(func(ns.NetNS) error {
			var err error
			ln, err = net.Listen("tcp4", id)
			return err
		})
		if err != nil {
			t.Fatalf("listen %s: %v", id, err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte(id))
				c.Close()
			}
		}()
	}
}

// serveUDP runs in netns n a UDP echo on each addr:port that answers with
// its own address, until the test ends.
func serveUDP(t *testing.T, n ns.NetNS, port int, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		id := net.JoinHostPort(a, strconv.Itoa(port))
		var pc net.PacketConn
		err := n.Do(func(ns.NetNS) error {
			var err error
			pc, err = net.ListenPacket("udp4", id)
			return err
		})
		if err != nil {
			t.Fatalf("listen %s: %v", id, err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(id), from)
			}
		}()
	}
}

// newCgroup makes a cgroup of the test's own under the cgroup2 mount (never
// the root cgroup), removed when the test ends.
func newCgroup(t *testing.T) string {
	t.Helper()
	root, err := cgroup2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "skep-proxy-test-"+randSuffix())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The client child has exited by now; its cgroup empties as it is reaped.
		for i := 0; ; i++ {
			err := os.Remove(dir)
			if err == nil || i == 50 {
				if err != nil {
					t.Errorf("remove cgroup %s: %v", dir, err)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// newPinDir returns a fresh bpffs pin directory whose pins and links are
// removed when the test ends.
func newPinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(bpf.PinRoot, "test-proxy-"+randSuffix())
	t.Cleanup(func() {
		if err := bpf.Uninstall(dir); err != nil {
			t.Errorf("uninstall %s: %v", dir, err)
		}
	})
	return dir
}

// attempt is one connect of the client loop, with CLOCK_MONOTONIC times the
// parent compares with its own.
type attempt struct {
	Start, End int64
	Reply, Err string
}

type clientArgs struct {
	Netns  string
	Target string
}

// Bounds of one client loop, whatever the test does.
const (
	clientMaxTime     = 60 * time.Second
	clientMaxAttempts = 300000
)

// startClient starts a connect loop to target in cgroup cg and netns n; the
// returned function stops it and returns its log.
func startClient(t *testing.T, cg string, n ns.NetNS, target string) (stop func() []attempt) {
	t.Helper()
	b, _ := json.Marshal(clientArgs{Netns: n.Path(), Target: target})
	cgfd, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=client:"+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgfd.Fd())}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start client: %v", err)
	}
	cgfd.Close()
	timer := time.AfterFunc(clientMaxTime+30*time.Second, func() { _ = cmd.Process.Kill() })
	waited := false
	// A test that fails before waiting must not leave the child in the
	// cgroup it is about to remove.
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return func() []attempt {
		t.Helper()
		defer timer.Stop()
		waited = true
		in.Close() // the child stops at EOF on its stdin
		var log []attempt
		decErr := json.NewDecoder(out).Decode(&log)
		if err := cmd.Wait(); err != nil {
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
func clientChild(payload string) int {
	var a clientArgs
	if err := json.Unmarshal([]byte(payload), &a); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 2
	}
	runtime.LockOSThread() // setns applies to this thread; every socket is made on it
	fd, err := unix.Open(a.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client: enter netns:", err)
		return 2
	}
	target := netip.MustParseAddrPort(a.Target)
	sa := &unix.SockaddrInet4{Addr: target.Addr().As4(), Port: int(target.Port())}
	var stop atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop.Store(true)
	}()
	var log []attempt
	deadline := monoNow() + clientMaxTime.Nanoseconds()
	for i := 0; i < clientMaxAttempts && monoNow() < deadline && !stop.Load(); i++ {
		at := attempt{Start: monoNow()}
		at.Reply, at.Err = connectOnce(sa)
		at.End = monoNow()
		log = append(log, at)
	}
	if err := json.NewEncoder(os.Stdout).Encode(log); err != nil {
		return 2
	}
	return 0
}

func connectOnce(sa *unix.SockaddrInet4) (reply, errText string) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", "socket: " + err.Error()
	}
	defer unix.Close(s)
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	// The Go runtime's preemption signals interrupt blocking syscalls; an
	// interrupted connect carries on in the kernel, so wait for its outcome.
	if err := unix.Connect(s, sa); err == unix.EINTR {
		err = awaitConnect(s)
		if err != nil {
			return "", "connect: " + err.Error()
		}
	} else if err != nil {
		return "", "connect: " + err.Error()
	}
	buf := make([]byte, 64)
	for {
		n, err := unix.Read(s, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return "", fmt.Sprintf("read: %v", err)
		}
		return string(buf[:n]), ""
	}
}

func awaitConnect(s int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(s), Events: unix.POLLOUT}}
		_, err := unix.Poll(fds, 2000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// requireIntegration is the gate of every test that loads BPF.
func requireIntegration(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
}

// startChild starts this test binary as a child in role with payload, in
// cgroup cg, with pipes to its stdin and stdout.
func startChild(t *testing.T, role, cg string, payload any) (*exec.Cmd, io.WriteCloser, *bufio.Scanner) {
	t.Helper()
	b, _ := json.Marshal(payload)
	cgfd, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgfd.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role+":"+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgfd.Fd())}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s child: %v", role, err)
	}
	timer := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	t.Cleanup(func() {
		timer.Stop()
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, in, bufio.NewScanner(out)
}

// udpChild exchanges a datagram over a UDP socket connected to a frontend,
// prints the reply, waits for a line on stdin (the parent removes that
// backend meanwhile), then prints what is left of the socket and what a new
// one reaches.
func udpChild(payload string) int {
	var a clientArgs
	if err := json.Unmarshal([]byte(payload), &a); err != nil {
		fmt.Fprintln(os.Stderr, "udp:", err)
		return 2
	}
	runtime.LockOSThread()
	fd, err := unix.Open(a.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp: enter netns:", err)
		return 2
	}
	target := netip.MustParseAddrPort(a.Target)
	sa := &unix.SockaddrInet4{Addr: target.Addr().As4(), Port: int(target.Port())}
	dial := func() (int, string) {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, "socket: " + errName(err)
		}
		tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
		_ = unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := unix.Connect(s, sa); err != nil {
			return -1, "connect: " + errName(err)
		}
		return s, udpExchange(s)
	}
	res := map[string]string{}
	s, first := dial()
	res["first"] = first
	json.NewEncoder(os.Stdout).Encode(res)
	bufio.NewReader(os.Stdin).ReadString('\n')
	buf := make([]byte, 64)
	_, _, err = unix.Recvfrom(s, buf, unix.MSG_DONTWAIT)
	res["recv"] = errName(err)
	_, err = unix.Getpeername(s)
	res["getpeername"] = errName(err)
	_, res["second"] = dial()
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func udpExchange(s int) string {
	if _, err := unix.Write(s, []byte("ping")); err != nil {
		return "write: " + errName(err)
	}
	buf := make([]byte, 64)
	for {
		n, err := unix.Read(s, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "read: " + errName(err)
		}
		return string(buf[:n])
	}
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(unix.Errno); ok {
		return unix.ErrnoName(e)
	}
	return err.Error()
}
