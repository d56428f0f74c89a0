package e2e

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// TestAcknowledgedWritesSurviveSIGKILL runs a writer loop (8 clients creating
// configmaps, each recording what the server acknowledged) and SIGKILLs the
// server in the middle of it. After a restart on the same data dir every
// acknowledged object must be there with the data it was written with.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	srv := startServer(t)
	cfg := restConfig(t, srv)

	const writers = 8
	const maxWrites = 20000 // bound, in case the kill never lands
	var (
		mu       sync.Mutex
		acked    []string
		seq      atomic.Int64
		killed   atomic.Bool
		failures []error // errors before the kill: those are defects
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w := 0; w < writers; w++ {
		cs := clientset(t, harness.OwnConnection(cfg))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := seq.Add(1)
				if i > maxWrites {
					return
				}
				name := fmt.Sprintf("dur-%06d", i)
				_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", name), metav1.CreateOptions{})
				if err != nil {
					if !killed.Load() {
						mu.Lock()
						failures = append(failures, fmt.Errorf("create %s before the kill: %w", name, err))
						mu.Unlock()
					}
					return
				}
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		}()
	}

	// Let the loop run until a few hundred writes are acknowledged.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n, f := len(acked), len(failures)
		mu.Unlock()
		if n >= 500 || f > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	killed.Store(true)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	mu.Lock()
	ackedAtKill := append([]string(nil), acked...)
	mu.Unlock()
	for _, err := range failures {
		t.Error(err)
	}
	if len(ackedAtKill) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}

	restart(t, srv)
	cs := clientset(t, cfg)
	present := map[string]bool{}
	list, err := cs.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list after restart: %v", err)
	}
	for _, cm := range list.Items {
		present[cm.Name] = true
	}
	var lost []string
	for _, n := range ackedAtKill {
		if !present[n] {
			lost = append(lost, n)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged writes are gone after SIGKILL and restart, e.g. %v", len(lost), len(ackedAtKill), lost[:min(5, len(lost))])
	}
	// The objects are whole, not just their keys.
	for _, n := range []string{ackedAtKill[0], ackedAtKill[len(ackedAtKill)-1]} {
		cm, err := cs.CoreV1().ConfigMaps("default").Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Errorf("get %s after restart: %v", n, err)
			continue
		}
		if want := harness.ConfigMap("default", n).Data; cm.Data["owner"] != n || cm.Data["config.yaml"] != want["config.yaml"] {
			t.Errorf("configmap %s after restart has data %v", n, cm.Data)
		}
	}
	t.Logf("acknowledged before SIGKILL: %d; present after restart: %d configmaps (the rest were in flight)", len(ackedAtKill), len(present))

	// And the restarted server takes writes again.
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), harness.ConfigMap("default", "after-restart"), metav1.CreateOptions{}); err != nil {
		t.Errorf("create after restart: %v", err)
	}
}

