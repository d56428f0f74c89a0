package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// TestNoLostUpdates: 8 clients each add 1 to one counter 40 times with
// read-modify-write and retry on 409 Conflict, as controllers do. Optimistic
// concurrency must make the final value exactly 320.
func TestNoLostUpdates(t *testing.T) {
	srv := startServer(t)
	cfg := restConfig(t, srv)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "counter"}, Data: map[string]string{"n": "0"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const clients, adds = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := 0
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		c := clientset(t, harness.OwnConnection(cfg))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < adds; i++ {
				// Constant 1-2 ms between tries (a Cap would zero Steps).
				backoff := wait.Backoff{Duration: time.Millisecond, Factor: 1, Jitter: 1, Steps: 10000}
				err := retry.RetryOnConflict(backoff, func() error {
					cm, err := c.CoreV1().ConfigMaps("default").Get(ctx, "counter", metav1.GetOptions{})
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(cm.Data["n"])
					cm.Data["n"] = strconv.Itoa(n + 1)
					_, err = c.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
					if apierrors.IsConflict(err) {
						mu.Lock()
						conflicts++
						mu.Unlock()
					}
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "counter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["n"] != strconv.Itoa(clients*adds) {
		t.Errorf("counter is %s after %d acknowledged increments (%d conflicts retried): updates were lost", cm.Data["n"], clients*adds, conflicts)
	}
	t.Logf("%d increments from %d clients, %d conflicts retried", clients*adds, clients, conflicts)
	if conflicts == 0 {
		t.Errorf("no 409 Conflict among %d concurrent read-modify-writes: stale resourceVersions are not refused", clients*adds)
	}
}

// TestWatchSeesEveryWriteInOrder: 16 clients create and update configmaps
// while one watch, started before them, records what it sees. Every
// acknowledged write's resourceVersion must arrive, once, in increasing
// order, with the object as written.
func TestWatchSeesEveryWriteInOrder(t *testing.T) {
	srv := startServer(t)
	cfg := restConfig(t, srv)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	const writers, perWriter = 16, 60 // each: create, then updates
	var mu sync.Mutex
	acked := map[string]string{} // resourceVersion -> name/value written
	err = harness.Parallel(ctx, writers, writers, func(ctx context.Context, _, wi int) error {
		c := clientset(t, harness.OwnConnection(cfg))
		name := fmt.Sprintf("w-%02d", wi)
		cm, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": "0"}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		mu.Lock()
		acked[cm.ResourceVersion] = name + "=0"
		mu.Unlock()
		for i := 1; i < perWriter; i++ {
			cm.Data["v"] = strconv.Itoa(i)
			if cm, err = c.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
				return err
			}
			mu.Lock()
			acked[cm.ResourceVersion] = fmt.Sprintf("%s=%d", name, i)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("writers: %v", err)
	}

	seen := map[string]string{}
	var last int64
	deadline := time.After(30 * time.Second)
	for len(seen) < len(acked) {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(seen), len(acked))
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				t.Fatalf("unexpected event %s %v", ev.Type, ev.Object)
			}
			rv, err := strconv.ParseInt(cm.ResourceVersion, 10, 64)
			if err != nil {
				t.Fatalf("resourceVersion %q: %v", cm.ResourceVersion, err)
			}
			if !strings.HasPrefix(cm.Name, "w-") {
				// Another writer's (the CA ConfigMap every namespace gets):
				// still in order, not one of ours.
				if rv <= last {
					t.Errorf("event at resourceVersion %d after %d: out of order or repeated", rv, last)
				}
				last = rv
				continue
			}
			if rv <= last {
				t.Errorf("event at resourceVersion %d after %d: out of order or repeated", rv, last)
			}
			last = rv
			seen[cm.ResourceVersion] = cm.Name + "=" + cm.Data["v"]
		case <-deadline:
			t.Fatalf("watch delivered %d of %d acknowledged writes within 30s", len(seen), len(acked))
		}
	}
	for rv, want := range acked {
		if got := seen[rv]; got != want {
			t.Errorf("resourceVersion %s: watch saw %q, write acknowledged %q", rv, got, want)
		}
	}
}
