package apibench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/test/e2e/harness"
)

var etcdBin = flag.String("apibench.etcd", "/usr/bin/etcd", "etcd binary for the reference figures")

var (
	summary Summary
	// workDir holds the skep binary, data dirs and the reference stores; it
	// is on the same disk as everything else the run writes.
	workDir  string
	fixtures = map[string]any{}
	fixMu    sync.Mutex
	cleanups []func()
	buildErr error
	skepBin  string
	build    sync.Once
)

func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	workDir, err = os.MkdirTemp("", "skep-apibench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.RemoveAll(workDir)
	if api, ok := summary.Get("api creates/s, 16 clients"); ok {
		if etcd, ok := summary.Get("etcd 3.4 puts/s, 16 clients (ref)"); ok && etcd > 0 {
			summary.Set("ratio: api 16 clients / etcd 16 clients", api/etcd, "x", "towards 1")
		}
		if bb, ok := summary.Get("bbolt Update/s, 16 writers (ref)"); ok && bb > 0 {
			summary.Set("ratio: api 16 clients / bbolt Update 16", api/bb, "x", "")
		}
	}
	summary.Print(os.Stdout)
	os.Exit(code)
}

// fixture returns the value made once by mk under name, for all benchmarks of
// the run (go test calls each benchmark function several times).
func fixture[T any](b *testing.B, name string, mk func() (T, func(), error)) T {
	b.Helper()
	fixMu.Lock()
	defer fixMu.Unlock()
	if v, ok := fixtures[name]; ok {
		return v.(T)
	}
	v, cleanup, err := mk()
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	fixtures[name] = v
	if cleanup != nil {
		cleanups = append(cleanups, cleanup)
	}
	return v
}

// server starts (once per name) a fresh skep server with its own data dir.
func server(b *testing.B, name string) *harness.Server {
	b.Helper()
	build.Do(func() { skepBin, buildErr = harness.BuildSkep(workDir) })
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return fixture(b, "server-"+name, func() (*harness.Server, func(), error) {
		addr, err := harness.FreeAddr()
		if err != nil {
			return nil, nil, err
		}
		s := harness.NewServer(skepBin, filepath.Join(workDir, name), addr)
		if err := s.Start(); err != nil {
			return nil, nil, err
		}
		if _, err := s.WaitReady(30 * time.Second); err != nil {
			_ = s.Kill()
			return nil, nil, err
		}
		return s, func() {
			if err := s.Stop(15 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "apibench: stop server %s: %v\n", name, err)
			}
		}, nil
	})
}

// clients returns n clientsets, each on its own connection, as n processes.
func clients(b *testing.B, s *harness.Server, n int) []*kubernetes.Clientset {
	b.Helper()
	cfg, err := s.RESTConfig()
	if err != nil {
		b.Fatal(err)
	}
	out := make([]*kubernetes.Clientset, n)
	for i := range out {
		if out[i], err = kubernetes.NewForConfig(harness.OwnConnection(cfg)); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// payload is the stored size of a benchmark configmap, used for the
// references so all three stores write the same bytes per object.
func payload(name string) []byte {
	cm := harness.ConfigMap("bench", name)
	cm.TypeMeta = metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}
	cm.UID = "6d7e0b3c-4a57-4b6e-9a1e-3c0f5d2a9b11"
	cm.CreationTimestamp = metav1.Now()
	b, _ := json.Marshal(cm)
	return b
}

var seq atomic.Int64

// run drives ops operations (op(worker, i)) on workers goroutines and returns
// the wall time they took.
func run(b *testing.B, workers, ops int, op func(ctx context.Context, w, i int) error) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := harness.Parallel(ctx, ops, workers, op); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkCreate: configmap creates per second through the API with 1, 16
// and 64 concurrent clients (each its own connection). One op is one batch.
func BenchmarkCreate(b *testing.B) {
	for _, n := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := server(b, "create")
			css := clients(b, s, n)
			batch := 4000
			if n == 1 {
				batch = 400
			}
			var lat []time.Duration
			var latMu sync.Mutex
			m0, err := serverMetrics(s)
			if err != nil {
				b.Fatal(err)
			}
			cpu0, self0 := cpuOf(b, s.Pid()), testutil.CPUTime()
			b.ResetTimer()
			var total time.Duration
			for it := 0; it < b.N; it++ {
				total += run(b, n, batch, func(ctx context.Context, w, _ int) error {
					name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
					t0 := time.Now()
					_, err := css[w].CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", name), metav1.CreateOptions{})
					d := time.Since(t0)
					latMu.Lock()
					lat = append(lat, d)
					latMu.Unlock()
					return err
				})
			}
			rate := float64(b.N*batch) / total.Seconds()
			cpuPer := float64((cpuOf(b, s.Pid()) - cpu0).Microseconds()) / float64(b.N*batch)
			m1, err := serverMetrics(s)
			if err != nil {
				b.Fatal(err)
			}
			group, commitMs, ckpt := commitStats(m0, m1, total.Seconds())
			b.ReportMetric(group, "writes/commit")
			b.ReportMetric(commitMs, "commit-ms")
			b.ReportMetric(ckpt*100, "checkpoint-%")
			b.ReportMetric(rate, "creates/s")
			selfPer := float64((testutil.CPUTime() - self0).Microseconds()) / float64(b.N*batch)
			b.ReportMetric(cpuPer, "server-cpu-us/create")
			b.ReportMetric(selfPer, "client-cpu-us/create")
			b.ReportMetric(float64(Percentile(lat, 99).Microseconds())/1000, "p99-ms")
			suffix := "s"
			if n == 1 {
				suffix = ""
			}
			target := ""
			if n == 16 {
				target = ">= 5000"
			}
			summary.Set(fmt.Sprintf("api creates/s, %d client%s", n, suffix), rate, "/s", target)
			summary.Set(fmt.Sprintf("api server CPU us/create, %d client%s", n, suffix), cpuPer, "us", "")
			summary.Set(fmt.Sprintf("api client CPU us/create, %d client%s", n, suffix), selfPer, "us", "")
			summary.Set(fmt.Sprintf("api create p99 ms, %d client%s", n, suffix), float64(Percentile(lat, 99).Microseconds())/1000, "ms", "")
		})
	}
}

