package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// TestListYAMLStreamedMatchesWholeDocument: a list streamed as YAML item by
// item is byte for byte the YAML of the whole JSON list, empty or not.
func TestListYAMLStreamedMatchesWholeDocument(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, ms)
	streamTestPods(t, ts, ms, 300)
	for _, path := range []string{"/api/v1/namespaces/default/pods", "/api/v1/namespaces/kube-public/pods", "/api/v1/namespaces/default/pods?limit=7"} {
		code, js, _ := ts.do(t, http.MethodGet, path, "", "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d", path, code)
		}
		want, err := yaml.JSONToYAML(bytes.TrimSuffix(js, []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		code, y, hdr := ts.do(t, http.MethodGet, path, "", "", "Accept", "application/yaml")
		if code != http.StatusOK || hdr.Get("Content-Type") != "application/yaml" {
			t.Fatalf("%s yaml: %d %s", path, code, hdr.Get("Content-Type"))
		}
		if !bytes.Equal(y, want) {
			i := 0
			for i < len(y) && i < len(want) && y[i] == want[i] {
				i++
			}
			t.Fatalf("%s: streamed YAML differs at byte %d of %d/%d:\n got %.120q\nwant %.120q", path, i, len(y), len(want), y[max(0, i-40):], want[max(0, i-40):])
		}
	}
}

// bigConfigMaps stores n configmaps of size bytes each through the API,
// with 8 clients at once.
func bigConfigMaps(t *testing.T, ts *testServer, n, size int) {
	bigConfigMapsNS(t, ts, "default", n, size)
}

// bigConfigMapsNS is bigConfigMaps in namespace ns.
func bigConfigMapsNS(t *testing.T, ts *testServer, ns string, n, size int) {
	t.Helper()
	val := strings.Repeat("v", size)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%04d", i)}, Data: map[string]string{"v": val}}
				if _, err := ts.cs.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestListMemoryBounded: a whole list of large objects streams out of one
// store snapshot holding one object at a time (it held the whole list,
// then a copy of each item as it went out), and a page of a paged list
// stops at about 32 MiB of objects with a continue token.
func TestListMemoryBounded(t *testing.T) {
	ts := startServer(t, nil) // the real bbolt store: the objects live in its file
	const n, size = 64, 1000 << 10
	bigConfigMaps(t, ts, n, size)
	var got int64
	grew := heapGrowth(func() {
		req, _ := http.NewRequest(http.MethodGet, ts.base+"/api/v1/namespaces/default/configmaps", nil)
		resp, err := ts.http.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		got, err = io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("list: %d %v", resp.StatusCode, err)
		}
	})
	if got < n*size {
		t.Fatalf("list of %d bytes, want at least %d", got, n*size)
	}
	if grew > 24<<20 {
		t.Errorf("listing %d MB raised the heap by %d MB", n*size>>20, grew>>20)
	}

	l, err := ts.cs.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) == 0 || len(l.Items) >= n || l.Continue == "" {
		t.Fatalf("page of %d items, continue %q: want a page cut at 32 MiB", len(l.Items), l.Continue)
	}
	total := len(l.Items)
	for l.Continue != "" {
		if l, err = ts.cs.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{Limit: 500, Continue: l.Continue}); err != nil {
			t.Fatal(err)
		}
		total += len(l.Items)
	}
	if total != n {
		t.Fatalf("pages hold %d items, want %d", total, n)
	}
}

// TestCancelledRequestStopsItsWork: a collection delete whose client goes
// away stops deleting, rather than finishing the job for nobody.
func TestCancelledRequestStopsItsWork(t *testing.T) {
	ts := startServer(t, nil) // the real store: each delete is a durable write
	const n = 1500
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c-%04d", i)}}
				if _, err := ts.cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	count := func() int {
		l, err := ts.cs.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, ts.base+"/api/v1/namespaces/default/configmaps", nil)
	started := make(chan struct{})
	go func() {
		close(started)
		if resp, err := ts.http.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-started
	// Cancel once the deleting has begun.
	deadline := time.Now().Add(10 * time.Second)
	for count() == n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	time.Sleep(200 * time.Millisecond) // the server sees the cancel and stops
	left := count()
	time.Sleep(500 * time.Millisecond)
	if again := count(); left == 0 || again != left {
		t.Fatalf("after the client went away: %d left, then %d: the delete went on", left, again)
	}
	t.Logf("%d of %d deleted before the client went away", n-left, n)
}
