package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/proxy/datapath"
)

// startProxy runs a proxy over client and dp until the test ends.
func startProxy(t *testing.T, client *fake.Clientset, dp datapath.Datapath, mod func(*Config)) (*Proxy, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Client:     client,
		Datapath:   dp,
		Node:       node("127.0.0.1"),
		Registerer: reg,
		Logger:     testutil.QuietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy run: %v", err)
		}
	})
	testutil.Eventually(t, 10*time.Second, "proxy ready", func() error {
		if !p.ready.Load() {
			return errors.New("not ready")
		}
		return nil
	})
	return p, reg
}

func waitBackends(t *testing.T, dp *fakeDatapath, frontend, want string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, frontend+" backends", func() error {
		s, ok := dp.get(frontend)
		if !ok {
			return fmt.Errorf("not programmed; have %v", dp.frontends())
		}
		if got := backends(s.Backends); got != want {
			return fmt.Errorf("got %q want %q", got, want)
		}
		return nil
	})
}

func create(t testing.TB, c kubernetes.Interface, objs ...runtime.Object) {
	t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = c.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = c.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Node:
			_, err = c.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("create %T", o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func updateSlice(t *testing.T, c *fake.Clientset, s *discoveryv1.EndpointSlice) {
	t.Helper()
	if _, err := c.DiscoveryV1().EndpointSlices(s.Namespace).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestProxyFollowsEndpointSliceChanges(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	create(t, c, webService(), slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"}, ep{"10.244.1.2", "node-b", "ready"}))
	startProxy(t, c, dp, nil)
	const fe = "10.96.0.20:80/TCP/int"
	waitBackends(t, dp, fe, "10.244.1.1:8080/A 10.244.1.2:8080/A")

	// One endpoint starts terminating, a new one becomes ready.
	updateSlice(t, c, slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "serving terminating"}, ep{"10.244.1.2", "node-b", "ready"}, ep{"10.244.1.3", "node-b", "ready"}))
	waitBackends(t, dp, fe, "10.244.1.1:8080/T 10.244.1.2:8080/A 10.244.1.3:8080/A")

	// A second slice adds endpoints; the first loses its terminating one.
	create(t, c, slice("default", "web", "web-2", httpPort, ep{"10.244.2.1", "node-c", "ready"}))
	updateSlice(t, c, slice("default", "web", "web-1", httpPort, ep{"10.244.1.2", "node-b", "ready"}, ep{"10.244.1.3", "node-b", "ready"}))
	waitBackends(t, dp, fe, "10.244.1.2:8080/A 10.244.1.3:8080/A 10.244.2.1:8080/A")

	// Every endpoint vanishes: the frontend stays, refusing connections.
	for _, n := range []string{"web-1", "web-2"} {
		if err := c.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitBackends(t, dp, fe, "")

	// The service goes: so does its frontend.
	if err := c.CoreV1().Services("default").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "frontend deleted", func() error {
		if fs := dp.frontends(); len(fs) != 0 {
			return fmt.Errorf("frontends %v", fs)
		}
		return nil
	})
}

func TestProxyWritesOnlyTheDifference(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	svc := webService()
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = 30080
	other := clusterIPService("default", "other", "10.96.0.30", svcPort("http", corev1.ProtocolTCP, 80, 0))
	s := slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"})
	create(t, c, svc, other, s)
	// One worker: the queue is then processed in order (see the marker below).
	startProxy(t, c, dp, func(cfg *Config) { cfg.Workers = 1 })
	waitBackends(t, dp, "127.0.0.1:30080/TCP/ext", "10.244.1.1:8080/A")
	waitBackends(t, dp, "10.96.0.30:80/TCP/int", "")
	testutil.Eventually(t, 10*time.Second, "initial writes", func() error {
		if u, d := dp.writes(); u != 3 || d != 0 {
			return fmt.Errorf("%d upserts %d deletes", u, d)
		}
		return nil
	})

	// A change that does not alter the desired state writes nothing: an
	// endpoint that is neither ready nor terminating is not a backend.
	updateSlice(t, c, slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}, ep{"10.244.1.9", "node-b", ""}))
	// A change to the other service is then a marker: once it lands, the
	// no-op above has been processed too (one worker, FIFO queue).
	create(t, c, slice("default", "other", "other-1", httpPort, ep{"10.244.3.1", "node-b", "ready"}))
	waitBackends(t, dp, "10.96.0.30:80/TCP/int", "10.244.3.1:8080/A")
	if u, d := dp.writes(); u != 4 || d != 0 {
		t.Fatalf("%d upserts %d deletes, want 4 and 0", u, d)
	}

	// Removing the NodePort deletes only the external frontend.
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Ports[0].NodePort = 0
	if _, err := c.CoreV1().Services("default").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "nodeport deleted", func() error {
		if fs := dp.frontends(); !slices.Equal(fs, []string{"10.96.0.20:80/TCP/int", "10.96.0.30:80/TCP/int"}) {
			return fmt.Errorf("frontends %v", fs)
		}
		return nil
	})
	if u, d := dp.writes(); u != 4 || d != 1 {
		t.Fatalf("%d upserts %d deletes, want 4 and 1", u, d)
	}
}

