package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func mustPool(t *testing.T, cidr string) Pool {
	t.Helper()
	p, err := NewPool(netip.MustParsePrefix(cidr))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolBounds(t *testing.T) {
	p := mustPool(t, "10.244.1.0/24")
	if got := p.Gateway(); got != netip.MustParseAddr("10.244.1.1") {
		t.Errorf("gateway = %s", got)
	}
	if p.Size() != 253 {
		t.Errorf("size = %d, want 253 (.2 to .254)", p.Size())
	}
	for _, s := range []string{"10.244.1.0", "10.244.1.1", "10.244.1.255", "10.244.2.2"} {
		if p.Contains(netip.MustParseAddr(s)) {
			t.Errorf("pool contains %s", s)
		}
	}
	for _, bad := range []string{"10.0.0.0/31", "10.0.0.0/32", "fd00::/64"} {
		if _, err := NewPool(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("NewPool(%s) succeeded", bad)
		}
	}
	if p := mustPool(t, "10.0.0.4/30"); p.Size() != 1 {
		t.Errorf("/30 size = %d", p.Size())
	}
}

func open(t *testing.T, dir, cidr string) *Store {
	t.Helper()
	s, err := Open(dir, mustPool(t, cidr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func alloc(t *testing.T, s *Store, id string) netip.Addr {
	t.Helper()
	var ip netip.Addr
	err := s.Update(func(tx *Tx) (err error) {
		ip, err = tx.Allocate(Allocation{Attachment: Attachment{ContainerID: id, IfName: "eth0"}})
		return err
	})
	if err != nil {
		t.Fatalf("allocate %s: %v", id, err)
	}
	return ip
}

func release(t *testing.T, s *Store, id string) bool {
	t.Helper()
	var ok bool
	if err := s.Update(func(tx *Tx) (err error) {
		_, ok, err = tx.Release(Attachment{ContainerID: id, IfName: "eth0"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// A freed address is handed out again only after the rest of the range.
func TestRoundRobinAndExhaustion(t *testing.T) {
	s := open(t, t.TempDir(), "10.0.0.0/29") // pods .2 to .6
	defer s.Close()
	var got []string
	for i := range 5 {
		got = append(got, alloc(t, s, fmt.Sprint("c", i)).String())
	}
	want := "[10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6]"
	if fmt.Sprint(got) != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	err := s.Update(func(tx *Tx) error {
		_, err := tx.Allocate(Allocation{Attachment: Attachment{ContainerID: "c9", IfName: "eth0"}})
		return err
	})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocate from a full pool: %v, want ErrExhausted", err)
	}
	if !release(t, s, "c1") || !release(t, s, "c3") {
		t.Fatal("release reported nothing freed")
	}
	if release(t, s, "c1") {
		t.Fatal("second release of c1 reported a free")
	}
	// Last handed out was .6, so the search wraps to .2 (taken) then .3.
	if ip := alloc(t, s, "c10"); ip.String() != "10.0.0.3" {
		t.Fatalf("after wrap got %s, want 10.0.0.3", ip)
	}
	if ip := alloc(t, s, "c11"); ip.String() != "10.0.0.5" {
		t.Fatalf("next got %s, want 10.0.0.5", ip)
	}
}

func TestDuplicateAttachmentRejected(t *testing.T) {
	s := open(t, t.TempDir(), "10.0.0.0/24")
	defer s.Close()
	alloc(t, s, "dup")
	err := s.Update(func(tx *Tx) error {
		_, err := tx.Allocate(Allocation{Attachment: Attachment{ContainerID: "dup", IfName: "eth0"}})
		return err
	})
	if !errors.Is(err, ErrAttachmentExists) {
		t.Fatalf("got %v, want ErrAttachmentExists", err)
	}
	// Another interface of the same container is a different attachment.
	if err := s.Update(func(tx *Tx) error {
		_, err := tx.Allocate(Allocation{Attachment: Attachment{ContainerID: "dup", IfName: "net1"}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestPersistsAcrossOpens(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "10.0.0.0/24")
	ip := alloc(t, s, "a")
	s.Close()

	s = open(t, dir, "10.0.0.0/24")
	defer s.Close()
	var rec Allocation
	var ok bool
	s.View(func(tx *Tx) (err error) {
		rec, ok, err = tx.Get(Attachment{ContainerID: "a", IfName: "eth0"})
		return err
	})
	if !ok || rec.IP != ip {
		t.Fatalf("after reopen: %+v %v, want ip %s", rec, ok, ip)
	}
	if next := alloc(t, s, "b"); next != ip.Next() {
		t.Fatalf("round robin lost across opens: %s after %s", next, ip)
	}
}

func TestSubnetChange(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "10.0.0.0/24")
	alloc(t, s, "a")
	s.Close()
	if _, err := Open(dir, mustPool(t, "10.0.1.0/24"), time.Second); !errors.Is(err, ErrSubnetChanged) {
		t.Fatalf("open with another subnet while allocated: %v", err)
	}
	s = open(t, dir, "10.0.0.0/24")
	release(t, s, "a")
	s.Close()
	s = open(t, dir, "10.0.1.0/24")
	defer s.Close()
	if ip := alloc(t, s, "b"); ip.String() != "10.0.1.2" {
		t.Fatalf("after re-bind got %s", ip)
	}
}

func TestLockTimeout(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "10.0.0.0/24")
	start := time.Now()
	_, err := Open(dir, mustPool(t, "10.0.0.0/24"), 100*time.Millisecond)
	if !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second open while held: %v", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Fatalf("gave up after %s", d)
	}
	s.Close()
	// The abandoned waiter must not keep the lock once it gets it.
	s2, err := Open(dir, mustPool(t, "10.0.0.0/24"), 2*time.Second)
	if err != nil {
		t.Fatalf("open after release: %v", err)
	}
	s2.Close()
}

// Separate opens exclude each other like separate processes do (flock is per
// open file description).
func TestConcurrentOpensGetDistinctAddresses(t *testing.T) {
	dir := t.TempDir()
	const n = 100
	ips := make([]netip.Addr, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(dir, mustPool(t, "10.0.0.0/24"), 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			errs <- s.Update(func(tx *Tx) (err error) {
				ips[i], err = tx.Allocate(Allocation{Attachment: Attachment{ContainerID: fmt.Sprint("c", i), IfName: "eth0"}})
				return err
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Fatalf("address %s handed out twice", ip)
		}
		seen[ip] = true
	}
	s := open(t, dir, "10.0.0.0/24")
	defer s.Close()
	s.View(func(tx *Tx) error {
		if tx.Used() != n || tx.Free() != 253-n {
			t.Errorf("used %d free %d", tx.Used(), tx.Free())
		}
		return nil
	})
}

// BenchmarkAllocateRelease is one ADD's and one DEL's bookkeeping as the
// plugin does it: lock, open, one transaction, close.
//
//	go test -run '^$' -bench AllocateRelease ./cni/ipam
func BenchmarkAllocateRelease(b *testing.B) {
	dir := b.TempDir()
	pool, _ := NewPool(netip.MustParsePrefix("10.0.0.0/24"))
	att := Attachment{ContainerID: "bench", IfName: "eth0"}
	for b.Loop() {
		for _, op := range []func(*Tx) error{
			func(tx *Tx) error { _, err := tx.Allocate(Allocation{Attachment: att}); return err },
			func(tx *Tx) error { _, _, err := tx.Release(att); return err },
		} {
			s, err := Open(dir, pool, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Update(op); err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	}
}
