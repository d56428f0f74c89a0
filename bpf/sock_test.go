package bpf

import (
	"bytes"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// ruleSets is what iptables and nftables hold in the root netns and in n.
func ruleSets(t *testing.T, n ns.NetNS) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, args := range [][]string{
		{"iptables-save"}, {"iptables-legacy-save"}, {"nft", "list", "ruleset"},
	} {
		bin, err := exec.LookPath(args[0])
		if err != nil {
			continue
		}
		for _, where := range []string{"root", n.Path()} {
			cmd := exec.Command(bin, args[1:]...)
			if where != "root" {
				cmd = exec.Command("nsenter", append([]string{"--net=" + where, bin}, args[1:]...)...)
			}
			b, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v in %s: %v", args, where, err)
			}
			// iptables-save stamps the time; only the rules count.
			for _, line := range bytes.Split(b, []byte("\n")) {
				if !bytes.HasPrefix(line, []byte("#")) {
					out.Write(line)
					out.WriteByte('\n')
				}
			}
		}
	}
	return out.Bytes()
}

// chiSquare of counts against a uniform spread over k buckets.
func chiSquare(counts map[string]int, k int) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	exp := float64(total) / float64(k)
	x := 0.0
	for _, c := range counts {
		x += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	x += float64(k-len(counts)) * exp // buckets never hit
	return x
}