func TestProxyRestartAdoptsProgrammedState(t *testing.T) {
	ip := netip.MustParseAddr
	fe := func(addr string, port uint16) datapath.Frontend {
		return datapath.Frontend{IP: ip(addr), Port: port, Proto: datapath.TCP, Scope: datapath.ScopeInternal}
	}
	be := func(addr string) datapath.Backend { return datapath.Backend{IP: ip(addr), Port: 8080} }
	// What a previous proxy left pinned: web is current (backends in another
	// order), stale was deleted while no proxy ran, api has old backends.
	dp := newFakeDatapath(
		datapath.Service{Frontend: fe("10.96.0.20", 80), Name: "default/web:http",
			Backends: []datapath.Backend{be("10.244.1.2"), be("10.244.1.1")}},
		datapath.Service{Frontend: fe("10.96.0.40", 80), Name: "default/stale:http",
			Backends: []datapath.Backend{be("10.244.4.1")}},
		datapath.Service{Frontend: fe("10.96.0.50", 80), Name: "default/api:http",
			Backends: []datapath.Backend{be("10.244.5.1")}},
	)
	c := fake.NewClientset()
	create(t, c, webService(),
		slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}, ep{"10.244.1.2", "node-b", "ready"}),
		clusterIPService("default", "api", "10.96.0.50", svcPort("http", corev1.ProtocolTCP, 80, 0)),
		slice("default", "api", "api-1", httpPort, ep{"10.244.5.2", "node-b", "ready"}))
	p, _ := startProxy(t, c, dp, nil)
	waitBackends(t, dp, "10.96.0.50:80/TCP/int", "10.244.5.2:8080/A")
	testutil.Eventually(t, 10*time.Second, "stale frontend deleted", func() error {
		if _, ok := dp.get("10.96.0.40:80/TCP/int"); ok {
			return errors.New("still programmed")
		}
		return nil
	})
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if len(dp.upserts) != 1 || dp.upserts[0].Frontend != fe("10.96.0.50", 80) {
		t.Fatalf("upserts %v, want only api's", dp.upserts)
	}
	if len(dp.deletes) != 1 || dp.deletes[0] != fe("10.96.0.40", 80) {
		t.Fatalf("deletes %v, want only stale's", dp.deletes)
	}
	if n := len(p.Applied()); n != 2 {
		t.Fatalf("applied state has %d frontends, want 2", n)
	}
}

func TestProxyRetriesFailedWrites(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	dp.failUpserts = 2
	create(t, c, webService(), slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}))
	_, reg := startProxy(t, c, dp, nil)
	waitBackends(t, dp, "10.96.0.20:80/TCP/int", "10.244.1.1:8080/A")
	if got := gather(t, reg, "skep_proxy_sync_errors_total"); got != 2 {
		t.Fatalf("sync errors %v, want 2", got)
	}
}

