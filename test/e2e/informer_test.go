package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/test/e2e/harness"
)

// countingTransport counts pod list requests (GET .../pods without watch),
// which is how we see that an informer relisted.
type countingTransport struct {
	next  http.RoundTripper
	lists *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/pods") && r.URL.Query().Get("watch") != "true" {
		c.lists.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestInformerAcrossRestart runs a shared informer factory's pod informer
// while the server restarts twice, with writes (a create and a delete) made
// while the informer was cut off. The informer's watch comes back with a
// resourceVersion the restarted server no longer has in its event log, so it
// must get 410 Gone (or a closed stream), relist, and converge: its store
// must equal the server's list, names and resourceVersions.
func TestInformerAcrossRestart(t *testing.T) {
	srv := startServer(t)
	cfg := restConfig(t, srv)
	writer := clientset(t, cfg)

	var lists atomic.Int64
	icfg := harness.OwnConnection(cfg)
	icfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, &lists} }
	ics := clientset(t, icfg)
	factory := informers.NewSharedInformerFactory(ics, 0)
	informer := factory.Core().V1().Pods().Informer()
	stop := make(chan struct{})
	defer func() { close(stop); factory.Shutdown() }()
	factory.Start(stop)
	syncCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), informer.HasSynced) {
		t.Fatal("pod informer did not sync within 20s")
	}

	ctx := context.Background()
	create := func(cs *kubernetes.Clientset, names ...string) {
		t.Helper()
		for _, n := range names {
			if _, err := cs.CoreV1().Pods("default").Create(ctx, harness.Pod("default", n), metav1.CreateOptions{}); err != nil {
				t.Fatalf("create pod %s: %v", n, err)
			}
		}
	}
	create(writer, "before-0", "before-1", "before-2")
	converge(t, informer, writer, "before the restart")
	listsBefore := lists.Load()

	// Restart 1: SIGTERM, then the same data dir on another port, where
	// another client deletes and creates pods the informer cannot see.
	if err := srv.Stop(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	otherAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	side := harness.NewServer(skepBin, srv.DataDir, otherAddr)
	side.LogPath = srv.LogPath
	if err := side.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := side.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	sideCS := clientset(t, restConfig(t, side))
	if err := sideCS.CoreV1().Pods("default").Delete(ctx, "before-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatalf("delete pod before-0 while the informer is cut off: %v", err)
	}
	create(sideCS, "offline-0", "offline-1")
	if err := side.Stop(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM of the side server: %v", err)
	}

	// Restart 2: back on the informer's address.
	restart(t, srv)
	create(writer, "after-0", "after-1", "after-2")
	converge(t, informer, writer, "after the restart")
	if _, ok, _ := informer.GetStore().GetByKey("default/before-0"); ok {
		t.Errorf("pod before-0, deleted while the informer was cut off, is still in its store")
	}
	if lists.Load() <= listsBefore {
		t.Errorf("the informer never relisted after the restart (pod lists before %d, after %d)", listsBefore, lists.Load())
	}
	t.Logf("pod lists: %d before the restart, %d in all", listsBefore, lists.Load())
}

// converge waits until the informer's store holds exactly the server's pods
// (by namespace/name and resourceVersion).
func converge(t *testing.T, informer cache.SharedIndexInformer, cs *kubernetes.Clientset, when string) {
	t.Helper()
	var want, got []string
	testutil.Eventually(t, 45*time.Second, "informer store to converge "+when, func() error {
		l, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list pods %s: %v", when, err)
		}
		want = want[:0]
		for _, p := range l.Items {
			want = append(want, fmt.Sprintf("%s/%s@%s", p.Namespace, p.Name, p.ResourceVersion))
		}
		got = got[:0]
		for _, o := range informer.GetStore().List() {
			p := o.(*corev1.Pod)
			got = append(got, fmt.Sprintf("%s/%s@%s", p.Namespace, p.Name, p.ResourceVersion))
		}
		sort.Strings(want)
		sort.Strings(got)
		if len(want) == 0 || strings.Join(want, ",") != strings.Join(got, ",") {
			return fmt.Errorf("\nserver:   %v\ninformer: %v", want, got)
		}
		return nil
	})
}
