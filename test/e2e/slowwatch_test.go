package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// TestSlowWatcherDoesNotStallOthers opens a watch over HTTP/1.1 and never
// reads it, then writes more than the socket buffers hold (300 configmaps of
// 100 KiB). Writes must go on at their pace and a second, healthy watcher
// must see every event: one stuck client may cost itself its watch, never
// the cluster its writes.
func TestSlowWatcherDoesNotStallOthers(t *testing.T) {
	srv := startServer(t)
	cfg := restConfig(t, srv)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The stuck watcher: a raw TLS connection that sends one request and stops.
	hc, token, err := srv.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := hc.Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsCfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", srv.Addr, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nAccept: application/json\r\n\r\n", srv.Addr, token)

	l, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	seen := make(chan int, 1)
	go func() {
		n := 0
		for ev := range w.ResultChan() {
			if ev.Type == watch.Added {
				n++
			}
			if n == 300 {
				break
			}
		}
		seen <- n
	}()

	big := strings.Repeat("x", 100<<10)
	start := time.Now()
	var slowest time.Duration
	for i := 0; i < 300; i++ {
		t0 := time.Now()
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%03d", i)},
			Data:       map[string]string{"blob": big},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create big-%03d with a stuck watcher open: %v", i, err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("300 creates of 100 KiB with a stuck watcher: %v, slowest %v", time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond))
	if slowest > 5*time.Second {
		t.Errorf("a create took %v with a stuck watcher open: writes wait for the slowest watcher", slowest)
	}
	select {
	case n := <-seen:
		if n != 300 {
			t.Errorf("healthy watcher saw %d of 300 creates", n)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("healthy watcher did not see all 300 creates within 30s of the last write")
	}
}