func TestProxyIgnoresOtherProxiesServices(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	theirs := clusterIPService("default", "theirs", "10.96.0.60", svcPort("http", corev1.ProtocolTCP, 80, 0))
	theirs.Labels = map[string]string{labelServiceProxyName: "other-proxy"}
	create(t, c, theirs, webService())
	startProxy(t, c, dp, nil)
	waitBackends(t, dp, "10.96.0.20:80/TCP/int", "")
	if _, ok := dp.get("10.96.0.60:80/TCP/int"); ok {
		t.Fatal("programmed a service labelled for another proxy")
	}
}

func TestProxyTakesNodeAddressesFromNodeObject(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "node-a"},
			{Type: corev1.NodeInternalIP, Address: "172.31.77.11"},
		}}}
	svc := webService()
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = 30080
	create(t, c, n, svc, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.31.77.12"}}}})
	startProxy(t, c, dp, func(cfg *Config) { cfg.Node = Node{Name: testNode} })
	waitBackends(t, dp, "172.31.77.11:30080/TCP/ext", "")

	n.Status.Addresses[1].Address = "172.31.77.21"
	if _, err := c.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "nodeport moved", func() error {
		if fs := dp.frontends(); !slices.Equal(fs, []string{"10.96.0.20:80/TCP/int", "172.31.77.21:30080/TCP/ext"}) {
			return fmt.Errorf("frontends %v", fs)
		}
		return nil
	})
}

// freePort returns a TCP port free on 127.0.0.1 right now.
func freePort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

type healthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func TestHealthCheckNodePort(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	hc := freePort(t)
	svc := webService()
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.Ports[0].NodePort = 30080
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = hc
	create(t, c, svc, slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}))
	startProxy(t, c, dp, nil)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", hc)

	check := func(wantCode, wantLocal int) func() error {
		return func() error {
			resp, err := http.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var b healthBody
			if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			ok := resp.StatusCode == wantCode && b.LocalEndpoints == wantLocal &&
				b.Service.Namespace == "default" && b.Service.Name == "web" && b.ServiceProxyHealthy &&
				resp.Header.Get("Content-Type") == "application/json"
			if !ok {
				return fmt.Errorf("status %d body %+v", resp.StatusCode, b)
			}
			return nil
		}
	}
	// Only a remote endpoint: this node must not get LB traffic.
	testutil.Eventually(t, 10*time.Second, "503 without local endpoints", check(http.StatusServiceUnavailable, 0))
	waitBackends(t, dp, "127.0.0.1:30080/TCP/ext", "")

	updateSlice(t, c, slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"}, ep{"10.244.0.5", testNode, "ready"}, ep{"10.244.0.6", testNode, "ready"}))
	testutil.Eventually(t, 10*time.Second, "200 with local endpoints", check(http.StatusOK, 2))
	waitBackends(t, dp, "127.0.0.1:30080/TCP/ext", "10.244.0.5:8080/A 10.244.0.6:8080/A")

	// Cluster policy: the port closes.
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	svc.Spec.HealthCheckNodePort = 0
	if _, err := c.CoreV1().Services("default").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "health check port closed", func() error {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return errors.New("still answering")
		}
		if !strings.Contains(err.Error(), "refused") {
			return err
		}
		return nil
	})
}

