package bpf

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skep-dev/skep/proxy/datapath"
)

const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// packet builds an Ethernet/IPv4/TCP-or-UDP frame with valid checksums.
func packet(proto datapath.Proto, src, dst netip.AddrPort, payload string) []byte {
	l4len := 20
	if proto == datapath.UDP {
		l4len = 8
	}
	b := make([]byte, 14+20+l4len+len(payload))
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x02})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+l4len+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[8] = 64
	ip[9] = uint8(proto)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^csum(ip, 0))
	l4 := b[34:]
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	if proto == datapath.TCP {
		binary.BigEndian.PutUint32(l4[4:], 1000) // seq
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(l4[14:], 65535)
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	copy(l4[l4len:], payload)
	off := 16
	if proto == datapath.UDP {
		off = 6
	}
	binary.BigEndian.PutUint16(l4[off:], ^csum(l4, pseudo(ip)))
	return b
}

func csum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func pseudo(ip []byte) uint32 {
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	sum += uint32(ip[9])
	sum += uint32(binary.BigEndian.Uint16(ip[2:])) - 20
	return sum
}

// tuple reads a frame's addresses back and checks both checksums.
func tuple(t *testing.T, b []byte) (src, dst netip.AddrPort) {
	t.Helper()
	ip := b[14:34]
	l4 := b[34:]
	if csum(ip, 0) != 0xffff {
		t.Errorf("bad IP header checksum in % x", ip)
	}
	if !(ip[9] == 17 && binary.BigEndian.Uint16(l4[6:]) == 0) && csum(l4, pseudo(ip)) != 0xffff {
		t.Errorf("bad L4 checksum in % x", l4)
	}
	src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(l4[0:]))
	dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(l4[2:]))
	return src, dst
}

func run(t *testing.T, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt)+256)
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out})
	must(t, err, "test run")
	return ret, out[:len(pkt)]
}