func TestSocketLB(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "nsenter")
	bes := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13"}
	n := testutil.NewNetns(t, bes...)
	testutil.ServeAddrs(t, n, 8080, bes...)
	testutil.ServeAddrs(t, n, 5353, bes...)
	rulesBefore := ruleSets(t, n)

	// No Options.PodNetns: the UDP socket sweep finds the client's netns
	// through the processes of the attached cgroup.
	lb := newTestLB(t, Options{NodeIP: nodeIP})
	cg := testutil.NewCgroup(t)
	must(t, lb.AttachCgroup(cg), "attach cgroup")

	web := datapath.Service{Frontend: tcpFrontend("10.96.0.10", 80), Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, bes...)}
	sticky := datapath.Service{Frontend: tcpFrontend("10.96.0.11", 80), Name: "default/sticky:http", Backends: backends(datapath.BackendActive, 8080, bes...), AffinityTimeout: time.Minute}
	empty := datapath.Service{Frontend: tcpFrontend("10.96.0.12", 80), Name: "default/empty:http", Backends: backends(datapath.BackendTerminating, 8080, bes[0])}
	udpFE := datapath.Frontend{IP: netip.MustParseAddr("10.96.0.53"), Port: 53, Proto: datapath.UDP}
	dns := datapath.Service{Frontend: udpFE, Name: "kube-system/dns:dns", Backends: backends(datapath.BackendActive, 5353, bes...)}
	// A NodePort on every node address, reached by a pod on this node.
	nodePort := datapath.Service{Frontend: datapath.Frontend{IP: netip.IPv4Unspecified(), Port: 30080, Proto: datapath.TCP, Scope: datapath.ScopeExternal}, Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, bes[2])}
	for _, s := range []datapath.Service{web, sticky, empty, dns, nodePort} {
		must(t, lb.UpsertService(s), "upsert %s", s.Frontend)
	}

	t.Run("ClusterIPSpread", func(t *testing.T) {
		const n3 = 3000
		res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.10:80", N: n3}, nil)
		if len(res.Errnos) > 0 {
			t.Fatalf("failures: %v", res.Errnos)
		}
		if len(res.Counts) != 3 {
			t.Fatalf("reached %d backends, want 3: %v", len(res.Counts), res.Counts)
		}
		// p = 1e-6 for 2 degrees of freedom: a uniform picker fails
		// once in a million runs, a 40/30/30 one (chi² 60) always.
		if x := chiSquare(res.Counts, 3); x > 27.63 {
			t.Fatalf("spread %v not uniform: chi² %.1f > 27.63", res.Counts, x)
		}
		t.Logf("spread over %d connects: %v", n3, res.Counts)
		if res.Peer != "10.96.0.10:80" {
			t.Fatalf("getpeername = %q, want the ClusterIP 10.96.0.10:80", res.Peer)
		}
	})

	t.Run("OwnNodePort", func(t *testing.T) {
		res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "172.31.77.10:30080", N: 10}, nil)
		if len(res.Errnos) > 0 || res.Counts["10.244.1.13:8080"] != 10 {
			t.Fatalf("pod to its node's NodePort: %v %v", res.Counts, res.Errnos)
		}
		if res.Peer != "172.31.77.10:30080" {
			t.Fatalf("getpeername = %q", res.Peer)
		}
	})

	t.Run("Affinity", func(t *testing.T) {
		res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.11:80", N: 200}, nil)
		if len(res.Errnos) > 0 || len(res.Counts) != 1 {
			t.Fatalf("with ClientIP affinity a client stays on one backend: %v %v", res.Counts, res.Errnos)
		}
	})

	t.Run("NoEndpointsRefused", func(t *testing.T) {
		res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.12:80", N: 50}, nil)
		if res.Errnos["connect: ECONNREFUSED"] != 50 || len(res.Counts) != 0 {
			t.Fatalf("want 50 ECONNREFUSED: %v %v", res.Errnos, res.Counts)
		}
		slices.Sort(res.Nanos)
		median := time.Duration(res.Nanos[len(res.Nanos)/2])
		worst := time.Duration(res.Nanos[len(res.Nanos)-1])
		if median > 10*time.Millisecond || worst > time.Second {
			t.Fatalf("refusal took median %v, worst %v; want well under 10ms", median, worst)
		}
		t.Logf("ECONNREFUSED in median %v, worst %v", median, worst)
	})

	t.Run("UDPReplyFromVIP", func(t *testing.T) {
		res := runChildOp(t, cg, n, childOp{Op: "udp-sendto", Target: "10.96.0.53:53", N: 300}, nil)
		if len(res.Errnos) > 0 {
			t.Fatalf("failures: %v", res.Errnos)
		}
		if res.From != "10.96.0.53:53" {
			t.Fatalf("reply source %q, want the ClusterIP 10.96.0.53:53", res.From)
		}
		if len(res.Counts) != 3 {
			t.Fatalf("datagrams reached %v, want all 3 backends", res.Counts)
		}
	})

	t.Run("DualStackSockets", func(t *testing.T) {
		// AF_INET6 sockets reach the IPv4 frontend as ::ffff:10.96.0.10.
		res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.10:80", N: 300, IPv6: true}, nil)
		if len(res.Errnos) > 0 || len(res.Counts) != 3 {
			t.Fatalf("v6 socket to v4-mapped ClusterIP: %v %v", res.Counts, res.Errnos)
		}
		if res.Peer != "[::ffff:10.96.0.10]:80" {
			t.Fatalf("getpeername = %q, want [::ffff:10.96.0.10]:80", res.Peer)
		}
		res = runChildOp(t, cg, n, childOp{Op: "udp-sendto", Target: "10.96.0.53:53", N: 30, IPv6: true}, nil)
		if len(res.Errnos) > 0 || res.From != "[::ffff:10.96.0.53]:53" {
			t.Fatalf("v6 UDP to v4-mapped ClusterIP: from %q, %v", res.From, res.Errnos)
		}
		res = runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.12:80", N: 5, IPv6: true}, nil)
		if res.Errnos["connect: ECONNREFUSED"] != 5 {
			t.Fatalf("v6 socket to a frontend without backends: %v", res.Errnos)
		}
	})

	t.Run("UDPNoEndpointsRefused", func(t *testing.T) {
		none := datapath.Service{Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.55"), Port: 53, Proto: datapath.UDP}, Name: "default/none:dns"}
		must(t, lb.UpsertService(none), "upsert")
		res := runChildOp(t, cg, n, childOp{Op: "udp-sendto", Target: "10.96.0.55:53", N: 5}, nil)
		if res.Errnos["sendto: ECONNREFUSED"] != 5 {
			t.Fatalf("sendto a UDP frontend without backends: %v, want 5 ECONNREFUSED", res.Errnos)
		}
	})

	t.Run("UDPStaleSocketDestroyed", func(t *testing.T) {
		// One backend; the client connects, then the backend is
		// replaced: its connected socket must not stay on the dead one.
		// Once with a v4 socket, once with a v6 one (v4-mapped).
		for _, c := range []struct {
			vip, peer string
			ipv6      bool
			old, new  string
			dns       []string // dns keeps only these: old is no one's backend
		}{
			{"10.96.0.54:53", "10.96.0.54:53", false, bes[0], bes[1], bes[1:]},
			{"10.96.0.56:53", "[::ffff:10.96.0.56]:53", true, bes[2], bes[1], bes[1:2]},
		} {
			vip := netip.MustParseAddrPort(c.vip)
			one := datapath.Service{Frontend: datapath.Frontend{IP: vip.Addr(), Port: vip.Port(), Proto: datapath.UDP}, Name: "default/one:dns", Backends: backends(datapath.BackendActive, 5353, c.old)}
			must(t, lb.UpsertService(one), "upsert")
			res := runChildOp(t, cg, n, childOp{Op: "udp-term", Target: c.vip, IPv6: c.ipv6}, func() {
				one.Backends = backends(datapath.BackendActive, 5353, c.new)
				dns.Backends = backends(datapath.BackendActive, 5353, c.dns...)
				must(t, lb.UpsertService(dns), "shrink dns")
				must(t, lb.UpsertService(one), "replace backend")
			})
			if res.Peer != c.peer {
				t.Errorf("getpeername of connected UDP = %q, want %s", res.Peer, c.peer)
			}
			if res.After["first"] != c.old+":5353" {
				t.Fatalf("first exchange: %q", res.After["first"])
			}
			if res.After["getpeername"] != "ENOTCONN" || res.After["recv"] != "ECONNABORTED" {
				t.Fatalf("socket (v6 %v) to the removed backend was not destroyed: %v", c.ipv6, res.After)
			}
			if res.After["second"] != c.new+":5353" {
				t.Fatalf("reconnect reached %q, want the new backend", res.After["second"])
			}
		}
	})

	counts, err := lb.ServiceCounters()
	must(t, err, "service counters")
	if c := counts[web.Frontend]; c.Connections != 3000+300 || c.Refused != 0 {
		t.Errorf("web counters %+v, want 3300 connections", c)
	}
	if c := counts[empty.Frontend]; c.Connections != 0 || c.Refused != 50+5 {
		t.Errorf("empty counters %+v, want 55 refused", c)
	}

	if after := ruleSets(t, n); !bytes.Equal(rulesBefore, after) {
		t.Errorf("iptables/nftables rules changed:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
}

// BenchmarkConnect measures one connect() through socket-LB, in a child in
// the test cgroup: to a frontend with backends (connect + rewrite) and to
// one without (ECONNREFUSED from connect4). The connect time is the
// child's median. Re-run with go test -run '^$' -bench Connect ./bpf
func BenchmarkConnect(b *testing.B) {
	bes := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13"}
	n := testutil.NewNetns(b, bes...)
	testutil.ServeAddrs(b, n, 8080, bes...)
	lb := newTestLB(b, Options{})
	cg := testutil.NewCgroup(b)
	if err := lb.AttachCgroup(cg); err != nil {
		b.Fatal(err)
	}
	for _, s := range []datapath.Service{
		{Frontend: tcpFrontend("10.96.0.10", 80), Backends: backends(datapath.BackendActive, 8080, bes...)},
		{Frontend: tcpFrontend("10.96.0.12", 80)},
	} {
		if err := lb.UpsertService(s); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct{ name, target string }{
		{"ClusterIP", "10.96.0.10:80"},
		{"Direct", "10.244.1.11:8080"},
		{"Refused", "10.96.0.12:80"},
	} {
		b.Run(c.name, func(b *testing.B) {
			res := runChildOp(b, cg, n, childOp{Op: "tcp-connect", Target: c.target, N: b.N}, nil)
			slices.Sort(res.Nanos)
			b.ReportMetric(float64(res.Nanos[len(res.Nanos)/2]), "ns/connect-p50")
			b.ReportMetric(float64(res.Nanos[len(res.Nanos)*99/100]), "ns/connect-p99")
		})
	}
}