// gather returns the value of a counter or gauge without labels.
func gather(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestMetrics(t *testing.T) {
	c := fake.NewClientset()
	dp := countingDatapath{newFakeDatapath()}
	dp.counts = map[datapath.Frontend]datapath.Counts{
		{IP: netip.MustParseAddr("10.96.0.20"), Port: 80, Proto: datapath.TCP}: {Connections: 7, Refused: 2},
	}
	create(t, c, webService(), slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"}, ep{"10.244.1.2", "node-b", "terminating"}))
	_, reg := startProxy(t, c, dp, nil)
	waitBackends(t, dp.fakeDatapath, "10.96.0.20:80/TCP/int", "10.244.1.1:8080/A 10.244.1.2:8080/T")
	testutil.Eventually(t, 10*time.Second, "gauges", func() error {
		if f, b := gather(t, reg, "skep_proxy_frontends_programmed"), gather(t, reg, "skep_proxy_backends_programmed"); f != 1 || b != 2 {
			return fmt.Errorf("frontends %v backends %v", f, b)
		}
		return nil
	})
	if n := gather(t, reg, "skep_proxy_sync_latency_seconds"); n < 1 {
		t.Fatalf("sync latency histogram has %v samples", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "skep_proxy_service_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()] = fmt.Sprintf("%s %v", strings.Join(ls, ","), m.GetCounter().GetValue())
		}
	}
	want := map[string]string{
		"skep_proxy_service_connections_total": "frontend=10.96.0.20:80/TCP/int,service=default/web:http 7",
		"skep_proxy_service_refused_total":     "frontend=10.96.0.20:80/TCP/int,service=default/web:http 2",
		"skep_proxy_service_packets_total":     "frontend=10.96.0.20:80/TCP/int,service=default/web:http 0",
		"skep_proxy_service_bytes_total":       "frontend=10.96.0.20:80/TCP/int,service=default/web:http 0",
	}
	if !maps.Equal(got, want) {
		t.Fatalf("service counters:\n got %v\nwant %v", got, want)
	}
}

func TestProxyLeavesOutIPv6FrontendsByDefault(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	svc := webService()
	svc.Spec.ClusterIPs = []string{"10.96.0.20", "fd00:96::20"}
	create(t, c, svc)
	startProxy(t, c, dp, nil)
	waitBackends(t, dp, "10.96.0.20:80/TCP/int", "")
	if fs := dp.frontends(); len(fs) != 1 {
		t.Fatalf("frontends %v, want the IPv4 one only", fs)
	}
}

func TestInitialSyncIsOneBatch(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch-fails=%v", fail), func(t *testing.T) {
			c := fake.NewClientset()
			// web is adopted as it should be: not rewritten; api is new.
			web := datapath.Service{
				Frontend: datapath.Frontend{IP: netip.MustParseAddr("10.96.0.20"), Port: 80, Proto: datapath.TCP},
				Name:     "default/web:http",
				Backends: []datapath.Backend{{IP: netip.MustParseAddr("10.244.1.1"), Port: 8080}},
			}
			dp := &batchingDatapath{fakeDatapath: newFakeDatapath(web), failBatch: fail}
			create(t, c, webService(), slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}))
			for i := range 50 {
				name := fmt.Sprintf("api-%d", i)
				create(t, c, clusterIPService("default", name, fmt.Sprintf("10.96.1.%d", i+1), svcPort("http", corev1.ProtocolTCP, 80, 0)),
					slice("default", name, name+"-1", httpPort, ep{fmt.Sprintf("10.244.2.%d", i+1), "node-b", "ready"}))
			}
			p, _ := startProxy(t, c, dp, nil)
			testutil.Eventually(t, 10*time.Second, "all applied", func() error {
				if n := p.applier.count(); n != 51 {
					return fmt.Errorf("%d applied", n)
				}
				return nil
			})
			waitBackends(t, dp.fakeDatapath, "10.96.1.50:80/TCP/int", "10.244.2.50:8080/A")
			dp.mu.Lock()
			defer dp.mu.Unlock()
			if dp.batches != 1 {
				t.Fatalf("%d batches, want 1", dp.batches)
			}
			want := 0 // everything went in the batch
			if fail {
				want = 50 // one at a time, as without batching
			}
			if len(dp.upserts) != want || len(dp.deletes) != 0 {
				t.Fatalf("%d single upserts, %d deletes; want %d and 0", len(dp.upserts), len(dp.deletes), want)
			}
		})
	}
}

