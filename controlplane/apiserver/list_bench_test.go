package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/internal/testutil"
)

// BenchmarkListPodsMem lists 10,000 pods written straight into a memory
// store: the API server's list cost without the disk.
// Run: go test -run '^$' -bench ListPodsMem ./controlplane/apiserver
func BenchmarkListPodsMem(b *testing.B) {
	ms := newMemStore()
	srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", Store: ms})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	fill10kPods(b, srv, ms)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx)
	cs := mustClientset(b, srv)
	for _, sel := range []string{"", "i=3"} {
		b.Run("selector="+sel, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: sel})
				if err != nil || len(l.Items) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

// fill10kPods writes 10,000 defaulted pods (labels app=bench, i=0..9)
// straight into the memory store behind srv.
func fill10kPods(b *testing.B, srv *Server, ms *memStore) *registry.Resource {
	b.Helper()
	pres := srv.reg.Lookup(corev1.SchemeGroupVersion.WithResource("pods"))
	for i := 0; i < 10000; i++ {
		p := testPod(fmt.Sprintf("p-%05d", i), map[string]string{"app": "bench", "i": fmt.Sprint(i % 10)})
		p.Namespace = "default"
		pres.Strategy.Default(p)
		data, _ := encodeForStore(pres, p)
		if _, err := ms.Create(context.Background(), pres.Key("default", p.Name), data); err != nil {
			b.Fatal(err)
		}
	}
	return pres
}

// discardResponse is a ResponseWriter that counts and drops the body.
type discardResponse struct {
	h    http.Header
	code int
	n    int64
}

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) WriteHeader(code int)        { d.code = code }
func (d *discardResponse) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

// BenchmarkListHandler10kPods is the API server's own cost of one list of
// 10,000 pods (JSON, Table, metadata only): the handler writing into a
// ResponseWriter that drops the bytes, over a memory store, so B/op is
// what the list path allocates besides the store's result (the memory
// store copies no values). The server's RSS after big lists follows it.
// Run: go test -run '^$' -bench ListHandler10kPods -benchmem ./controlplane/apiserver
func BenchmarkListHandler10kPods(b *testing.B) {
	ms := newMemStore()
	srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", Store: ms, Logger: testutil.QuietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	pres := fill10kPods(b, srv, ms)
	for _, c := range []struct{ name, accept string }{
		{"json", "application/json"},
		{"table", "application/json;as=Table;v=v1;g=meta.k8s.io"},
		{"metadata", "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var size int64
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/default/pods", nil)
				r.Header.Set("Accept", c.accept)
				w := &discardResponse{h: http.Header{}}
				if err := srv.handleList(r.Context(), w, r, &requestInfo{res: pres, namespace: "default", verb: "list"}); err != nil || w.n < 10000 {
					b.Fatalf("list: %v, %d bytes", err, w.n)
				}
				size = w.n
			}
			b.ReportMetric(float64(size)/(1<<20), "body-MB")
		})
	}
}