var (
	nodeIP  = netip.MustParseAddr("172.31.77.10")
	podCIDR = netip.MustParsePrefix("10.244.1.0/24")
	client  = netip.MustParseAddrPort("172.31.77.1:40001")
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func extFrontend(port uint16, proto datapath.Proto) datapath.Frontend {
	return datapath.Frontend{IP: nodeIP, Port: port, Proto: proto, Scope: datapath.ScopeExternal}
}

func TestNodePortPackets(t *testing.T) {
	lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
	in, out := lb.objs.TcNodeportIn, lb.objs.TcNodeportOut
	local := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13"}
	for _, s := range []datapath.Service{
		{Frontend: extFrontend(30080, datapath.TCP), Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, local...)},
		{Frontend: extFrontend(30081, datapath.TCP), Name: "default/remote:http", Backends: backends(datapath.BackendActive, 8080, "10.244.2.21")},
		{Frontend: extFrontend(30053, datapath.UDP), Name: "default/dns:dns", Backends: backends(datapath.BackendActive, 5353, "10.244.1.11")},
		{Frontend: extFrontend(30099, datapath.TCP), Name: "default/empty:http"},
		// A ClusterIP is the socket-LB's: the tc path leaves it alone.
		{Frontend: tcpFrontend("10.96.0.10", 80), Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, local...)},
	} {
		must(t, lb.UpsertService(s), "upsert %s", s.Frontend)
	}

	t.Run("DNATLocalAndReverse", func(t *testing.T) {
		fe := ap("172.31.77.10:30080")
		ret, b := run(t, in, packet(datapath.TCP, client, fe, "hello"))
		if ret != tcActOK {
			t.Fatalf("ingress verdict %d, want TC_ACT_OK", ret)
		}
		src, dst := tuple(t, b)
		if src != client || dst.Port() != 8080 || !podCIDR.Contains(dst.Addr()) {
			t.Fatalf("DNAT: got %s -> %s, want %s -> 10.244.1.x:8080", src, dst, client)
		}
		if string(b[len(b)-5:]) != "hello" {
			t.Fatalf("payload changed: %q", b[len(b)-5:])
		}
		// Every later packet of the flow goes to the same backend.
		for range 20 {
			_, b := run(t, in, packet(datapath.TCP, client, fe, "more"))
			if _, d := tuple(t, b); d != dst {
				t.Fatalf("flow moved from %s to %s", dst, d)
			}
		}
		// The local backend's reply leaves through the uplink's egress
		// and gets the frontend back as its source.
		ret, b = run(t, out, packet(datapath.TCP, dst, client, "world"))
		if ret != tcActOK {
			t.Fatalf("egress verdict %d", ret)
		}
		rs, rd := tuple(t, b)
		if rs != fe || rd != client {
			t.Fatalf("reverse NAT: got %s -> %s, want %s -> %s", rs, rd, fe, client)
		}
	})

	t.Run("SpreadAcrossFlows", func(t *testing.T) {
		seen := map[netip.Addr]int{}
		for i := range 300 {
			c := netip.AddrPortFrom(client.Addr(), uint16(20000+i))
			_, b := run(t, in, packet(datapath.TCP, c, ap("172.31.77.10:30080"), ""))
			_, d := tuple(t, b)
			seen[d.Addr()]++
		}
		if len(seen) != 3 {
			t.Fatalf("300 flows reached %v, want all 3 backends", seen)
		}
	})

	t.Run("SNATRemoteAndReverse", func(t *testing.T) {
		fe := ap("172.31.77.10:30081")
		ret, b := run(t, in, packet(datapath.TCP, client, fe, "x"))
		// Redirected when the FIB knows a route; in a test run it
		// does not, and the packet goes back to the stack.
		if ret != tcActOK && ret != tcActRedirect {
			t.Fatalf("ingress verdict %d", ret)
		}
		src, dst := tuple(t, b)
		if dst != ap("10.244.2.21:8080") {
			t.Fatalf("DNAT to remote: dst %s", dst)
		}
		if src.Addr() != nodeIP || src.Port() < 40000 || src.Port() > 59999 {
			t.Fatalf("SNAT: src %s, want %s:40000-59999", src, nodeIP)
		}
		// Another client gets another SNAT port.
		_, b2 := run(t, in, packet(datapath.TCP, ap("172.31.77.2:40001"), fe, "x"))
		if s2, _ := tuple(t, b2); s2 == src {
			t.Fatalf("two flows share SNAT source %s", s2)
		}
		// The remote backend answers the node; ingress restores both ends.
		ret, b = run(t, in, packet(datapath.TCP, dst, src, "y"))
		if ret != tcActOK && ret != tcActRedirect {
			t.Fatalf("reply verdict %d", ret)
		}
		rs, rd := tuple(t, b)
		if rs != fe || rd != client {
			t.Fatalf("reverse SNAT+DNAT: got %s -> %s, want %s -> %s", rs, rd, fe, client)
		}
	})

	t.Run("UDP", func(t *testing.T) {
		fe := ap("172.31.77.10:30053")
		_, b := run(t, in, packet(datapath.UDP, client, fe, "query"))
		src, dst := tuple(t, b)
		if src != client || dst != ap("10.244.1.11:5353") {
			t.Fatalf("UDP DNAT: %s -> %s", src, dst)
		}
		_, b = run(t, out, packet(datapath.UDP, dst, client, "answer"))
		if rs, _ := tuple(t, b); rs != fe {
			t.Fatalf("UDP reverse NAT: source %s, want %s", rs, fe)
		}
		// A zero UDP checksum ("none") stays zero.
		p := packet(datapath.UDP, ap("172.31.77.3:999"), fe, "nocsum")
		p[34+6], p[34+7] = 0, 0
		_, b = run(t, in, p)
		if b[34+6] != 0 || b[34+7] != 0 {
			t.Fatalf("zero UDP checksum became % x", b[34+6:34+8])
		}
		tuple(t, b)
	})

	t.Run("TerminatingKeepsFlows", func(t *testing.T) {
		two := datapath.Service{Frontend: extFrontend(30090, datapath.TCP), Name: "default/two:http", Backends: backends(datapath.BackendActive, 8080, "10.244.1.21", "10.244.1.22")}
		must(t, lb.UpsertService(two), "upsert")
		fe := ap("172.31.77.10:30090")
		_, b := run(t, in, packet(datapath.TCP, client, fe, ""))
		_, first := tuple(t, b)
		// The flow's backend starts terminating: the flow stays on it,
		// new flows go to the other one.
		other := "10.244.1.21"
		if first.Addr().String() == other {
			other = "10.244.1.22"
		}
		two.Backends = append(backends(datapath.BackendActive, 8080, other), backends(datapath.BackendTerminating, 8080, first.Addr().String())...)
		must(t, lb.UpsertService(two), "mark terminating")
		if _, d := tuple(t, second(run(t, in, packet(datapath.TCP, client, fe, "")))); d != first {
			t.Fatalf("established flow moved to %s", d)
		}
		for i := range 20 {
			c := netip.AddrPortFrom(client.Addr(), uint16(30000+i))
			if _, d := tuple(t, second(run(t, in, packet(datapath.TCP, c, fe, "")))); d.Addr().String() != other {
				t.Fatalf("new flow went to %s, want the Active %s", d, other)
			}
		}
		// Removed entirely: its conntrack entries are purged.
		two.Backends = backends(datapath.BackendActive, 8080, other)
		must(t, lb.UpsertService(two), "remove")
		p, err := OpenPinned(lb.PinDir())
		must(t, err, "open pinned")
		defer p.Close()
		cts, err := p.Conntrack()
		must(t, err, "conntrack")
		for _, c := range cts {
			if c.Src.Addr() == first.Addr() || c.Dst == fe && c.Src == client {
				t.Errorf("conntrack entry of a removed backend left: %+v", c)
			}
		}
	})

	t.Run("ClientIPAffinity", func(t *testing.T) {
		sticky := datapath.Service{Frontend: extFrontend(30091, datapath.TCP), Backends: backends(datapath.BackendActive, 8080, local...), AffinityTimeout: time.Minute}
		must(t, lb.UpsertService(sticky), "upsert")
		fe := ap("172.31.77.10:30091")
		for _, c := range []string{"172.31.77.5", "172.31.77.6", "172.31.77.7"} {
			seen := map[netip.AddrPort]bool{}
			for i := range 30 {
				src := netip.AddrPortFrom(netip.MustParseAddr(c), uint16(10000+i))
				_, d := tuple(t, second(run(t, in, packet(datapath.TCP, src, fe, ""))))
				seen[d] = true
			}
			if len(seen) != 1 {
				t.Fatalf("client %s: 30 flows went to %v, want one backend", c, seen)
			}
		}
	})

	t.Run("NoBackendsDropped", func(t *testing.T) {
		ret, _ := run(t, in, packet(datapath.TCP, client, ap("172.31.77.10:30099"), ""))
		if ret != tcActShot {
			t.Fatalf("verdict %d for a frontend without backends, want TC_ACT_SHOT", ret)
		}
	})

	t.Run("UnknownPassesUntouched", func(t *testing.T) {
		arp := make([]byte, 60)
		binary.BigEndian.PutUint16(arp[12:], 0x0806)
		for name, p := range map[string][]byte{
			"ssh to node":       packet(datapath.TCP, client, ap("172.31.77.10:22"), "x"),
			"other nodeport":    packet(datapath.UDP, client, ap("172.31.77.10:30080"), "x"),
			"clusterip on wire": packet(datapath.TCP, client, ap("10.96.0.10:80"), "x"),
			"pod traffic":       packet(datapath.TCP, ap("10.244.1.11:8080"), ap("10.244.2.21:1234"), "x"),
			"arp":               arp,
		} {
			for pname, prog := range map[string]*ebpf.Program{"in": in, "out": out} {
				ret, b := run(t, prog, p)
				if ret != tcActOK || string(b) != string(p) {
					t.Errorf("%s/%s: verdict %d, changed %v", name, pname, ret, string(b) != string(p))
				}
			}
		}
	})
}