func TestRestartWithShortenedNameKeepsFrontend(t *testing.T) {
	// The data path gave back a shortened name ("default/we"), which names
	// no service: the frontend is still web's and must never be deleted.
	fe := datapath.Frontend{IP: netip.MustParseAddr("10.96.0.20"), Port: 80, Proto: datapath.TCP}
	dp := newFakeDatapath(datapath.Service{Frontend: fe, Name: "default/we",
		Backends: []datapath.Backend{{IP: netip.MustParseAddr("10.244.1.1"), Port: 8080}}})
	c := fake.NewClientset()
	create(t, c, webService(), slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}))
	var mu sync.Mutex
	synced := map[string]bool{}
	// One worker: the adopted key, queued first, is synced before web's.
	startProxy(t, c, dp, func(cfg *Config) {
		cfg.Workers = 1
		cfg.OnApplied = func(key string, _, _ time.Time) {
			mu.Lock()
			synced[key] = true
			mu.Unlock()
		}
	})
	testutil.Eventually(t, 10*time.Second, "both keys synced", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !synced["default/we"] || !synced["default/web"] {
			return fmt.Errorf("synced %v", synced)
		}
		return nil
	})
	if s, _ := dp.get(fe.String()); s.Name != "default/web:http" {
		t.Fatalf("name %q not rewritten", s.Name)
	}
	if _, d := dp.writes(); d != 0 {
		t.Fatalf("%d deletes of a frontend a live service serves", d)
	}
}

func TestResyncRepairsDrift(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	create(t, c, webService(), slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}),
		clusterIPService("default", "api", "10.96.0.50", svcPort("http", corev1.ProtocolTCP, 80, 0)))
	startProxy(t, c, dp, func(cfg *Config) { cfg.ResyncPeriod = 20 * time.Millisecond })
	waitBackends(t, dp, "10.96.0.20:80/TCP/int", "10.244.1.1:8080/A")
	waitBackends(t, dp, "10.96.0.50:80/TCP/int", "")

	// Behind the proxy's back: web loses its backend, api vanishes, a
	// stray frontend of a service that does not exist appears.
	stray := datapath.Frontend{IP: netip.MustParseAddr("10.96.0.99"), Port: 80, Proto: datapath.TCP}
	dp.mu.Lock()
	for f, s := range dp.services {
		switch f.IP.String() {
		case "10.96.0.20":
			s.Backends = nil
			dp.services[f] = s
		case "10.96.0.50":
			delete(dp.services, f)
		}
	}
	dp.services[stray] = datapath.Service{Frontend: stray, Name: "default/gone:http"}
	dp.mu.Unlock()

	waitBackends(t, dp, "10.96.0.20:80/TCP/int", "10.244.1.1:8080/A")
	waitBackends(t, dp, "10.96.0.50:80/TCP/int", "")
	testutil.Eventually(t, 10*time.Second, "stray deleted", func() error {
		if _, ok := dp.get(stray.String()); ok {
			return fmt.Errorf("frontends %v", dp.frontends())
		}
		return nil
	})
}

func TestSharedFrontendIsHandedOverNotDeleted(t *testing.T) {
	c := fake.NewClientset()
	dp := newFakeDatapath()
	a := clusterIPService("default", "a", "10.96.0.31", svcPort("http", corev1.ProtocolTCP, 80, 0))
	a.Spec.ExternalIPs = []string{"172.31.77.100"}
	create(t, c, a, slice("default", "a", "a-1", httpPort, ep{"10.244.1.1", "node-b", "ready"}))
	startProxy(t, c, dp, nil)
	const ext = "172.31.77.100:80/TCP/ext"
	waitBackends(t, dp, ext, "10.244.1.1:8080/A")

	// b claims the same externalIP:port and, writing last, takes it over.
	b := clusterIPService("default", "b", "10.96.0.32", svcPort("http", corev1.ProtocolTCP, 80, 0))
	b.Spec.ExternalIPs = []string{"172.31.77.100"}
	create(t, c, b, slice("default", "b", "b-1", httpPort, ep{"10.244.2.1", "node-b", "ready"}))
	waitBackends(t, dp, ext, "10.244.2.1:8080/A")

	// b goes: the frontend returns to a instead of vanishing.
	if err := c.CoreV1().Services("default").Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, dp, ext, "10.244.1.1:8080/A")
	if s, _ := dp.get(ext); s.Name != "default/a:http" {
		t.Fatalf("frontend named %q, want a's", s.Name)
	}
	// a goes too: now it is deleted.
	if err := c.CoreV1().Services("default").Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "all deleted", func() error {
		if fs := dp.frontends(); len(fs) != 0 {
			return fmt.Errorf("frontends %v", fs)
		}
		return nil
	})
}
