package bpf

import (
	"net/netip"
	"testing"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// TestInternalFrontendWinsForPods: an address:port may carry an External
// frontend (packets from the uplink, tc) and an Internal one (this node's
// pods, socket-LB) with different backends. That is how an
// externalTrafficPolicy: Local service keeps outside clients on local
// endpoints while a pod's own connects to its externalIP or to this node's
// NodePort go to every endpoint, as kube-proxy does; with no Internal
// frontend the pod gets the External one's backends.
func TestInternalFrontendWinsForPods(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "nsenter")
	local, remote := "10.244.1.11", "10.244.2.21"
	n := testutil.NewNetns(t, local, remote)
	testutil.ServeAddrs(t, n, 8080, local, remote)
	lb := newTestLB(t, Options{NodeIP: nodeIP, PodCIDR: podCIDR})
	cg := testutil.NewCgroup(t)
	must(t, lb.AttachCgroup(cg), "attach cgroup")

	ext := datapath.Frontend{IP: netip.MustParseAddr("172.31.77.100"), Port: 80, Proto: datapath.TCP, Scope: datapath.ScopeExternal}
	must(t, lb.UpsertService(datapath.Service{Frontend: ext, Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, local)}), "upsert external")

	res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "172.31.77.100:80", N: 20}, nil)
	if len(res.Errnos) > 0 || res.Counts[local+":8080"] != 20 {
		t.Fatalf("external frontend only: %v %v, want all to the local backend", res.Counts, res.Errnos)
	}

	in := ext
	in.Scope = datapath.ScopeInternal
	must(t, lb.UpsertService(datapath.Service{Frontend: in, Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, remote)}), "upsert internal")
	res = runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "172.31.77.100:80", N: 20}, nil)
	if len(res.Errnos) > 0 || res.Counts[remote+":8080"] != 20 {
		t.Fatalf("pod connects: %v %v, want all to the Internal frontend's backend", res.Counts, res.Errnos)
	}
	if res.Peer != "172.31.77.100:80" {
		t.Fatalf("getpeername = %q, want the external IP", res.Peer)
	}
	// The uplink still balances to the External frontend's backend.
	_, b := run(t, lb.objs.TcNodeportIn, packet(datapath.TCP, client, ap("172.31.77.100:80"), ""))
	if _, d := tuple(t, b); d != ap(local+":8080") {
		t.Fatalf("tc DNAT to %s, want %s:8080", d, local)
	}
}
