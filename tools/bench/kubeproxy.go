package bench

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// This file writes the iptables-restore input kube-proxy's iptables mode
// (pkg/proxy/iptables/proxier.go, syncProxyRules) writes for ClusterIP
// services with cluster traffic policy, no session affinity, ready endpoints,
// --cluster-cidr set (so the local-traffic detector is the CIDR), the default
// masquerade bit 14, localhost NodePorts on and nf_conntrack_tcp_be_liberal
// off. Chain names use kube-proxy's hashes, so the rule set is byte-for-byte
// the shape a node with these services carries.

// KubeService is one service port as kube-proxy sees it.
type KubeService struct {
	Namespace, Name, PortName string
	Proto                     string // "tcp" or "udp"
	ClusterIP                 netip.Addr
	Port                      uint16
	Endpoints                 []netip.AddrPort
}

// portName is proxy.ServicePortName.String(): "ns/name:port" ("ns/name" for
// an unnamed port).
func (s KubeService) portName() string {
	n := s.Namespace + "/" + s.Name
	if s.PortName != "" {
		n += ":" + s.PortName
	}
	return n
}

// Hash-named chains, as kube-proxy names them (sha256, base32, 16 chars):
// the service chain hashes name+protocol, the endpoint chain adds "ip:port".
func svcChain(portName, proto string) string {
	return "KUBE-SVC-" + hash16(portName+proto)
}

func sepChain(portName, proto, endpoint string) string {
	return "KUBE-SEP-" + hash16(portName+proto+endpoint)
}

