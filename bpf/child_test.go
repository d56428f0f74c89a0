package bpf

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/internal/testutil"
)

// The socket tests run their clients in a child process (this test binary,
// re-executed by testutil.StartChild) that starts inside the test's cgroup
// (clone3 CLONE_INTO_CGROUP) and enters the test's netns: a whole process is
// what a cgroup holds, and the test process itself must stay where it is.

// childOp is what the child does; childResult what it saw.
type childOp struct {
	Op     string
	Target string // frontend address:port
	N      int
	For    time.Duration // tcp-loop: how long to keep connecting
	IPv6   bool          // use AF_INET6 sockets and the v4-mapped target
}

type childResult struct {
	Counts map[string]int // reply payload → times seen
	Errnos map[string]int // error → times seen
	Nanos  []int64        // per-attempt latency of the call under test
	Peer   string         // getpeername
	From   string         // recvfrom source
	After  map[string]string
	Log    []testutil.Attempt
}

func TestMain(m *testing.M) {
	testutil.ChildMain(map[string]func([]byte) int{"op": testutil.ChildRole(runChild)})
	os.Exit(m.Run())
}

// runChildOp runs op in a child process in cgroup cg and netns n. onReady,
// when set, runs when the child printed "ready"; the child then goes on.
func runChildOp(t testing.TB, cg string, n ns.NetNS, op childOp, onReady func()) childResult {
	t.Helper()
	c, err := testutil.StartChild(t, testutil.ChildSpec{Role: "op", Arg: op, Netns: n.Path(), Cgroup: cg, MaxLife: time.Minute})
	must(t, err, "start child")
	sc := bufio.NewScanner(c.Stdout)
	sc.Buffer(make([]byte, 1<<20), 256<<20) // the result is one long JSON line
	var res childResult
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			if onReady != nil {
				onReady()
			}
			fmt.Fprintln(c.Stdin, "go")
			continue
		}
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatalf("child output %q: %v", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("child output: %v", err)
	}
	c.Stdin.Close()
	if err := c.Wait(); err != nil {
		t.Fatalf("child %s: %v", op.Op, err)
	}
	return res
}

// runChild runs in the child, on a thread in the test's netns: every socket
// below is made on it.
func runChild(op childOp) int {
	res := childResult{Counts: map[string]int{}, Errnos: map[string]int{}, After: map[string]string{}}
	sa := testutil.Sockaddr(netip.MustParseAddrPort(op.Target), op.IPv6)
	family := unix.AF_INET
	if op.IPv6 {
		family = unix.AF_INET6
	}
	fail := func(what string, err error) { res.Errnos[what+": "+testutil.ErrName(err)]++ }

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
					res.Peer = testutil.SockaddrString(p)
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
		deadline := testutil.MonoNow() + op.For.Nanoseconds()
		// Paced (at most ~4k/s, 20k in all) so TIME_WAIT never
		// exhausts the ephemeral ports.
		for i := 0; i < 20000 && testutil.MonoNow() < deadline; i++ {
			a := testutil.Attempt{Start: testutil.MonoNow()}
			a.Reply, a.Err = testutil.TCPOnce(sa)
			a.End = testutil.MonoNow()
			res.Log = append(res.Log, a)
			time.Sleep(250 * time.Microsecond)
		}
	case "udp-sendto": // unconnected: sendto the frontend, recvfrom; N times
		s, _ := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		testutil.SetRecvTimeout(s)
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
			res.From = testutil.SockaddrString(from)
		}
	case "udp-term": // connected: one exchange, wait, then see what is left
		s, _ := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		testutil.SetRecvTimeout(s)
		if err := unix.Connect(s, sa); err != nil {
			fail("connect", err)
			break
		}
		if p, err := unix.Getpeername(s); err == nil {
			res.Peer = testutil.SockaddrString(p)
		}
		res.After["first"] = testutil.UDPExchange(s)
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		// The backend went away meanwhile and the socket was destroyed.
		buf := make([]byte, 16)
		_, _, err := unix.Recvfrom(s, buf, unix.MSG_DONTWAIT)
		res.After["recv"] = testutil.ErrName(err)
		_, err = unix.Getpeername(s)
		res.After["getpeername"] = testutil.ErrName(err)
		// A new connect through the frontend reaches a live backend.
		s2, _ := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		testutil.SetRecvTimeout(s2)
		if err := unix.Connect(s2, sa); err != nil {
			fail("reconnect", err)
			break
		}
		res.After["second"] = testutil.UDPExchange(s2)
	default:
		fmt.Fprintln(os.Stderr, "child: unknown op", op.Op)
		return 2
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return 0
}
