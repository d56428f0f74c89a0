package bpf

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The socket tests run their clients in a child process (this test binary,
// re-executed) that starts inside the test's cgroup (clone3 CLONE_INTO_CGROUP)
// and enters the test's netns: a whole process is what a cgroup holds, and
// the test process itself must stay where it is.

const childEnv = "SKEP_BPF_TEST_CHILD"

// childOp is what the child does; childResult what it saw.
type childOp struct {
	Netns  string
	Op     string
	Target string // frontend address:port
	N      int
	For    time.Duration // tcp-loop: how long to keep connecting
	IPv6   bool          // use AF_INET6 sockets and the v4-mapped target
}

// attempt is one connect of a tcp-loop, with CLOCK_MONOTONIC times that the
// parent can compare with its own.
type attempt struct {
	Start, End int64
	Reply, Err string
}

type childResult struct {
	Counts map[string]int // reply payload → times seen
	Errnos map[string]int // error → times seen
	Nanos  []int64        // per-attempt latency of the call under test
	Peer   string         // getpeername
	From   string         // recvfrom source
	After  map[string]string
	Log    []attempt
}

func TestMain(m *testing.M) {
	if op := os.Getenv(childEnv); op != "" {
		os.Exit(runChild(op))
	}
	os.Exit(m.Run())
}

// runChildOp runs op in a child process in cgroup cg. stdin, when set, is
// fed to the child line by line after it printed "ready".
func runChildOp(t testing.TB, cg string, op childOp, onReady func()) childResult {
	t.Helper()
	b, _ := json.Marshal(op)
	cgfd, err := os.Open(cg)
	must(t, err, "open cgroup")
	defer cgfd.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgfd.Fd())}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	must(t, err, "stdin")
	stdout, err := cmd.StdoutPipe()
	must(t, err, "stdout")
	must(t, cmd.Start(), "start child")
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 256<<20) // the result is one long JSON line
	var res childResult
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			if onReady != nil {
				onReady()
			}
			fmt.Fprintln(stdin, "go")
			continue
		}
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatalf("child output %q: %v", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("child output: %v", err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child %s: %v", op.Op, err)
	}
	return res
}

func runChild(arg string) int {
	var op childOp
	if err := json.Unmarshal([]byte(arg), &op); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	// Every socket below is made on this thread, in the test's netns.
	runtime.LockOSThread()
	fd, err := unix.Open(op.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: enter netns:", err)
		return 2
	}
	res := childResult{Counts: map[string]int{}, Errnos: map[string]int{}, After: map[string]string{}}
	target := netip.MustParseAddrPort(op.Target)
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: target.Addr().As4(), Port: int(target.Port())}
	family := unix.AF_INET
	if op.IPv6 {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Addr: target.Addr().As16(), Port: int(target.Port())}
	}
	fail := func(what string, err error) { res.Errnos[what+": "+errName(err)]++ }

	switch op.Op {
	case "tcp-connect": // connect, read the backend's id, close; N times
		for range op.N {
			s, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				fail("socket", err)
				continue
			}
			start := time.Now()
			err = unix.Connect(s, sa)
			res.Nanos = append(res.Nanos, time.Since(start).Nanoseconds())
			if err != nil {
				fail("connect", err)
				unix.Close(s)
				continue
			}
			if res.Peer == "" {
				if p, err := unix.Getpeername(s); err == nil {
					res.Peer = sockaddrString(p)
				}
			}
			buf := make([]byte, 16)
			n, err := unix.Read(s, buf)
			if err != nil || n == 0 {
				fail("read", err)
			} else {
				res.Counts[string(buf[:n])]++
			}
			unix.Close(s)
		}
	case "tcp-loop": // connect, read, close, until op.For has passed
		deadline := monoNow() + op.For.Nanoseconds()
		// Paced (at most ~4k/s, 20k in all) so TIME_WAIT never
		// exhausts the ephemeral ports.
		for i := 0; i < 20000 && monoNow() < deadline; i++ {
			a := attempt{Start: monoNow()}
			a.Reply, a.Err = tcpOnce(family, sa)
			a.End = monoNow()
			res.Log = append(res.Log, a)
			time.Sleep(250 * time.Microsecond)
		}
	case "udp-sendto": // unconnected: sendto the frontend, recvfrom; N times
		s, _ := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		setRecvTimeout(s)
		for range op.N {
			if err := unix.Sendto(s, []byte("ping"), 0, sa); err != nil {
				fail("sendto", err)
				continue
			}
			buf := make([]byte, 16)
			n, from, err := unix.Recvfrom(s, buf, 0)
			if err != nil {
				fail("recvfrom", err)
				continue
			}
			res.Counts[string(buf[:n])]++
			res.From = sockaddrString(from)
		}
	case "udp-term": // connected: one exchange, wait, then see what is left
		s, _ := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		setRecvTimeout(s)
		if err := unix.Connect(s, sa); err != nil {
			fail("connect", err)
			break
		}
		if p, err := unix.Getpeername(s); err == nil {
			res.Peer = sockaddrString(p)
		}
		res.After["first"] = udpExchange(s)
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		// The backend went away meanwhile and the socket was destroyed.
		buf := make([]byte, 16)
		_, _, err := unix.Recvfrom(s, buf, unix.MSG_DONTWAIT)
		res.After["recv"] = errName(err)
		_, err = unix.Getpeername(s)
		res.After["getpeername"] = errName(err)
		// A new connect through the frontend reaches a live backend.
		s2, _ := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		setRecvTimeout(s2)
		if err := unix.Connect(s2, sa); err != nil {
			fail("reconnect", err)
			break
		}
		res.After["second"] = udpExchange(s2)
	default:
		fmt.Fprintln(os.Stderr, "child: unknown op", op.Op)
		return 2
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return 0
}

func udpExchange(s int) string {
	if _, err := unix.Write(s, []byte("ping")); err != nil {
		return "write: " + errName(err)
	}
	buf := make([]byte, 16)
	n, err := unix.Read(s, buf)
	if err != nil {
		return "read: " + errName(err)
	}
	return string(buf[:n])
}

func setRecvTimeout(s int) {
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
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

func sockaddrString(sa unix.Sockaddr) string {
	if s, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port)).String()
	}
	if s, ok := sa.(*unix.SockaddrInet6); ok {
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// tcpOnce connects, reads the backend's id and closes.
func tcpOnce(family int, sa unix.Sockaddr) (string, string) {
	s, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", "socket: " + errName(err)
	}
	defer unix.Close(s)
	setRecvTimeout(s)
	if err := unix.Connect(s, sa); err != nil {
		return "", "connect: " + errName(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Read(s, buf)
	if err != nil || n == 0 {
		return "", "read: " + errName(err)
	}
	return string(buf[:n]), ""
}