// TestBpftoolShowsFieldNames checks that every pinned map carries BTF, so
// bpftool prints field names instead of hex.
func TestBpftoolShowsFieldNames(t *testing.T) {
	lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
	svc := datapath.Service{Frontend: extFrontend(30080, datapath.TCP), Name: "default/web:http",
		Backends: backends(datapath.BackendActive, 8080, "10.244.2.21"), AffinityTimeout: time.Minute}
	must(t, lb.UpsertService(svc), "upsert")
	// One flow through the tc path fills conntrack and affinity.
	run(t, lb.objs.TcNodeportIn, packet(datapath.TCP, client, ap("172.31.77.10:30080"), ""))
	pin := func(m string) string { return filepath.Join(lb.PinDir(), m) }
	bpftoolHasFields(t, pin("lb4_backends"), "address", "port", "proto", "state", "flags")
	bpftoolHasFields(t, pin("lb4_revnat"), "address", "port")
	bpftoolHasFields(t, pin("lb4_svc_names"), "name")
	bpftoolHasFields(t, pin("lb4_ct"), "saddr", "daddr", "sport", "dport", "dir", "backend_id", "rev_nat_id", "flags", "vaddr")
	bpftoolHasFields(t, pin("lb4_affinity"), "client", "rev_nat_id", "last_used", "backend_id")
	bpftoolHasFields(t, pin("lb4_counters"), "connects", "packets", "bytes", "refused")
}

