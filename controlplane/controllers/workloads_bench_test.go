package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/internal/testutil"
)

// podClock records, per pod of one namespace, when an informer first saw
// it and first saw it bound.
type podClock struct {
	mu      sync.Mutex
	created map[string]time.Time
	bound   map[string]time.Time
	want    int
	done    chan struct{}
}

func watchPodTimes(b *testing.B, cs kubernetes.Interface, ns string, want int) (*podClock, func()) {
	pc := &podClock{created: map[string]time.Time{}, bound: map[string]time.Time{}, want: want, done: make(chan struct{})}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	seen := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if _, ok := pc.created[p.Name]; !ok {
			pc.created[p.Name] = now
		}
		if _, ok := pc.bound[p.Name]; !ok && p.Spec.NodeName != "" {
			pc.bound[p.Name] = now
			if len(pc.bound) == pc.want {
				close(pc.done)
			}
		}
	}
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: seen, UpdateFunc: func(_, o any) { seen(o) }}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return pc, func() { cancel(); factory.Shutdown() }
}

// stats returns the time until the last pod was created and bound, and
// the p50 and p99 of the pods' bind times, all since start.
func (pc *podClock) stats(start time.Time) (created, bound, p50, p99 time.Duration) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var ds []time.Duration
	for _, t := range pc.created {
		created = max(created, t.Sub(start))
	}
	for _, t := range pc.bound {
		ds = append(ds, t.Sub(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return created, ds[len(ds)-1], ds[len(ds)/2], ds[len(ds)*99/100]
}

// BenchmarkDeploymentScaleUp scales a Deployment from 0 to 1,000 replicas
// against an in-process server with 100 fake nodes and a binder standing
// in for the scheduler (no node agents), and measures until every pod is
// created and bound: in all and per pod (p50/p99 since the scale
// request). The ceiling, measured in the same run against the same
// server and binder, is 1,000 pod creates straight through the API by 64
// concurrent clients, no controller involved; the ratios say what the
// controllers add.
//
//	go test -run '^$' -bench DeploymentScaleUp -benchtime 3x ./controlplane/controllers
func BenchmarkDeploymentScaleUp(b *testing.B) {
	const replicas, nodes = 1000, 100
	w := startWorkloads(b, controllers.Options{}, fakeNodeOptions{NoAgent: true, Workers: 8})
	for i := range nodes {
		w.nodes.addNode(b, fmt.Sprintf("node-%03d", i), nil)
	}
	ctx := context.Background()
	var sums [2][4]time.Duration
	n := 0
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		// The controllers: a Deployment of 0 scaled to 1,000.
		ns := fmt.Sprintf("bench-%d", i)
		mustCreateNamespaceW(b, w, ns)
		if _, err := w.cs.AppsV1().Deployments(ns).Create(ctx, webDeployment("scale", 0, "web:1"), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		testutil.Eventually(b, 30*time.Second, "replicaset of the deployment", func() error {
			l, err := w.cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
			if err != nil || len(l.Items) != 1 {
				return fmt.Errorf("%v, %d replicasets", err, len(l.Items))
			}
			return nil
		})
		pc, stop := watchPodTimes(b, w.cs, ns, replicas)
		b.StartTimer()
		start := time.Now()
		if _, err := w.cs.AppsV1().Deployments(ns).Patch(ctx, "scale", "application/merge-patch+json",
			[]byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)), metav1.PatchOptions{}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-pc.done:
		case <-time.After(120 * time.Second):
			b.Fatalf("%d of %d pods bound after 120s", len(pc.bound), replicas)
		}
		b.StopTimer()
		c, bd, p50, p99 := pc.stats(start)
		stop()

		// The ceiling: the same pods created directly.
		cns := fmt.Sprintf("ceiling-%d", i)
		mustCreateNamespaceW(b, w, cns)
		cpc, cstop := watchPodTimes(b, w.cs, cns, replicas)
		cstart := time.Now()
		work := make(chan int)
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range work {
					p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", j), Labels: map[string]string{"app": "ceiling"}},
						Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}}
					if _, err := w.cs.CoreV1().Pods(cns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for j := range replicas {
			work <- j
		}
		close(work)
		wg.Wait()
		select {
		case <-cpc.done:
		case <-time.After(120 * time.Second):
			b.Fatalf("ceiling: %d of %d pods bound after 120s", len(cpc.bound), replicas)
		}
		cc, cb, c50, c99 := cpc.stats(cstart)
		cstop()
		b.Logf("deployment 0→%d: all created %v, all bound %v, per pod p50 %v p99 %v", replicas, c.Round(time.Millisecond), bd.Round(time.Millisecond), p50.Round(time.Millisecond), p99.Round(time.Millisecond))
		b.Logf("ceiling (direct creates): all created %v, all bound %v, per pod p50 %v p99 %v", cc.Round(time.Millisecond), cb.Round(time.Millisecond), c50.Round(time.Millisecond), c99.Round(time.Millisecond))
		for k, d := range [4]time.Duration{c, bd, p50, p99} {
			sums[0][k] += d
		}
		for k, d := range [4]time.Duration{cc, cb, c50, c99} {
			sums[1][k] += d
		}
		n++
		b.StartTimer()
	}
	avg := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(n) }
	b.ReportMetric(avg(sums[0][0]), "created-ms")
	b.ReportMetric(float64(sums[0][0])/float64(sums[1][0]), "created-x-ceiling")
	b.ReportMetric(avg(sums[0][1]), "bound-ms")
	b.ReportMetric(avg(sums[0][2]), "p50-ms")
	b.ReportMetric(avg(sums[0][3]), "p99-ms")
	b.ReportMetric(avg(sums[1][1]), "ceiling-bound-ms")
	b.ReportMetric(float64(sums[0][1])/float64(sums[1][1]), "bound-x-ceiling")
	b.ReportMetric(float64(sums[0][2])/float64(sums[1][2]), "p50-x-ceiling")
	b.ReportMetric(float64(sums[0][3])/float64(sums[1][3]), "p99-x-ceiling")
}

func mustCreateNamespaceW(b testing.TB, w *workloadCluster, name string) {
	b.Helper()
	if _, err := w.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}