// TestRestartWith10kObjectsServesWithin1s fills the store with 10,000 pods
// through the API, SIGKILLs the server, and measures how long after the new
// process starts it answers /readyz and a GET of one of the pods. The target
// is 1 s; the test asserts a generous 3 s (the machine is shared) and logs the
// figure. It also lists everything back in pages (limit/continue).
func TestRestartWith10kObjectsServesWithin1s(t *testing.T) {
	const n = 10000
	srv := startServer(t)
	cfg := restConfig(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const workers = 32
	css := make([]*kubernetes.Clientset, workers)
	for i := range css {
		css[i] = clientset(t, harness.OwnConnection(cfg))
	}
	start := time.Now()
	err := harness.Parallel(ctx, n, workers, func(ctx context.Context, w, i int) error {
		_, err := css[w].CoreV1().Pods("default").Create(ctx, harness.Pod("default", fmt.Sprintf("pod-%05d", i)), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("create %d pods: %v", n, err)
	}
	fill := time.Since(start)
	t.Logf("created %d pods with %d clients in %v (%.0f creates/s)", n, workers, fill.Round(time.Millisecond), float64(n)/fill.Seconds())

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	ready, err := srv.WaitReady(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cs := clientset(t, cfg)
	var served time.Duration
	for {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "pod-09999", metav1.GetOptions{})
		if err == nil {
			served = time.Since(srv.StartedAt)
			break
		}
		if apierrors.IsNotFound(err) || time.Since(srv.StartedAt) > 30*time.Second {
			t.Fatalf("get pod-09999 after restart: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("restart with %d pods: /readyz 200 after %v, first GET served after %v (target 1s)", n, ready.Round(time.Millisecond), served.Round(time.Millisecond))
	if served > 3*time.Second {
		t.Errorf("restart with %d pods: first GET served %v after process start, want well under 3s (target 1s)", n, served)
	}

	// Page through everything: 10,000 pods, each once.
	seen := map[string]bool{}
	cont := ""
	pages := 0
	for {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			t.Fatalf("list page %d: %v", pages, err)
		}
		pages++
		if len(l.Items) > 500 {
			t.Fatalf("list page %d has %d items, limit 500", pages, len(l.Items))
		}
		for _, p := range l.Items {
			if seen[p.Name] {
				t.Fatalf("pod %s listed twice", p.Name)
			}
			seen[p.Name] = true
		}
		cont = l.Continue
		if cont == "" {
			break
		}
		if pages > n/500+2 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != n {
		t.Errorf("paged list after restart: %d pods in %d pages, want %d", len(seen), pages, n)
	}
}

// TestAcknowledgedUpdatesAndDeletesSurviveSIGKILL: the same crash, with
// updates and deletes in flight. Each of 4 updaters bumps a counter in its
// own configmap (optimistic concurrency on resourceVersion) and remembers the
// last acknowledged value; each of 2 deleters removes pre-made configmaps and
// remembers which were acknowledged. After SIGKILL and restart no counter is
// below its acknowledged value and no acknowledged delete is undone.
func TestAcknowledgedUpdatesAndDeletesSurviveSIGKILL(t *testing.T) {
	srv := startServer(t)
	cfg := restConfig(t, srv)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const updaters, deleters, victims = 4, 2, 2000
	for u := 0; u < updaters; u++ {
		cm := harness.ConfigMap("default", fmt.Sprintf("counter-%d", u))
		cm.Data["n"] = "0"
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	err := harness.Parallel(ctx, victims, 16, func(ctx context.Context, _, i int) error {
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", fmt.Sprintf("victim-%04d", i)), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("create victims: %v", err)
	}

	var (
		killed   atomic.Bool
		mu       sync.Mutex
		ackedN   = make([]int, updaters)
		deleted  []string
		failures []error
		ops      atomic.Int64
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		if !killed.Load() {
			mu.Lock()
			failures = append(failures, err)
			mu.Unlock()
		}
	}
	for u := 0; u < updaters; u++ {
		c := clientset(t, harness.OwnConnection(cfg))
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("counter-%d", u)
			for n := 1; ctx.Err() == nil && n < 100000; n++ {
				cm, err := c.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					fail(fmt.Errorf("get %s: %w", name, err))
					return
				}
				cm.Data["n"] = strconv.Itoa(n)
				if _, err := c.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
					fail(fmt.Errorf("update %s to %d: %w", name, n, err))
					return
				}
				mu.Lock()
				ackedN[u] = n
				mu.Unlock()
				ops.Add(1)
			}
		}()
	}
	for d := 0; d < deleters; d++ {
		c := clientset(t, harness.OwnConnection(cfg))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; ctx.Err() == nil && i < victims; i += deleters {
				name := fmt.Sprintf("victim-%04d", i)
				if err := c.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
					fail(fmt.Errorf("delete %s: %w", name, err))
					return
				}
				mu.Lock()
				deleted = append(deleted, name)
				mu.Unlock()
				ops.Add(1)
			}
		}()
	}
	for deadline := time.Now().Add(20 * time.Second); ops.Load() < 600 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	killed.Store(true)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	mu.Lock()
	wantN := append([]int(nil), ackedN...)
	gone := append([]string(nil), deleted...)
	mu.Unlock()

	restart(t, srv)
	for u, want := range wantN {
		cm, err := cs.CoreV1().ConfigMaps("default").Get(context.Background(), fmt.Sprintf("counter-%d", u), metav1.GetOptions{})
		if err != nil {
			t.Errorf("counter-%d after restart: %v", u, err)
			continue
		}
		got, _ := strconv.Atoi(cm.Data["n"])
		if got < want {
			t.Errorf("counter-%d after restart is %d, but update to %d was acknowledged", u, got, want)
		}
	}
	var undone []string
	for _, name := range gone {
		_, err := cs.CoreV1().ConfigMaps("default").Get(context.Background(), name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			undone = append(undone, name)
		}
	}
	if len(undone) > 0 {
		t.Errorf("%d of %d acknowledged deletes are undone after restart, e.g. %v", len(undone), len(gone), undone[:min(5, len(undone))])
	}
	t.Logf("acknowledged before SIGKILL: counters %v, %d deletes", wantN, len(gone))
}
