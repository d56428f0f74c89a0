package apiserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/skep-dev/skep/internal/testutil"
)

func TestNamespaceLifecycle(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	nss := ts.cs.CoreV1().Namespaces()
	ns, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Spec.Finalizers) != 1 || ns.Labels[corev1.LabelMetadataName] != "team-a" {
		t.Fatalf("namespace defaults: %+v", ns)
	}
	if _, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "Bad.Name"}}, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("namespace names are DNS labels: %v", err)
	}
	if err := nss.Delete(ctx, "team-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ns, err = nss.Get(ctx, "team-a", metav1.GetOptions{})
	if err != nil || ns.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("terminating: %v %+v", err, ns.Status)
	}
	_, err = ts.cs.CoreV1().ConfigMaps("team-a").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("create in terminating namespace: %v", err)
	}
	ns.Spec.Finalizers = nil
	if _, err := nss.Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nss.Get(ctx, "team-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after finalize: %v", err)
	}
	if err := nss.Delete(ctx, "kube-system", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("deleting kube-system: %v", err)
	}
}

// TestMetadataClient: the metadata-only client (garbage collector,
// metadata informers) lists and watches PartialObjectMetadata.
func TestMetadataClient(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mc, err := metadata.NewForConfig(ts.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	gvr := corev1.SchemeGroupVersion.WithResource("pods")
	if _, err := ts.cs.CoreV1().Pods("default").Create(ctx, testPod("m1", map[string]string{"a": "b"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err := mc.Resource(gvr).Namespace("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "m1" || l.Items[0].Labels["a"] != "b" {
		t.Fatalf("metadata list: %v %+v", err, l)
	}
	w, err := mc.Resource(gvr).Namespace("default").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := ts.cs.CoreV1().Pods("default").Create(ctx, testPod("m2", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := <-w.ResultChan()
	pm, ok := ev.Object.(*metav1.PartialObjectMetadata)
	if ev.Type != "ADDED" || !ok || pm.Name != "m2" {
		t.Fatalf("metadata watch: %v %#v", ev.Type, ev.Object)
	}
	got, err := mc.Resource(gvr).Namespace("default").Get(ctx, "m1", metav1.GetOptions{})
	if err != nil || got.UID == "" {
		t.Fatalf("metadata get: %v", err)
	}
}

// TestInformer runs a client-go shared informer: it lists, watches and
// sees adds, updates and deletes.
func TestInformer(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pods := ts.cs.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, testPod("before", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := informers.NewSharedInformerFactory(ts.cs, 0)
	inf := f.Core().V1().Pods().Informer()
	var mu sync.Mutex
	events := map[string]int{}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o interface{}) { mu.Lock(); events["add:"+o.(*corev1.Pod).Name]++; mu.Unlock() },
		UpdateFunc: func(_, o interface{}) { mu.Lock(); events["update:"+o.(*corev1.Pod).Name]++; mu.Unlock() },
		DeleteFunc: func(o interface{}) {
			if p, ok := o.(*corev1.Pod); ok {
				mu.Lock()
				events["delete:"+p.Name]++
				mu.Unlock()
			}
		},
	})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	p, err := pods.Create(ctx, testPod("after", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"x": "y"}
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "after", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		mu.Lock()
		ok := events["add:before"] == 1 && events["add:after"] == 1 && events["update:after"] >= 1 && events["delete:after"] == 1
		snapshot := len(events)
		mu.Unlock()
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("informer events: %v (%d)", events, snapshot)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	f.Shutdown()
}

// kubectl runs a kubectl binary against the test server with its own
// discovery cache.
func kubectl(t *testing.T, bin string, ts *testServer, stdin string, args ...string) (string, error) {
	t.Helper()
	cache := filepath.Join(t.TempDir(), "cache")
	cmd := exec.Command(bin, append([]string{"--kubeconfig", ts.KubeconfigPath(), "--cache-dir", cache}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "KUBECTL_INTERACTIVE_DELETE=false")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const nginxDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
`

const nginxService = `apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
`

// TestKubectlApply drives the real kubectl binaries (1.33 and 1.27): apply
// with no extra flags (fieldValidation via the OpenAPI documents), re-apply,
// get as a table, scale and an unknown field refused by strict validation.
func TestKubectlApply(t *testing.T) {
	bins := []string{testutil.RequireBinary(t, "kubectl")}
	if _, err := os.Stat("/usr/lib/google-cloud-sdk/bin/kubectl.1.27"); err == nil {
		bins = append(bins, "/usr/lib/google-cloud-sdk/bin/kubectl.1.27")
	}
	for _, bin := range bins {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			ts := startServer(t, nil)
			for _, m := range []string{nginxDeployment, nginxService} {
				if out, err := kubectl(t, bin, ts, m, "apply", "-f", "-"); err != nil {
					t.Fatalf("apply: %v\n%s", err, out)
				}
			}
			out, err := kubectl(t, bin, ts, strings.Replace(nginxDeployment, "replicas: 3", "replicas: 2", 1), "apply", "-f", "-")
			if err != nil || !strings.Contains(out, "configured") {
				t.Fatalf("re-apply: %v\n%s", err, out)
			}
			out, err = kubectl(t, bin, ts, "", "get", "deploy,svc")
			if err != nil || !strings.Contains(out, "nginx-deployment   0/2") || !strings.Contains(out, "service/my-service   ClusterIP") {
				t.Fatalf("get: %v\n%s", err, out)
			}
			if out, err := kubectl(t, bin, ts, "", "scale", "deploy/nginx-deployment", "--replicas=5"); err != nil {
				t.Fatalf("scale: %v\n%s", err, out)
			}
			d, err := ts.cs.AppsV1().Deployments("default").Get(context.Background(), "nginx-deployment", metav1.GetOptions{})
			if err != nil || *d.Spec.Replicas != 5 {
				t.Fatalf("after scale: %v", err)
			}
			bad := strings.Replace(nginxDeployment, "  replicas: 3", "  replicas: 3\n  bogusField: 1", 1)
			out, err = kubectl(t, bin, ts, bad, "apply", "-f", "-")
			if err == nil || !strings.Contains(out, `unknown field "spec.bogusField"`) {
				t.Fatalf("unknown field accepted: %v\n%s", err, out)
			}
		})
	}
}

// TestKubectlGetWatch: kubectl get -w (a Table watch) prints a change.
func TestKubectlGetWatch(t *testing.T) {
	bin := testutil.RequireBinary(t, "kubectl")
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--kubeconfig", ts.KubeconfigPath(), "--cache-dir", t.TempDir(), "get", "configmaps", "-w")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Create until kubectl prints it: its watch may start after the first create.
	for i := 0; ; i++ {
		name := "seen-" + string(rune('a'+i%26))
		_, _ = ts.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		time.Sleep(300 * time.Millisecond)
		if strings.Contains(out.String(), "seen-") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("kubectl get -w printed no change:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "NAME") || !strings.Contains(out.String(), "DATA") {
		t.Errorf("no table header:\n%s", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWatchHTTP1OutlivesReadTimeout: a watch over HTTP/1.1 keeps streaming
// past the request read timeout.
func TestWatchHTTP1OutlivesReadTimeout(t *testing.T) {
	srv, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", BodyReadTimeout: 300 * time.Millisecond,
		Logger: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CAPEM())
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.RESTConfig().Host+"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion="+strconv.FormatInt(srv.store.Revision(), 10), nil)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	resp, err := h1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Fatalf("proto %s", resp.Proto)
	}
	time.Sleep(time.Second)
	cs := kubernetes.NewForConfigOrDie(srv.RESTConfig())
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"type":"ADDED"`) || !strings.Contains(line, `"name":"late"`) {
		t.Fatalf("watch line %q: %v", line, err)
	}
}
