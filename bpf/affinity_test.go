package bpf

import (
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// TestAffinityEndsWhenBackendLeaves: a client pinned by ClientIP affinity
// to a backend goes elsewhere once the service drops that backend, even
// though another service still has it Active (the programs only check
// that a pinned backend is Active somewhere); and a deleted service's
// pins do not outlive it.
func TestAffinityEndsWhenBackendLeaves(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "nsenter")
	bes := []string{"10.244.1.11", "10.244.1.12"}
	n := testutil.NewNetns(t, bes...)
	testutil.ServeAddrs(t, n, 8080, bes...)
	lb := newTestLB(t, Options{NodeIP: nodeIP})
	cg := testutil.NewCgroup(t)
	must(t, lb.AttachCgroup(cg), "attach cgroup")

	sticky := datapath.Service{Frontend: tcpFrontend("10.96.0.11", 80), Name: "default/sticky:http", Backends: backends(datapath.BackendActive, 8080, bes...), AffinityTimeout: time.Hour}
	// Another service selecting the same pods keeps both backends Active.
	other := datapath.Service{Frontend: tcpFrontend("10.96.0.12", 80), Name: "default/other:http", Backends: backends(datapath.BackendActive, 8080, bes...)}
	must(t, lb.UpsertService(sticky), "upsert sticky")
	must(t, lb.UpsertService(other), "upsert other")

	res := runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.11:80", N: 20}, nil)
	if len(res.Errnos) > 0 || len(res.Counts) != 1 {
		t.Fatalf("affinity: %v %v, want one backend", res.Counts, res.Errnos)
	}
	var pinned string
	for b := range res.Counts {
		pinned = b
	}
	var rest string
	for _, b := range bes {
		if b+":8080" != pinned {
			rest = b
		}
	}
	sticky.Backends = backends(datapath.BackendActive, 8080, rest)
	must(t, lb.UpsertService(sticky), "upsert sticky without %s", pinned)
	res = runChildOp(t, cg, n, childOp{Op: "tcp-connect", Target: "10.96.0.11:80", N: 20}, nil)
	if len(res.Errnos) > 0 || res.Counts[rest+":8080"] != 20 {
		t.Fatalf("after %s left the service: %v %v, want all to %s:8080", pinned, res.Counts, res.Errnos, rest)
	}

	must(t, lb.DeleteService(sticky.Frontend), "delete sticky")
	left := 0
	must(t, batchRead(lb.objs.Lb4Affinity, func(*lbLb4AffinityKey, *lbLb4AffinityVal) { left++ }), "read affinity")
	if left != 0 {
		t.Fatalf("%d affinity entries outlive the deleted service", left)
	}
}
