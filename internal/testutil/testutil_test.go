package testutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/internal/cgroup2"
)

func TestMain(m *testing.M) {
	ChildMain(map[string]func([]byte) int{"where": ChildRole(whereChild)})
	os.Exit(m.Run())
}

// where is what a child saw of its surroundings.
type where struct {
	Netns, Cgroup, Greeting, Input string
}

func whereChild(greeting string) int {
	ns, _ := os.Readlink("/proc/thread-self/ns/net")
	cg, _ := os.ReadFile("/proc/self/cgroup")
	in, _ := io.ReadAll(os.Stdin)
	w := where{Netns: ns, Cgroup: string(cg), Greeting: greeting, Input: string(in)}
	if err := json.NewEncoder(os.Stdout).Encode(w); err != nil {
		return 2
	}
	return 0
}

// A child starts in the test's cgroup, enters its netns, gets its
// argument and stdin, and answers on stdout.
func TestChildInNetnsAndCgroup(t *testing.T) {
	n := NewNetns(t, "10.123.0.1")
	cg := NewCgroup(t)
	c, err := StartChild(t, ChildSpec{Role: "where", Arg: "hello", Netns: n.Path(), Cgroup: cg, MaxLife: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c.Stdin, "input")
	c.Stdin.Close()
	var w where
	if err := json.NewDecoder(c.Stdout).Decode(&w); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(n.Path(), &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	if w.Netns != want || w.Greeting != "hello" || w.Input != "input" {
		t.Fatalf("child saw %+v, want netns %s", w, want)
	}
	root, err := cgroup2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	if rel := strings.TrimPrefix(cg, root); !strings.Contains(w.Cgroup, "0::"+rel+"\n") {
		t.Fatalf("child's cgroups %q, want %s", w.Cgroup, rel)
	}
}

// NewNetns puts the addresses on lo; Remove may come early and twice.
func TestNetns(t *testing.T) {
	n := NewNetns(t, "10.123.0.1", "10.123.0.2")
	var got []string
	n.Run(t, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(lo, netlink.FAMILY_V4)
		for _, a := range addrs {
			got = append(got, a.IPNet.String())
		}
		return err
	})
	if strings.Join(got, " ") != "127.0.0.1/8 10.123.0.1/32 10.123.0.2/32" {
		t.Fatalf("addresses on lo: %v", got)
	}
	if out, err := n.Command("ip", "-br", "addr", "show", "lo").CombinedOutput(); err != nil || !strings.Contains(string(out), "10.123.0.2/32") {
		t.Fatalf("ip netns exec: %v: %s", err, out)
	}
	path := n.Path()
	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := n.Remove(); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after remove: %v", filepath.Base(path), err)
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, 5*time.Second, "third call", func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("%d calls", calls)
	}
}

// The socket helpers against a local listener.
func TestTCPOnce(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("id"))
			c.Close()
		}
	}()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	if reply, e := TCPOnce(Sockaddr(ap, false)); reply != "id" || e != "" {
		t.Fatalf("TCPOnce: %q %q", reply, e)
	}
	ln.Close()
	if _, e := TCPOnce(Sockaddr(ap, false)); e != "connect: ECONNREFUSED" {
		t.Fatalf("TCPOnce to a closed port: %q", e)
	}
}
