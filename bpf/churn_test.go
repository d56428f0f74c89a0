package bpf

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// TestChurn changes a service's backends at 10 Hz while a client connects
// in a loop: no connect may fail, and every connect made entirely after an
// update landed (and before the next began) reaches a backend of that update.
func TestChurn(t *testing.T) {
	bes := []string{"10.244.1.11", "10.244.1.12", "10.244.1.13", "10.244.1.14"}
	n := testutil.NewNetns(t, bes...)
	testutil.ServeAddrs(t, n, 8080, bes...)
	lb := newTestLB(t, Options{})
	cg := testutil.NewCgroup(t)
	must(t, lb.AttachCgroup(cg), "attach cgroup")

	svc := datapath.Service{Frontend: tcpFrontend("10.96.0.10", 80), Name: "default/churn:http", Backends: backends(datapath.BackendActive, 8080, bes[0])}
	must(t, lb.UpsertService(svc), "upsert")

	// An update is in force once UpsertService returned.
	var updates []testutil.Change
	sets := [][]string{
		{bes[0], bes[1]}, {bes[1], bes[2], bes[3]}, {bes[3]}, {bes[0], bes[2]}, {bes[2]}, {bes[0], bes[1], bes[2], bes[3]},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(100 * time.Millisecond)
		for i := range 20 { // 2 s at 10 Hz
			set := sets[i%len(sets)]
			s := svc
			s.Backends = backends(datapath.BackendActive, 8080, set...)
			u := testutil.Change{Start: testutil.MonoNow(), Ready: set}
			if err := lb.UpsertService(s); err != nil {
				t.Errorf("upsert: %v", err)
				return
			}
			u.Landed = testutil.MonoNow()
			updates = append(updates, u)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	res := runChildOp(t, cg, n, childOp{Op: "tcp-loop", Target: "10.96.0.10:80", For: 2300 * time.Millisecond}, nil)
	<-done

	failed, checked := 0, 0
	for _, a := range res.Log {
		if a.Err != "" {
			failed++
		}
	}
	testutil.EachInForce(res.Log, updates, func(i int, a testutil.Attempt) {
		checked++
		if !slices.Contains(updates[i].Ready, a.Reply[:len(a.Reply)-5]) {
			t.Errorf("connect after update %d (%v) reached removed backend %s", i, updates[i].Ready, a.Reply)
		}
	})
	t.Logf("%d connects during %d updates, %d checked against their update, %d failed", len(res.Log), len(updates), checked, failed)
	if failed > 0 || len(updates) < 20 || checked < len(res.Log)/2 {
		t.Fatalf("%d of %d connects failed (%d checked)", failed, len(res.Log), checked)
	}
}

// TestRestartHitless replaces the process that owns the data path while a
// client connects in a loop: the new process adopts the pinned maps and
// swaps its programs into the pinned links; no connect fails.
func TestRestartHitless(t *testing.T) {
	bes := []string{"10.244.1.11", "10.244.1.12"}
	n := testutil.NewNetns(t, bes...)
	testutil.ServeAddrs(t, n, 8080, bes...)
	pin := filepath.Join(PinRoot, "test-"+testutil.RandSuffix())
	lb1, err := Load(Options{PinDir: pin})
	must(t, err, "load")
	t.Cleanup(func() { _ = Uninstall(pin) })
	cg := testutil.NewCgroup(t)
	must(t, lb1.AttachCgroup(cg), "attach cgroup")
	svc := datapath.Service{Frontend: tcpFrontend("10.96.0.10", 80), Name: "default/web:http", Backends: backends(datapath.BackendActive, 8080, bes...)}
	must(t, lb1.UpsertService(svc), "upsert")
	connectPin := filepath.Join(pin, "links", "cgroup_sock_connect4")

	progID := func() uint32 {
		l, err := link.LoadPinnedLink(connectPin, nil)
		must(t, err, "open pinned link")
		defer l.Close()
		info, err := l.Info()
		must(t, err, "link info")
		return uint32(info.Program)
	}
	before := progID()

	var (
		lb2             *LB
		closed, adopted int64
	)
	done := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		// The old process goes away without detaching anything...
		closed = testutil.MonoNow()
		if err := lb1.Close(); err != nil {
			done <- err
			return
		}
		time.Sleep(100 * time.Millisecond)
		// ...and the new one adopts and reconciles.
		var err error
		if lb2, err = Load(Options{PinDir: pin}); err != nil {
			done <- err
			return
		}
		if err := lb2.AttachCgroup(cg); err != nil {
			done <- err
			return
		}
		err = lb2.UpsertService(svc)
		adopted = testutil.MonoNow()
		done <- err
	}()
	res := runChildOp(t, cg, n, childOp{Op: "tcp-loop", Target: "10.96.0.10:80", For: time.Second}, nil)
	must(t, <-done, "restart")
	defer lb2.Close()

	failed, before, between, after := 0, 0, 0, 0
	for _, a := range res.Log {
		if a.Err != "" {
			failed++
		}
		switch {
		case a.End < closed:
			before++
		case a.Start > adopted:
			after++
		default:
			between++
		}
	}
	t.Logf("connects: %d before the old process closed, %d while no process or the new one was taking over, %d after", before, between, after)
	if failed > 0 {
		t.Fatalf("%d of %d connects failed across the restart", failed, len(res.Log))
	}
	if before == 0 || between == 0 || after == 0 {
		t.Fatal("the client loop did not span the restart")
	}
	if after := progID(); after == before {
		t.Fatalf("pinned connect4 link still runs the old program %d", before)
	}
	links, _ := filepath.Glob(filepath.Join(pin, "links", "cgroup_*"))
	if len(links) != 8 {
		t.Fatalf("pinned cgroup links: %v", links)
	}
}
