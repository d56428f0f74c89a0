package apiserver

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skep-dev/skep/internal/testutil"
)

// runIn starts a server on dir and returns a stop function.
func runIn(t *testing.T, dir string) (*Server, func()) {
	t.Helper()
	srv, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	return srv, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("server did not stop")
		}
	}
}

// TestRestartKeepsState: a restart on the same data dir reuses the CA,
// token and kubeconfig, keeps the objects and their allocated addresses.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	srv, stop := runIn(t, dir)
	ctx := context.Background()
	token, ca := srv.AdminToken(), string(srv.CAPEM())
	for _, f := range []string{"admin.kubeconfig", "state.db", "secrets.key", "pki/ca.crt", "pki/apiserver.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "admin.kubeconfig")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode: %v %v", fi.Mode(), err)
	}
	// The kubeconfig works on its own.
	cfg, err := clientcmd.BuildConfigFromFlags("", srv.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "keep"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"},
		StringData: map[string]string{"password": "hunter2-plaintext-marker"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop()
	// The store's two files: the database and its write-ahead log.
	for _, f := range []string{"state.db", "state.db.wal"} {
		db, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(db), "hunter2") || strings.Contains(string(db), "aHVudGVyM") {
			t.Errorf("secret value readable in %s", f)
		}
	}

	srv2, stop2 := runIn(t, dir)
	defer stop2()
	if srv2.AdminToken() != token || string(srv2.CAPEM()) != ca {
		t.Fatal("token or CA changed across restart")
	}
	cs2 := kubernetes.NewForConfigOrDie(srv2.RESTConfig())
	got, err := cs2.CoreV1().Services("default").Get(ctx, "keep", metav1.GetOptions{})
	if err != nil || got.Spec.ClusterIP != svc.Spec.ClusterIP {
		t.Fatalf("service after restart: %v", err)
	}
	s, err := cs2.CoreV1().Secrets("default").Get(ctx, "s", metav1.GetOptions{})
	if err != nil || string(s.Data["password"]) != "hunter2-plaintext-marker" {
		t.Fatalf("secret after restart: %v", err)
	}
	// The kubernetes service follows the server to its new port.
	_, portStr, _ := net.SplitHostPort(srv2.Addr())
	port, _ := strconv.Atoi(portStr)
	ep, err := cs2.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || ep.Subsets[0].Ports[0].Port != int32(port) {
		t.Fatalf("kubernetes endpoints after restart: %v %+v (port %d)", err, ep.Subsets, port)
	}
	sl, err := cs2.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || *sl.Ports[0].Port != int32(port) || sl.Endpoints[0].Addresses[0] != "127.0.0.1" {
		t.Fatalf("kubernetes endpointslice after restart: %v", err)
	}
	ks, err := cs2.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || ks.Spec.Ports[0].TargetPort.IntVal != int32(port) || ks.Spec.ClusterIP != "10.96.0.1" {
		t.Fatalf("kubernetes service after restart: %v %+v", err, ks.Spec)
	}
	// The allocator was rebuilt: the address is still taken.
	_, err = cs2.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dup"},
		Spec: corev1.ServiceSpec{ClusterIP: svc.Spec.ClusterIP, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("reused IP after restart: %v", err)
	}
}

func TestMetricsYAMLAndDiscovery(t *testing.T) {
	ts := startServer(t, nil)
	code, body, hdr := ts.do(t, "GET", "/api/v1/namespaces/default", "", "", "Accept", "application/yaml")
	if code != 200 || hdr.Get("Content-Type") != "application/yaml" || !strings.Contains(string(body), "kind: Namespace") {
		t.Fatalf("yaml: %d %s", code, body)
	}
	code, body, _ = ts.do(t, "GET", "/metrics", "", "")
	if code != 200 || !strings.Contains(string(body), `apiserver_request_total{code="200",resource="namespaces",verb="get"} 1`) ||
		!strings.Contains(string(body), "skep_store_operation_duration_seconds") {
		t.Fatalf("metrics: %d %.2000s", code, body)
	}
	_, lists, err := ts.cs.Discovery().ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, l := range lists {
		for _, r := range l.APIResources {
			found[l.GroupVersion+"/"+r.Name] = true
		}
	}
	for _, want := range []string{"v1/pods", "v1/pods/status", "v1/pods/binding", "v1/services", "v1/endpoints", "v1/events",
		"apps/v1/deployments/scale", "apps/v1/replicasets", "coordination.k8s.io/v1/leases",
		"discovery.k8s.io/v1/endpointslices", "networking.k8s.io/v1/ingresses/status", "v1/nodes/status"} {
		if !found[want] {
			t.Errorf("discovery lacks %s", want)
		}
	}
	// The OpenAPI v3 index advertises every group/version kubectl asks for.
	code, body, _ = ts.do(t, "GET", "/openapi/v3", "", "")
	if code != 200 || !strings.Contains(string(body), `"apis/apps/v1"`) {
		t.Fatalf("openapi v3: %d %s", code, body)
	}
	code, _, _ = ts.do(t, "GET", "/openapi/v2", "", "", "Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
	if code != 200 {
		t.Fatalf("openapi v2: %d", code)
	}
}