// BenchmarkRefBboltUpdate: the reference floor — bbolt with one db.Update
// (one fsync) per write, 16 writers, same payload size.
func BenchmarkRefBboltUpdate(b *testing.B) {
	db := fixture(b, "bbolt", func() (*bolt.DB, func(), error) {
		path := filepath.Join(workDir, "ref.bbolt")
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			return nil, nil, err
		}
		err = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("configmaps")); return err })
		return db, func() { db.Close(); os.Remove(path) }, err
	})
	const writers, batch = 16, 2000
	b.ResetTimer()
	var total time.Duration
	for it := 0; it < b.N; it++ {
		total += run(b, writers, batch, func(_ context.Context, _, _ int) error {
			name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
			v := payload(name)
			return db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("configmaps")).Put([]byte("default/"+name), v)
			})
		})
	}
	rate := float64(b.N*batch) / total.Seconds()
	b.ReportMetric(rate, "writes/s")
	summary.Set("bbolt Update/s, 16 writers (ref)", rate, "/s", "")
}

// BenchmarkRefEtcdPut: Debian's etcd 3.4 on loopback, 16 clients (each its
// own gRPC connection, go.etcd.io/etcd/client/v3) doing puts of the same
// payload under registry-style keys. fsync is on (etcd's default).
func BenchmarkRefEtcdPut(b *testing.B) {
	const n, batch = 16, 4000
	e, cs := etcdClients(b, n)
	cpu0, self0 := cpuOf(b, e.Pid()), testutil.CPUTime()
	b.ResetTimer()
	var total time.Duration
	for it := 0; it < b.N; it++ {
		total += run(b, n, batch, func(ctx context.Context, w, _ int) error {
			name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
			_, err := cs[w].Put(ctx, "/registry/configmaps/default/"+name, string(payload(name)))
			return err
		})
	}
	rate := float64(b.N*batch) / total.Seconds()
	cpuPer := float64((cpuOf(b, e.Pid()) - cpu0).Microseconds()) / float64(b.N*batch)
	b.ReportMetric(rate, "puts/s")
	b.ReportMetric(cpuPer, "etcd-cpu-us/put")
	b.ReportMetric(float64((testutil.CPUTime()-self0).Microseconds())/float64(b.N*batch), "client-cpu-us/put")
	summary.Set("etcd 3.4 puts/s, 16 clients (ref)", rate, "/s", "")
	summary.Set("etcd 3.4 CPU us/put, 16 clients (ref)", cpuPer, "us", "")
}

