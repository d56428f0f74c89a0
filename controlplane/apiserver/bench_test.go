package apiserver

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skep-dev/skep/internal/testutil"
)

// benchServer runs a server over the real bbolt store (fsync on).
func benchServer(b *testing.B) *testServer {
	srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0",
		Logger: testutil.QuietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	cs, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		b.Fatal(err)
	}
	return &testServer{Server: srv, cs: cs}
}

// BenchmarkCreatePods measures pod creates per second through the API
// (typed client-go over HTTPS/2, each client its own connection) with 1, 16
// and 64 concurrent clients.
// Run: go test -run '^$' -bench CreatePods -benchtime 2000x ./controlplane/apiserver
func BenchmarkCreatePods(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			ts := benchServer(b)
			// One clientset per client, like separate processes.
			css := make([]*kubernetes.Clientset, clients)
			for i := range css {
				// A Dial of its own gives each clientset its own
				// connection (client-go shares one between equal configs).
				cfg := ts.RESTConfig()
				d := &net.Dialer{}
				cfg.Dial = d.DialContext
				css[i] = kubernetes.NewForConfigOrDie(cfg)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func(cs *kubernetes.Clientset) {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						p := testPod(fmt.Sprintf("p-%d", i), map[string]string{"app": "bench"})
						if _, err := cs.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
							b.Error(err)
							return
						}
					}
				}(css[c])
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
		})
	}
}

// BenchmarkListPods measures listing 10,000 pods (one page, JSON).
// Run: go test -run '^$' -bench ListPods ./controlplane/apiserver
func BenchmarkListPods(b *testing.B) {
	ts := benchServer(b)
	ctx := context.Background()
	var wg sync.WaitGroup
	var next atomic.Int64
	for c := 0; c < 32; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > 10000 {
					return
				}
				p := testPod(fmt.Sprintf("p-%05d", i), map[string]string{"app": "bench"})
				p.Spec.NodeName = fmt.Sprintf("node-%d", i%10)
				if _, err := ts.cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := ts.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 10000 {
			b.Fatalf("list: %v %d", err, len(l.Items))
		}
	}
}

// BenchmarkWatchLatency measures create-to-delivery latency with 100
// watchers of the pods in a namespace.
// Run: go test -run '^$' -bench WatchLatency -benchtime 200x ./controlplane/apiserver
func BenchmarkWatchLatency(b *testing.B) {
	ts := benchServer(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const watchers = 100
	var mu sync.Mutex
	var lat []time.Duration
	created := sync.Map{}
	var ready sync.WaitGroup
	for w := 0; w < watchers; w++ {
		ready.Add(1)
		go func() {
			wi, err := ts.cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "0"})
			ready.Done()
			if err != nil {
				b.Error(err)
				return
			}
			for ev := range wi.ResultChan() {
				if p, ok := ev.Object.(*corev1.Pod); ok {
					if t0, ok := created.Load(p.Name); ok {
						d := time.Since(t0.(time.Time))
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}
			}
		}()
	}
	ready.Wait()
	time.Sleep(200 * time.Millisecond)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("w-%d", i)
		created.Store(name, time.Now())
		if _, err := ts.cs.CoreV1().Pods("default").Create(ctx, testPod(name, nil), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= b.N*watchers {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(lat) == 0 {
		b.Fatal("no events delivered")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func mustClientset(tb testing.TB, srv *Server) *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}