func second[A, B any](_ A, b B) B { return b }

// TestSNATPortReuse: SNAT ports are held per flow; when the range is used up
// new flows are dropped, until a flow closes (FIN/RST) and its port is
// taken over, its old conntrack forgotten.
func TestSNATPortReuse(t *testing.T) {
	lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR, SNATPorts: [2]uint16{40000, 40001}, CTClosingTimeout: -1})
	in := lb.objs.TcNodeportIn
	must(t, lb.UpsertService(datapath.Service{Frontend: extFrontend(30081, datapath.TCP), Backends: backends(datapath.BackendActive, 8080, "10.244.2.21")}), "upsert")
	fe := ap("172.31.77.10:30081")
	c1, c2, c3 := ap("172.31.77.1:1001"), ap("172.31.77.2:1002"), ap("172.31.77.3:1003")
	_, b := run(t, in, packet(datapath.TCP, c1, fe, ""))
	s1, be := tuple(t, b)
	_, b = run(t, in, packet(datapath.TCP, c2, fe, ""))
	if s2, _ := tuple(t, b); s2 == s1 {
		t.Fatalf("two flows share %s", s2)
	}
	if ret, _ := run(t, in, packet(datapath.TCP, c3, fe, "")); ret != tcActShot {
		t.Fatalf("third flow with two SNAT ports: verdict %d, want TC_ACT_SHOT", ret)
	}
	// The backend resets flow 1: its port goes to flow 3.
	rst := packet(datapath.TCP, be, s1, "")
	rst[34+13] = 0x04
	rst[34+16], rst[34+17] = 0, 0
	binary.BigEndian.PutUint16(rst[34+16:], ^csum(rst[34:], pseudo(rst[14:34])))
	_, b = run(t, in, rst)
	if rs, rd := tuple(t, b); rs != fe || rd != c1 {
		t.Fatalf("RST reverse NAT: %s -> %s", rs, rd)
	}
	ret, b := run(t, in, packet(datapath.TCP, c3, fe, ""))
	if ret == tcActShot {
		t.Fatal("third flow still dropped after the first closed")
	}
	if s3, _ := tuple(t, b); s3 != s1 {
		t.Fatalf("third flow got %s, want the freed %s", s3, s1)
	}
	// Flow 1's own conntrack is gone with its port.
	p, err := OpenPinned(lb.PinDir())
	must(t, err, "open pinned")
	defer p.Close()
	cts, err := p.Conntrack()
	must(t, err, "conntrack")
	for _, c := range cts {
		if c.Src == c1 {
			t.Errorf("flow 1 still tracked: %+v", c)
		}
	}
}

// BenchmarkNodePortPacket is the in-kernel cost of the tc program per
// packet (BPF_PROG_TEST_RUN with repeat): an established NodePort flow, and
// traffic that is not ours. Re-run with go test -run '^$' -bench NodePortPacket ./bpf
func BenchmarkNodePortPacket(b *testing.B) {
	lb := newTestLB(b, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
	svc := datapath.Service{Frontend: extFrontend(30080, datapath.TCP), Backends: backends(datapath.BackendActive, 8080, "10.244.1.11", "10.244.1.12", "10.244.1.13")}
	if err := lb.UpsertService(svc); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"Established", packet(datapath.TCP, client, ap("172.31.77.10:30080"), "payload")},
		{"NotOurs", packet(datapath.TCP, client, ap("172.31.77.10:22"), "payload")},
	} {
		b.Run(c.name, func(b *testing.B) {
			_, per, err := lb.objs.TcNodeportIn.Benchmark(c.pkt, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
		})
	}
}