// BenchmarkWatchLatency: 100 watchers (each its own connection) on one
// namespace; one writer creates configmaps stamped with the time the write
// started; each watcher records receipt time minus that stamp. Every watcher
// must receive every event.
func BenchmarkWatchLatency(b *testing.B) {
	const watchers, batch = 100, 200
	s := server(b, "watch")
	css := clients(b, s, watchers+1)
	writer := css[watchers]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := fmt.Sprintf("watch-%d", seq.Add(1))
	if _, err := writer.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	l, err := writer.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		received atomic.Int64
		bad      atomic.Value
	)
	for i := 0; i < watchers; i++ {
		w, err := css[i].CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
		if err != nil {
			b.Fatalf("watch %d: %v", i, err)
		}
		go func() {
			defer w.Stop()
			local := make([]time.Duration, 0, 1024)
			defer func() { mu.Lock(); lat = append(lat, local...); mu.Unlock() }()
			for ev := range w.ResultChan() {
				now := time.Now()
				if ev.Type != watch.Added {
					if ev.Type == watch.Error && ctx.Err() == nil {
						bad.Store(fmt.Sprintf("watch error event: %v", ev.Object))
					}
					continue
				}
				cm := ev.Object.(*corev1.ConfigMap)
				ns, err := strconv.ParseInt(cm.Annotations["apibench/start"], 10, 64)
				if err != nil {
					bad.Store("event without a start stamp")
					continue
				}
				local = append(local, now.Sub(time.Unix(0, ns)))
				received.Add(1)
			}
		}()
	}
	cpu0, self0 := cpuOf(b, s.Pid()), testutil.CPUTime()
	b.ResetTimer()
	start := time.Now()
	for it := 0; it < b.N; it++ {
		for i := 0; i < batch; i++ {
			cm := harness.ConfigMap(ns, "w-"+strconv.FormatInt(seq.Add(1), 36))
			cm.Annotations = map[string]string{"apibench/start": strconv.FormatInt(time.Now().UnixNano(), 10)}
			if _, err := writer.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		want := int64((it + 1) * batch * watchers)
		deadline := time.Now().Add(30 * time.Second)
		for received.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("watchers received %d of %d events within 30s", received.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	serverPer := float64((cpuOf(b, s.Pid()) - cpu0).Microseconds()) / float64(b.N*batch)
	clientPer := float64((testutil.CPUTime() - self0).Microseconds()) / float64(b.N*batch)
	cancel()
	// Wait for the watcher goroutines to hand over their samples.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= b.N*batch*watchers || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v := bad.Load(); v != nil {
		b.Fatal(v)
	}
	mu.Lock()
	p50, p99 := Percentile(lat, 50), Percentile(lat, 99)
	mu.Unlock()
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(received.Load())/elapsed.Seconds(), "events/s")
	b.ReportMetric(serverPer, "server-cpu-us/create")
	b.ReportMetric(clientPer, "client-cpu-us/create")
	summary.Set("watch: server CPU us per create, 100 watchers", serverPer, "us", "")
	summary.Set("watch: client CPU us per create (100 decodes)", clientPer, "us", "")
	summary.Set("watch p50 ms, 100 watchers", float64(p50.Microseconds())/1000, "ms", "")
	summary.Set("watch p99 ms, 100 watchers", float64(p99.Microseconds())/1000, "ms", "< 50")
}

// pods10k is a server holding 10,000 pods, filled through the API.
func pods10k(b *testing.B) *harness.Server {
	s := server(b, "pods10k")
	fixture(b, "pods10k-filled", func() (bool, func(), error) {
		css := clients(b, s, 32)
		start := time.Now()
		run(b, len(css), 10000, func(ctx context.Context, w, i int) error {
			_, err := css[w].CoreV1().Pods("default").Create(ctx, harness.Pod("default", fmt.Sprintf("pod-%05d", i)), metav1.CreateOptions{})
			return err
		})
		fmt.Fprintf(os.Stderr, "apibench: filled 10,000 pods in %v\n", time.Since(start).Round(time.Millisecond))
		return true, nil, nil
	})
	return s
}

// BenchmarkRSS10kPods: the server's resident memory holding 10,000 pods,
// before any full list (VmRSS from /proc/<pid>/status).
func BenchmarkRSS10kPods(b *testing.B) {
	s := pods10k(b)
	var rss int64
	for it := 0; it < b.N; it++ {
		var err error
		if rss, err = s.RSSBytes(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rss)/(1<<20), "RSS-MB")
	summary.Set("server RSS MB, 10k pods", float64(rss)/(1<<20), "MB", "< 150")
}

