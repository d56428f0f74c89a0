package proxy

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/internal/testutil/apitest"
	"github.com/skep-dev/skep/proxy/datapath"
)

// BenchmarkEndpointSliceToDatapath times EndpointSlice changes through the
// control loop into the data path: "event" is from the informer handler
// seeing a change to the data path write returning (the target is 10 ms),
// "write" adds the fake API's watch delivery. One op is 200 changes, so
// even -benchtime 1x (make bench) gives percentiles. Run it with
//
//	go test -run '^$' -bench EndpointSliceToDatapath -benchtime 1x ./proxy
//
// The bpf variants write the real pinned maps (root needed); "apiserver"
// writes through skep's own API server (in process, over HTTPS), the rest
// through client-go's fake clientset.
func BenchmarkEndpointSliceToDatapath(b *testing.B) {
	b.Run("fake", func(b *testing.B) { benchSliceChange(b, fake.NewClientset(), newFakeDatapath()) })
	b.Run("bpf", func(b *testing.B) { benchSliceChange(b, fake.NewClientset(), loadLB(b)) })
	b.Run("apiserver+bpf", func(b *testing.B) { benchSliceChange(b, benchAPIServer(b), loadLB(b)) })
}

// benchAPIServer runs skep's API server in process until the benchmark
// ends and returns an admin client of it.
func benchAPIServer(b *testing.B) kubernetes.Interface {
	_, cfg := apitest.Start(b)
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func benchSliceChange(b *testing.B, c kubernetes.Interface, dp datapath.Datapath) {
	type applied struct{ event, at time.Time }
	done := make(chan applied, 16)
	var eps []ep
	for i := range 10 {
		eps = append(eps, ep{fmt.Sprintf("10.244.1.%d", i+1), "node-b", "ready"})
	}
	create(b, c, webService())
	s, err := c.DiscoveryV1().EndpointSlices("default").Create(context.Background(),
		slice("default", "web", "web-1", httpPort, eps...), metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{
		Client: c, Datapath: dp, Node: node("127.0.0.1"),
		Logger: testutil.QuietLogger(),
		OnApplied: func(key string, event, at time.Time) {
			if key == "default/web" {
				done <- applied{event, at}
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = p.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-stopped })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.Fatal("initial sync did not land")
	}

	var fromEvent, fromWrite []time.Duration
	b.ResetTimer()
	const changesPerOp = 200
	for i := range b.N * changesPerOp {
		// Flip one endpoint between ready and terminating: every change
		// alters the desired state, so every one is written.
		e := &s.Endpoints[i%len(s.Endpoints)]
		ready := !*e.Conditions.Ready
		e.Conditions.Ready, e.Conditions.Serving, e.Conditions.Terminating = &ready, &ready, ptrBool(!ready)
		wrote := time.Now()
		// The returned slice carries the resourceVersion the next update needs.
		got, err := c.DiscoveryV1().EndpointSlices("default").Update(context.Background(), s, metav1.UpdateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s = got
		select {
		case a := <-done:
			fromEvent = append(fromEvent, a.at.Sub(a.event))
			fromWrite = append(fromWrite, a.at.Sub(wrote))
		case <-time.After(10 * time.Second):
			b.Fatal("change did not land")
		}
	}
	b.StopTimer()
	report(b, "event", fromEvent)
	report(b, "write", fromWrite)
}

func ptrBool(v bool) *bool { return &v }

// report adds p50/p99/max of ds in microseconds to the benchmark's output.
func report(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(f float64) float64 { return float64(ds[int(f*float64(len(ds)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.5), what+"-p50-µs")
	b.ReportMetric(q(0.99), what+"-p99-µs")
	b.ReportMetric(q(1), what+"-max-µs")
}

// BenchmarkInitialSync times a proxy's start over 10,000 services with 10
// endpoints each: from Run to every frontend applied (caches synced, the
// desired state computed, the data path programmed). Target: under 1 s.
//
//	go test -run '^$' -bench InitialSync -benchtime 1x ./proxy
func BenchmarkInitialSync(b *testing.B) {
	const services, endpoints = 10000, 10
	objs := make([]runtime.Object, 0, 2*services)
	for i := range services {
		name := fmt.Sprintf("svc-%d", i)
		ip := fmt.Sprintf("10.96.%d.%d", 1+i/250, 1+i%250)
		objs = append(objs, clusterIPService("default", name, ip, svcPort("http", "TCP", 80, 0)))
		var eps []ep
		for j := range endpoints {
			eps = append(eps, ep{fmt.Sprintf("10.244.%d.%d", i%250, 1+(i/250)*endpoints+j), "node-b", "ready"})
		}
		objs = append(objs, slice("default", name, name+"-1", httpPort, eps...))
	}
	run := func(b *testing.B, newDP func(b *testing.B) datapath.Datapath) {
		for range b.N {
			b.StopTimer()
			c := fake.NewClientset(objs...)
			dp := newDP(b)
			p, err := New(Config{Client: c, Datapath: dp, Node: node("127.0.0.1"), Logger: testutil.QuietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			b.StartTimer()
			start, cpu0 := time.Now(), testutil.CPUTime()
			go func() { defer close(stopped); _ = p.Run(ctx) }()
			for p.applier.count() < services {
				time.Sleep(time.Millisecond)
			}
			// Wall time suffers from the machine's other load; CPU time
			// (this process, all threads) much less so.
			b.ReportMetric(time.Since(start).Seconds(), "s-to-program")
			b.ReportMetric((testutil.CPUTime() - cpu0).Seconds(), "cpu-s")
			b.StopTimer()
			cancel()
			<-stopped
		}
	}
	b.Run("fake", func(b *testing.B) {
		run(b, func(*testing.B) datapath.Datapath { return newFakeDatapath() })
	})
	b.Run("bpf", func(b *testing.B) {
		testutil.RequireRoot(b)
		run(b, func(b *testing.B) datapath.Datapath { return loadLB(b) })
	})
}