func hash16(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// kube-proxy's defaults: --iptables-masquerade-bit=14.
var masqMark = fmt.Sprintf("%#08x", 1<<14)

// largeClusterEndpoints is kube-proxy's largeClusterEndpointsThreshold: past
// it, per-endpoint comments are left out to shrink the restore input.
const largeClusterEndpoints = 1000

// KubeProxyRestore returns the input of kube-proxy's full sync
// (iptables-restore --noflush --counters) for svcs, in the given order: the
// order of the KUBE-SERVICES rules, which iptables walks linearly. kube-proxy
// itself writes them in Go map order, so a service's position is random; the
// harness puts the one under test last, the worst case.
func KubeProxyRestore(svcs []KubeService, clusterCIDR netip.Prefix) []byte {
	return kubeProxyRestore(svcs, clusterCIDR, func(int) bool { return true }, nil)
}

// KubeProxyPartialRestore is the input of kube-proxy's partial sync after
// the endpoints of svcs[changed] changed (MinimizeIPTablesRestore, on by
// default since 1.27): the filter table and the top-level nat chains are
// written in full (KUBE-SERVICES lists every service, so it stays O(N)),
// the service and endpoint chains only for the changed service, and the
// chains of endpoints that went away are flushed and deleted.
func KubeProxyPartialRestore(svcs []KubeService, changed int, goneEndpoints []netip.AddrPort, clusterCIDR netip.Prefix) []byte {
	var gone []string
	for _, ep := range goneEndpoints {
		gone = append(gone, sepChain(svcs[changed].portName(), svcs[changed].Proto, ep.String()))
	}
	return kubeProxyRestore(svcs, clusterCIDR, func(i int) bool { return i == changed }, gone)
}

func kubeProxyRestore(svcs []KubeService, clusterCIDR netip.Prefix, write func(int) bool, deleteChains []string) []byte {
	var filterChains, filterRules, natChains, natRules bytes.Buffer
	chain := func(b *bytes.Buffer, name string) { fmt.Fprintf(b, ":%s - [0:0]\n", name) }
	rule := func(b *bytes.Buffer, args ...string) { b.WriteString(strings.Join(args, " ")); b.WriteByte('\n') }

	for _, c := range []string{"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"} {
		chain(&filterChains, c)
	}
	for _, c := range []string{"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"} {
		chain(&natChains, c)
	}
	rule(&natRules, "-A KUBE-POSTROUTING -m mark ! --mark", masqMark+"/"+masqMark, "-j RETURN")
	rule(&natRules, "-A KUBE-POSTROUTING -j MARK --xor-mark", masqMark)
	rule(&natRules, `-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`)
	rule(&natRules, "-A KUBE-MARK-MASQ -j MARK --or-mark", masqMark)
	chain(&filterChains, "KUBE-FIREWALL")
	rule(&filterRules, `-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`)

	total := 0
	for _, s := range svcs {
		total += len(s.Endpoints)
	}
	large := total > largeClusterEndpoints

	for i, s := range svcs {
		pn, proto := s.portName(), s.Proto
		vip, port := s.ClusterIP.String(), strconv.Itoa(int(s.Port))
		svc := svcChain(pn, proto)
		if len(s.Endpoints) == 0 {
			rule(&filterRules, "-A KUBE-SERVICES -m comment --comment", strconv.Quote(pn+" has no endpoints"),
				"-m", proto, "-p", proto, "-d", vip, "--dport", port, "-j REJECT")
			continue
		}
		match := []string{"-m comment --comment", strconv.Quote(pn + " cluster IP"), "-m", proto, "-p", proto, "-d", vip, "--dport", port}
		rule(&natRules, append(append([]string{"-A KUBE-SERVICES"}, match...), "-j", svc)...)
		if !write(i) {
			continue // unchanged: its chains stay as they are (--noflush)
		}
		// Masquerade traffic to the VIP that does not come from a pod.
		rule(&natRules, append(append([]string{"-A", svc}, match...), "! -s", clusterCIDR.String(), "-j KUBE-MARK-MASQ")...)

		chain(&natChains, svc)
		n := len(s.Endpoints)
		for i, ep := range s.Endpoints {
			args := []string{"-A", svc}
			if !large {
				args = append(args, "-m comment --comment", strconv.Quote(pn+" -> "+ep.String()))
			}
			if i < n-1 {
				args = append(args, "-m statistic --mode random --probability", fmt.Sprintf("%0.10f", 1.0/float64(n-i)))
			}
			rule(&natRules, append(args, "-j", sepChain(pn, proto, ep.String()))...)
		}
		for _, ep := range s.Endpoints {
			sep := sepChain(pn, proto, ep.String())
			chain(&natChains, sep)
			args := []string{"-A", sep}
			if !large {
				args = append(args, "-m comment --comment", pn)
			}
			rule(&natRules, append(args, "-s", ep.Addr().String(), "-j KUBE-MARK-MASQ")...)
			rule(&natRules, append(args, "-m", proto, "-p", proto, "-j DNAT --to-destination", ep.String())...)
		}
	}
	for _, c := range deleteChains {
		chain(&natChains, c)
		rule(&natRules, "-X", c)
	}
	rule(&natRules, `-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`)
	rule(&filterRules, "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
	rule(&filterRules, `-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark`, masqMark+"/"+masqMark, "-j ACCEPT")
	rule(&filterRules, `-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`)

	var out bytes.Buffer
	out.WriteString("*filter\n")
	out.Write(filterChains.Bytes())
	out.Write(filterRules.Bytes())
	out.WriteString("COMMIT\n*nat\n")
	out.Write(natChains.Bytes())
	out.Write(natRules.Bytes())
	out.WriteString("COMMIT\n")
	return out.Bytes()
}

// KubeProxyJumps returns the jump rules kube-proxy ensures in the built-in
// chains before its first full sync (iptablesJumpChains and the kubelet's
// KUBE-FIREWALL jumps, each inserted at the top with `iptables -I`), as one
// iptables-restore --noflush input. The chains they target are declared
// empty here and filled by the full sync.
func KubeProxyJumps() []byte {
	type jump struct{ table, src, dst, comment, extra string }
	const ctNew = "-m conntrack --ctstate NEW"
	jumps := []jump{
		{"filter", "INPUT", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", ctNew},
		{"filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", ctNew},
		{"filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports", ""},
		{"filter", "FORWARD", "KUBE-SERVICES", "kubernetes service portals", ctNew},
		{"filter", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", ctNew},
		{"filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules", ""},
		{"filter", "INPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", ctNew},
		{"filter", "OUTPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", ctNew},
		{"filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", ctNew},
		{"nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", ""},
		{"nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals", ""},
		{"nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules", ""},
		{"filter", "INPUT", "KUBE-FIREWALL", "", ""},
		{"filter", "OUTPUT", "KUBE-FIREWALL", "", ""},
	}
	var out bytes.Buffer
	for _, table := range []string{"filter", "nat"} {
		fmt.Fprintf(&out, "*%s\n", table)
		declared := map[string]bool{}
		for _, j := range jumps {
			if j.table == table && !declared[j.dst] {
				declared[j.dst] = true
				fmt.Fprintf(&out, ":%s - [0:0]\n", j.dst)
			}
		}
		for _, j := range jumps {
			if j.table != table {
				continue
			}
			args := []string{"-I", j.src}
			if j.extra != "" {
				args = append(args, j.extra)
			}
			if j.comment != "" {
				args = append(args, "-m comment --comment", strconv.Quote(j.comment))
			}
			out.WriteString(strings.Join(append(args, "-j", j.dst), " ") + "\n")
		}
		out.WriteString("COMMIT\n")
	}
	return out.Bytes()
}