// BenchmarkList10kPods: one full list of the 10,000 pods. "raw" is the HTTP
// GET of the JSON (the server's work and the transfer); "client-go" adds the
// typed decoding an informer pays.
func BenchmarkList10kPods(b *testing.B) {
	s := pods10k(b)
	for _, proto := range []string{"h2", "http1.1"} {
		b.Run("raw-"+proto, func(b *testing.B) { listRaw(b, s, proto) })
	}
	b.Run("client-go", func(b *testing.B) {
		cs := clients(b, s, 1)[0]
		var lat []time.Duration
		b.ResetTimer()
		for it := 0; it < b.N; it++ {
			t0 := time.Now()
			l, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
			lat = append(lat, time.Since(t0))
			if err != nil || len(l.Items) != 10000 {
				b.Fatalf("list: %v", err)
			}
		}
		b.ReportMetric(float64(Percentile(lat, 50).Microseconds())/1000, "p50-ms")
		summary.Set("list 10k pods ms (client-go, p50)", float64(Percentile(lat, 50).Microseconds())/1000, "ms", "")
		rss, err := s.RSSBytes()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rss)/(1<<20), "RSS-after-lists-MB")
		summary.Set("server RSS MB, 10k pods, after lists", float64(rss)/(1<<20), "MB", "< 150")
	})
}

// etcdClients returns the run's reference etcd (started once) and n
// clients of it, each its own gRPC connection, closed when b ends.
func etcdClients(b *testing.B, n int) (*Etcd, []*clientv3.Client) {
	b.Helper()
	bin := testutil.RequireBinary(b, *etcdBin)
	e := fixture(b, "etcd", func() (*Etcd, func(), error) {
		e, err := StartEtcd(bin, workDir)
		if err != nil {
			return nil, nil, err
		}
		return e, e.Stop, nil
	})
	cs := make([]*clientv3.Client, n)
	for i := range cs {
		c, err := e.Client()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return e, cs
}

// listRaw times a plain HTTPS GET of the 10,000 pods as JSON over HTTP/2 or
// HTTP/1.1, with the server's CPU per list.
func listRaw(b *testing.B, s *harness.Server, proto string) {
	c, token, err := s.HTTPClient()
	if err != nil {
		b.Fatal(err)
	}
	c.Timeout = time.Minute
	if proto == "http1.1" {
		tr := c.Transport.(*http.Transport)
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	var lat []time.Duration
	var size int
	cpu0 := cpuOf(b, s.Pid())
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		t0 := time.Now()
		code, body, err := harness.Do(context.Background(), c, token, http.MethodGet, "https://"+s.Addr+"/api/v1/namespaces/default/pods", "", nil)
		lat = append(lat, time.Since(t0))
		if err != nil || code != http.StatusOK {
			b.Fatalf("list: %d %v", code, err)
		}
		size = len(body)
	}
	b.StopTimer()
	cpuPer := float64((cpuOf(b, s.Pid()) - cpu0).Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(cpuPer, "server-cpu-ms/list")
	summary.Set("list 10k pods, server CPU ms per list ("+proto+")", cpuPer, "ms", "")
	var l corev1.PodList
	if err := json.Unmarshal(mustList(b, c, token, s), &l); err != nil || len(l.Items) != 10000 {
		b.Fatalf("list has %d pods (%v), want 10000", len(l.Items), err)
	}
	b.ReportMetric(float64(Percentile(lat, 50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(size)/(1<<20), "body-MB")
	summary.Set("list 10k pods ms (raw "+proto+", p50)", float64(Percentile(lat, 50).Microseconds())/1000, "ms", "")
}

// cpuOf is a process's CPU time so far.
func cpuOf(b *testing.B, pid int) time.Duration {
	b.Helper()
	d, err := harness.ProcCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func mustList(b *testing.B, c *http.Client, token string, s *harness.Server) []byte {
	code, body, err := harness.Do(context.Background(), c, token, http.MethodGet, "https://"+s.Addr+"/api/v1/namespaces/default/pods", "", nil)
	if err != nil || code != http.StatusOK {
		b.Fatalf("list: %d %v", code, err)
	}
	return body
}

// BenchmarkRefEtcdCreateTxn: the same etcd, 16 clients, but each write is
// the transaction kube-apiserver sends for a create — put only if the key
// does not exist (mod revision 0) — for a like-for-like reference.
func BenchmarkRefEtcdCreateTxn(b *testing.B) {
	const n, batch = 16, 4000
	_, cs := etcdClients(b, n)
	b.ResetTimer()
	var total time.Duration
	for it := 0; it < b.N; it++ {
		total += run(b, n, batch, func(ctx context.Context, w, _ int) error {
			name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
			key := "/registry/configmaps/default/" + name
			resp, err := cs[w].Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, string(payload(name)))).
				Commit()
			if err == nil && !resp.Succeeded {
				err = fmt.Errorf("create %s: exists", key)
			}
			return err
		})
	}
	rate := float64(b.N*batch) / total.Seconds()
	b.ReportMetric(rate, "creates/s")
	summary.Set("etcd 3.4 create txns/s, 16 clients (ref)", rate, "/s", "")
}
