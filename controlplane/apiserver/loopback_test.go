package apiserver

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/test/bufconn"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/skep-dev/skep/internal/memnet"
	"github.com/skep-dev/skep/internal/testutil"
)

// TestLoopbackClient: the loopback config reaches the server in memory as
// the loopback identity; authentication still applies there; a watch over
// it outlives the body read timeout and sees another client's write.
func TestLoopbackClient(t *testing.T) {
	srv, err := New(Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", Store: newMemStore(),
		Logger:          testutil.QuietLogger(),
		BodyReadTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	lcfg := srv.LoopbackRESTConfig()
	if strings.Contains(lcfg.Host, hostOf(srv.ln.Addr().String())) || lcfg.BearerToken == srv.AdminToken() {
		t.Fatalf("loopback config %s reuses the external address or the admin token", lcfg.Host)
	}
	loop, err := kubernetes.NewForConfig(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
	defer tcancel()

	rev, err := loop.AuthenticationV1().SelfSubjectReviews().Create(tctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := rev.Status.UserInfo; u.Username != LoopbackUser || !contains(u.Groups, "system:masters") {
		t.Fatalf("loopback user = %+v", u)
	}
	rev, err = ext.AuthenticationV1().SelfSubjectReviews().Create(tctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Status.UserInfo.Username != "skep-admin" {
		t.Fatalf("external admin user = %+v", rev.Status.UserInfo)
	}
	if srv.loopback.Open() == 0 {
		t.Fatal("loopback requests made no in-memory connection")
	}

	// No token, no access, in memory as over TCP.
	raw := &http.Client{Transport: &http.Transport{DialContext: srv.loopback.DialContext}}
	defer raw.CloseIdleConnections()
	resp, err := raw.Get("http://" + loopbackHost + "/api/v1/namespaces")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated loopback request: %d", resp.StatusCode)
	}

	cms := loop.CoreV1().ConfigMaps("default")
	l, err := cms.List(tctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(tctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	time.Sleep(3 * srv.cfg.BodyReadTimeout)
	if _, err := ext.CoreV1().ConfigMaps("default").Create(tctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "seen"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("loopback watch ended")
		}
		if ev.Type != watch.Added || ev.Object.(*corev1.ConfigMap).Name != "seen" {
			t.Fatalf("event %s %v", ev.Type, ev.Object)
		}
	case <-tctx.Done():
		t.Fatal("no event on the loopback watch")
	}
	got, err := cms.Get(tctx, "seen", metav1.GetOptions{})
	if err != nil || got.UID == "" {
		t.Fatalf("get over loopback: %v %v", got, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runLoopbackCycle starts a server, drives it over the loopback config with
// an informer and an open watch (as the controllers do), stops it, and
// checks that every in-memory connection is closed.
func runLoopbackCycle(t *testing.T) {
	srv, err := New(Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", Store: newMemStore(),
		Logger: testutil.QuietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	cs, err := kubernetes.NewForConfig(srv.LoopbackRESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	stopInformers := make(chan struct{})
	f := informers.NewSharedInformerFactory(cs, 0)
	inf := f.Core().V1().ConfigMaps().Informer()
	f.Start(stopInformers)
	defer func() {
		close(stopInformers)
		f.Shutdown()
	}()
	tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
	defer tcancel()
	if !cache.WaitForCacheSync(tctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync over loopback")
	}
	w, err := cs.CoreV1().Namespaces().Watch(tctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := cs.CoreV1().ConfigMaps("default").Create(tctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cycle"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not stop")
	}
	if n := srv.loopback.Open(); n != 0 {
		t.Fatalf("%d in-memory connection ends open after Run returned", n)
	}
	// The client's watch ends with the server, as with a TCP server gone.
	for range w.ResultChan() {
	}
}

// TestLoopbackShutdownNoGoroutineLeak: after Run returns, nothing of the
// loopback server or of its connections is left, on either side.
func TestLoopbackShutdownNoGoroutineLeak(t *testing.T) {
	runLoopbackCycle(t) // warm-up: client-go's and net/http's one-time goroutines
	before := runtime.NumGoroutine()
	for range 2 {
		runLoopbackCycle(t)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after two server cycles:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// processCPU is this process's user plus system CPU time.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bufconnConfig serves the server's handler on grpc's in-memory bufconn
// listener, the well-kept alternative to internal/memnet, for
// BenchmarkWatchDelivery to compare (see memnet's package doc for why
// memnet stays).
func bufconnConfig(s *Server) *rest.Config {
	ln := bufconn.Listen(memnet.PipeLimit)
	hs := &http.Server{Handler: s.Handler()}
	go func() { _ = hs.Serve(ln) }()
	go func() {
		for !s.ready.Load() {
			time.Sleep(time.Millisecond)
		}
		for s.ready.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		hs.Close()
	}()
	return &rest.Config{Host: "http://" + loopbackHost, BearerToken: s.loopbackToken, QPS: -1,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) { return ln.DialContext(ctx) }}
}

// BenchmarkWatchDelivery: the process CPU, server and client side together
// (in skep server both are this process), to deliver one configmap change to
// a metadata watch like the garbage collector's, over the external
// TLS-over-TCP config and over the in-memory loopback config. The writes go
// to the store directly, so what differs is the delivery alone.
// Run: go test -run '^$' -bench WatchDelivery -benchtime 20000x ./controlplane/apiserver
func BenchmarkWatchDelivery(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  func(*Server) *rest.Config
	}{
		{"transport=tls-tcp", (*Server).RESTConfig},
		{"transport=memory", (*Server).LoopbackRESTConfig},
		{"transport=bufconn", bufconnConfig},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", Store: newMemStore(),
				Logger: testutil.QuietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = srv.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			mc, err := metadata.NewForConfig(tc.cfg(srv))
			if err != nil {
				b.Fatal(err)
			}
			gvr := corev1.SchemeGroupVersion.WithResource("configmaps")
			w, err := mc.Resource(gvr).Watch(ctx, metav1.ListOptions{ResourceVersion: strconv.FormatInt(srv.store.Revision(), 10)})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Stop()
			res := srv.reg.Lookup(gvr)
			cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", UID: "6d7e0b3c-4a57-4b6e-9a1e-3c0f5d2a9b11",
					Labels: map[string]string{"app": "bench"}, CreationTimestamp: metav1.Now()},
				Data: map[string]string{"key": strings.Repeat("v", 200)}}
			values := make([][]byte, b.N)
			for i := range values {
				cm.Name = "cm-" + strconv.Itoa(i)
				if values[i], err = encodeJSON(cm); err != nil {
					b.Fatal(err)
				}
			}
			// The writer stays at most a window ahead of the watcher, as a
			// store's watch buffer would make it (the test store drops a
			// watcher that falls too far behind).
			window := make(chan struct{}, 512)
			b.ResetTimer()
			cpu0 := processCPU(b)
			go func() {
				for i, v := range values {
					select {
					case window <- struct{}{}:
					case <-ctx.Done():
						return
					}
					if _, err := srv.store.Create(ctx, res.Key("default", "cm-"+strconv.Itoa(i)), v); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			for got := 0; got < b.N; {
				select {
				case ev, ok := <-w.ResultChan():
					if !ok {
						b.Fatalf("watch ended after %d events", got)
					}
					if ev.Type == watch.Added {
						got++
						<-window
					}
				case <-time.After(30 * time.Second):
					b.Fatalf("%d of %d events after 30s", got, b.N)
				}
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/event")
		})
	}
}
