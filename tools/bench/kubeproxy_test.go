package bench

import (
	"net/netip"
	"strings"
	"testing"
)

// Chain names kube-proxy gives well-known services on every cluster: if the
// hashing differs by one byte these do not match.
func TestChainNamesMatchKubeProxy(t *testing.T) {
	for _, c := range []struct{ portName, proto, want string }{
		{"default/kubernetes:https", "tcp", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		{"kube-system/kube-dns:dns", "udp", "KUBE-SVC-TCOU7JCQXEZGVUNU"},
		{"kube-system/kube-dns:dns-tcp", "tcp", "KUBE-SVC-ERIFXISQEP7F7OF4"},
		{"kube-system/kube-dns:metrics", "tcp", "KUBE-SVC-JD5MR3NA4I4DYORP"},
	} {
		if got := svcChain(c.portName, c.proto); got != c.want {
			t.Errorf("svcChain(%q, %q) = %s, want %s", c.portName, c.proto, got, c.want)
		}
	}
}

func testServices(n, eps int) []KubeService {
	var out []KubeService
	for i := range n {
		s := KubeService{Namespace: "ns", Name: "svc" + string(rune('a'+i)), PortName: "http", Proto: "tcp",
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(10 + i)}), Port: 80}
		for j := range eps {
			s.Endpoints = append(s.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 1, byte(1 + 10*i + j)}), 8080))
		}
		out = append(out, s)
	}
	return out
}

func TestKubeProxyRestoreShape(t *testing.T) {
	svcs := testServices(2, 3)
	out := string(KubeProxyRestore(svcs, netip.MustParsePrefix("10.244.0.0/16")))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "*filter" || lines[len(lines)-1] != "COMMIT" {
		t.Fatalf("restore input must hold *filter … COMMIT tables:\n%s", out)
	}
	svc := svcChain("ns/svca:http", "tcp")
	sep0 := sepChain("ns/svca:http", "tcp", "10.244.1.1:8080")
	want := []string{
		`-A KUBE-SERVICES -m comment --comment "ns/svca:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j ` + svc,
		`-A ` + svc + ` -m comment --comment "ns/svca:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ`,
		`-A ` + svc + ` -m comment --comment "ns/svca:http -> 10.244.1.1:8080" -m statistic --mode random --probability 0.3333333333 -j ` + sep0,
		`-m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-`,
		`-A ` + sep0 + ` -m comment --comment ns/svca:http -s 10.244.1.1 -j KUBE-MARK-MASQ`,
		`-A ` + sep0 + ` -m comment --comment ns/svca:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.1:8080`,
		`-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN`,
		`-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000`,
		":" + svc + " - [0:0]",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
	// Services appear in KUBE-SERVICES in the given order, the nodeports
	// jump last.
	var order []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			order = append(order, l)
		}
	}
	if len(order) != 3 || !strings.Contains(order[0], "svca") || !strings.Contains(order[1], "svcb") || !strings.Contains(order[2], "KUBE-NODEPORTS") {
		t.Errorf("KUBE-SERVICES order = %q", order)
	}
	// The last endpoint of a service is an unconditional jump.
	if n := strings.Count(out, "--probability"); n != 4 {
		t.Errorf("%d probability rules, want 2 per service", n)
	}
}

// Past 1,000 endpoints kube-proxy drops the per-endpoint comments.
func TestKubeProxyRestoreLargeClusterMode(t *testing.T) {
	out := string(KubeProxyRestore(testServices(1, 1001), netip.MustParsePrefix("10.244.0.0/16")))
	if strings.Contains(out, "-> 10.244.") {
		t.Error("per-endpoint comments kept in large cluster mode")
	}
	if !strings.Contains(out, `"ns/svca:http cluster IP"`) {
		t.Error("KUBE-SERVICES comments must stay in large cluster mode")
	}
}

func TestKubeProxyJumps(t *testing.T) {
	out := string(KubeProxyJumps())
	for _, w := range []string{
		`-I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
		`-I OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		":KUBE-FIREWALL - [0:0]",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
}

// A partial sync rewrites KUBE-SERVICES in full but only the changed
// service's chains, and deletes the chains of endpoints that went away.
func TestKubeProxyPartialRestore(t *testing.T) {
	svcs := testServices(3, 3)
	gone := svcs[1].Endpoints[2]
	svcs[1].Endpoints = svcs[1].Endpoints[:2]
	out := string(KubeProxyPartialRestore(svcs, 1, []netip.AddrPort{gone}, netip.MustParsePrefix("10.244.0.0/16")))
	if n := strings.Count(out, "-A KUBE-SERVICES -m comment --comment \"ns/svc"); n != 3 {
		t.Errorf("%d KUBE-SERVICES service rules, want all 3", n)
	}
	for _, unchanged := range []string{"svca", "svcc"} {
		if strings.Contains(out, ":"+svcChain("ns/"+unchanged+":http", "tcp")) {
			t.Errorf("unchanged %s rewritten", unchanged)
		}
	}
	if !strings.Contains(out, ":"+svcChain("ns/svcb:http", "tcp")+" - [0:0]") {
		t.Error("changed service chain not rewritten")
	}
	goneChain := sepChain("ns/svcb:http", "tcp", gone.String())
	if !strings.Contains(out, ":"+goneChain+" - [0:0]") || !strings.Contains(out, "-X "+goneChain) {
		t.Errorf("chain of the removed endpoint %s not deleted:\n%s", goneChain, out)
	}
}
