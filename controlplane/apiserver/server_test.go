package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/store"
	"github.com/skep-dev/skep/internal/testutil"
)

type testServer struct {
	*Server
	cs   *kubernetes.Clientset
	http *http.Client
	base string
}

// startServer runs a server on a free loopback port with the given store
// (nil: the real bbolt store in a temp dir) until the test ends.
func startServer(t *testing.T, st store.Interface) *testServer {
	t.Helper()
	srv, err := New(Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", Store: st,
		Logger:           testutil.QuietLogger(),
		BookmarkInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	return serve(t, srv)
}

// serve runs srv until the test ends.
func serve(t *testing.T, srv *Server) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop")
		}
	})
	cfg := srv.RESTConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{Server: srv, cs: cs, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: cfg.Host}
}

// do sends a raw request and returns the code, body and headers.
func (ts *testServer) do(t *testing.T, method, path, ctype string, body string, hdr ...string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, ts.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header
}

func decodeStatus(t *testing.T, data []byte) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(data, &st); err != nil || st.Kind != "Status" {
		t.Fatalf("response is not a Status (%v): %s", err, data)
	}
	return st
}

func testPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func testDeployment(name string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.14.2"}}},
			},
		},
	}
}

func TestDefaultNamespacesAndKubernetesService(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		n, err := ts.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
		if n.Status.Phase != corev1.NamespaceActive || n.UID == "" {
			t.Errorf("namespace %s: phase %q uid %q", ns, n.Status.Phase, n.UID)
		}
	}
	svc, err := ts.cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes service IP = %s", svc.Spec.ClusterIP)
	}
	code, body, _ := ts.do(t, "GET", "/readyz", "", "")
	if code != 200 || string(body) != "ok" {
		t.Errorf("readyz: %d %s", code, body)
	}
	v, err := ts.cs.Discovery().ServerVersion()
	if err != nil || v.GitVersion != "v1.33.0" {
		t.Errorf("version %+v %v", v, err)
	}
}

func TestCRUD(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "one"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.UID == "" || cm.CreationTimestamp.IsZero() || cm.ResourceVersion == "" || cm.Namespace != "default" {
		t.Fatalf("server fields not set: %+v", cm.ObjectMeta)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "one"}}, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("duplicate create: %v", err)
	}
	gen, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "gen-"}}, metav1.CreateOptions{})
	if err != nil || !strings.HasPrefix(gen.Name, "gen-") || len(gen.Name) != len("gen-")+5 {
		t.Fatalf("generateName: %v %q", err, gen.Name)
	}
	got, err := cms.Get(ctx, "one", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" || got.ResourceVersion != cm.ResourceVersion {
		t.Fatalf("get: %v %+v", err, got)
	}
	got.Data["k"] = "w"
	upd, err := cms.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil || upd.Data["k"] != "w" || upd.ResourceVersion == got.ResourceVersion || upd.UID != cm.UID {
		t.Fatalf("update: %v %+v", err, upd)
	}
	if err := cms.Delete(ctx, "one", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "one", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	_, err = ts.cs.CoreV1().ConfigMaps("nope").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	if !apierrors.IsNotFound(err) || err.Error() != `namespaces "nope" not found` {
		t.Fatalf("create in missing namespace: %v", err)
	}
	// ownerReferences survive.
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "gen", UID: gen.UID}
	c2, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owned", OwnerReferences: []metav1.OwnerReference{owner}}}, metav1.CreateOptions{})
	if err != nil || len(c2.OwnerReferences) != 1 || c2.OwnerReferences[0].UID != gen.UID {
		t.Fatalf("ownerReferences: %v %+v", err, c2.OwnerReferences)
	}
	// deletecollection by label.
	for i := 0; i < 3; i++ {
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("dc-%d", i), Labels: map[string]string{"dc": "yes"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cms.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "dc=yes"}); err != nil {
		t.Fatal(err)
	}
	l, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 2 {
		t.Fatalf("after deletecollection: %v %d items", err, len(l.Items))
	}
}

func TestUpdateConflict(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := cm.DeepCopy()
	a.Data = map[string]string{"a": "1"}
	if _, err := cms.Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := cm.DeepCopy() // stale resourceVersion
	b.Data = map[string]string{"b": "1"}
	_, err = cms.Update(ctx, b, metav1.UpdateOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	want := `Operation cannot be fulfilled on configmaps "c": the object has been modified; please apply your changes to the latest version and try again`
	if err.Error() != want {
		t.Errorf("conflict message:\n got %s\nwant %s", err, want)
	}
	// A delete precondition on a stale resourceVersion conflicts too.
	rv := cm.ResourceVersion
	err = cms.Delete(ctx, "c", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	if !apierrors.IsConflict(err) {
		t.Fatalf("stale delete precondition: %v", err)
	}
}

func TestPatchTypes(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	deps := ts.cs.AppsV1().Deployments("default")
	d := testDeployment("web")
	d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "side", Image: "busybox"})
	if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Strategic merge: containers merge by name, the sidecar stays.
	out, err := deps.Patch(ctx, "web", types.StrategicMergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.16"}]}}}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := out.Spec.Template.Spec.Containers; len(cs) != 2 || cs[0].Image != "nginx:1.16" || cs[1].Name != "side" {
		t.Fatalf("strategic merge: %+v", cs)
	}
	if out.Generation != 2 {
		t.Errorf("generation after spec change = %d, want 2", out.Generation)
	}
	// JSON merge patch replaces lists.
	out, err = deps.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"a":"b"}},"spec":{"replicas":4}}`), metav1.PatchOptions{})
	if err != nil || out.Labels["a"] != "b" || *out.Spec.Replicas != 4 {
		t.Fatalf("merge patch: %v %+v", err, out)
	}
	// JSON patch.
	out, err = deps.Patch(ctx, "web", types.JSONPatchType, []byte(`[{"op":"replace","path":"/spec/replicas","value":2}]`), metav1.PatchOptions{})
	if err != nil || *out.Spec.Replicas != 2 {
		t.Fatalf("json patch: %v", err)
	}
	// A failing JSON patch test op is 422.
	_, err = deps.Patch(ctx, "web", types.JSONPatchType, []byte(`[{"op":"test","path":"/spec/replicas","value":9}]`), metav1.PatchOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("failing json patch test: %v", err)
	}
	// A stale resourceVersion in a patch conflicts.
	_, err = deps.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"resourceVersion":"1"},"spec":{"replicas":3}}`), metav1.PatchOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("stale patch: %v", err)
	}
	// Server-side apply answers 415.
	_, err = deps.Patch(ctx, "web", types.ApplyPatchType, []byte(`{"apiVersion":"apps/v1","kind":"Deployment"}`), metav1.PatchOptions{FieldManager: "x"})
	if se, ok := err.(apierrors.APIStatus); !ok || se.Status().Code != http.StatusUnsupportedMediaType {
		t.Fatalf("apply patch: %v", err)
	}
	// Status through the main resource is ignored; through /status it sticks.
	cur, _ := deps.Get(ctx, "web", metav1.GetOptions{})
	cur.Status.Replicas = 7
	cur.Spec.Replicas = ptr.To(int32(5))
	up, err := deps.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil || up.Status.Replicas != 0 || *up.Spec.Replicas != 5 {
		t.Fatalf("main update touched status: %v %+v", err, up.Status)
	}
	up.Status.Replicas = 7
	up.Spec.Replicas = ptr.To(int32(1))
	st, err := deps.UpdateStatus(ctx, up, metav1.UpdateOptions{})
	if err != nil || st.Status.Replicas != 7 || *st.Spec.Replicas != 5 {
		t.Fatalf("status update: %v status=%d spec=%d", err, st.Status.Replicas, *st.Spec.Replicas)
	}
	// Scale subresource.
	sc, err := deps.GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil || sc.Spec.Replicas != 5 || sc.Status.Selector != "app=web" {
		t.Fatalf("get scale: %v %+v", err, sc)
	}
	sc.Spec.Replicas = 9
	if _, err := deps.UpdateScale(ctx, "web", sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if d, _ := deps.Get(ctx, "web", metav1.GetOptions{}); *d.Spec.Replicas != 9 {
		t.Fatalf("replicas after scale = %d", *d.Spec.Replicas)
	}
}

func TestSelectorsAndPaging(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	pods := ts.cs.CoreV1().Pods("default")
	for i := 0; i < 25; i++ {
		p := testPod(fmt.Sprintf("p-%02d", i), map[string]string{"parity": []string{"even", "odd"}[i%2]})
		if i < 5 {
			p.Spec.NodeName = "node-a"
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "parity=odd"})
	if err != nil || len(l.Items) != 12 {
		t.Fatalf("label selector: %v %d", err, len(l.Items))
	}
	l, err = pods.List(ctx, metav1.ListOptions{LabelSelector: "parity in (odd,even),parity!=odd"})
	if err != nil || len(l.Items) != 13 {
		t.Fatalf("set selector: %v %d", err, len(l.Items))
	}
	l, err = pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-a"})
	if err != nil || len(l.Items) != 5 {
		t.Fatalf("field selector nodeName: %v %d", err, len(l.Items))
	}
	l, err = pods.List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Pending,metadata.name=p-03"})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "p-03" {
		t.Fatalf("field selector phase+name: %v %+v", err, l.Items)
	}
	_, err = pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.bogus=x"})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("unsupported field selector: %v", err)
	}
	_, err = pods.List(ctx, metav1.ListOptions{LabelSelector: "a in (("})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("bad label selector: %v", err)
	}
	// Paging: 10 + 10 + 5, no duplicates.
	seen := map[string]bool{}
	opts := metav1.ListOptions{Limit: 10}
	pages := 0
	for {
		l, err := pods.List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, p := range l.Items {
			if seen[p.Name] {
				t.Fatalf("duplicate %s", p.Name)
			}
			seen[p.Name] = true
		}
		if l.Continue == "" {
			break
		}
		if l.RemainingItemCount == nil || *l.RemainingItemCount != int64(25-len(seen)) {
			t.Errorf("remainingItemCount = %v after %d", l.RemainingItemCount, len(seen))
		}
		opts.Continue = l.Continue
	}
	if pages != 3 || len(seen) != 25 {
		t.Fatalf("paging: %d pages, %d items", pages, len(seen))
	}
	// Paging with a selector fills pages with matches.
	l, err = pods.List(ctx, metav1.ListOptions{Limit: 4, LabelSelector: "parity=odd"})
	if err != nil || len(l.Items) != 4 || l.Continue == "" {
		t.Fatalf("selector page: %v %d %q", err, len(l.Items), l.Continue)
	}
	_, err = pods.List(ctx, metav1.ListOptions{Limit: 4, Continue: "not-a-token"})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("bad continue: %v", err)
	}
	// Cluster-wide list across namespaces.
	all, err := ts.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil || len(all.Items) != 25 {
		t.Fatalf("all namespaces: %v %d", err, len(all.Items))
	}
}

func TestWatch(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	l, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion, AllowWatchBookmarks: true, LabelSelector: "w=yes"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "w1", Labels: map[string]string{"w": "yes"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"x": "y"}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "w1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []watch.EventType
	bookmarks := 0
	for len(got) < 3 || bookmarks == 0 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed early; got %v", got)
			}
			if ev.Type == watch.Bookmark {
				bookmarks++
				if ev.Object.(*corev1.ConfigMap).ResourceVersion == "" {
					t.Error("bookmark without resourceVersion")
				}
				continue
			}
			if ev.Object.(*corev1.ConfigMap).Name != "w1" {
				t.Fatalf("selector leaked %v", ev.Object)
			}
			got = append(got, ev.Type)
		case <-ctx.Done():
			t.Fatalf("timeout; got %v, %d bookmarks", got, bookmarks)
		}
	}
	if fmt.Sprint(got) != "[ADDED MODIFIED DELETED]" {
		t.Fatalf("events = %v", got)
	}
}

func TestWatchExpired(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ms.compact()
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ev := <-w.ResultChan()
	if ev.Type != watch.Error {
		t.Fatalf("want ERROR event, got %v", ev.Type)
	}
	if st := apierrors.FromObject(ev.Object); !apierrors.IsResourceExpired(st) && !apierrors.IsGone(st) {
		t.Fatalf("want 410 Expired, got %v", st)
	}
}

func TestWatchInitialEvents(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ev := <-w.ResultChan()
	if ev.Type != watch.Added || ev.Object.(*corev1.ConfigMap).Name != "a" {
		t.Fatalf("first event %v %v", ev.Type, ev.Object)
	}
	ev = <-w.ResultChan()
	if ev.Type != watch.Bookmark || ev.Object.(*corev1.ConfigMap).Annotations[metav1.InitialEventsAnnotationKey] != "true" {
		t.Fatalf("want initial-events-end bookmark, got %v %+v", ev.Type, ev.Object)
	}
}

func TestTable(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	if _, err := ts.cs.CoreV1().Pods("default").Create(ctx, testPod("tp", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	accept := "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
	code, body, _ := ts.do(t, "GET", "/api/v1/namespaces/default/pods?limit=500", "", "", "Accept", accept)
	if code != 200 {
		t.Fatalf("table: %d %s", code, body)
	}
	var tbl metav1.Table
	if err := json.Unmarshal(body, &tbl); err != nil || tbl.Kind != "Table" {
		t.Fatalf("decode table: %v %s", err, body)
	}
	var names []string
	for _, c := range tbl.ColumnDefinitions {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "Name,Ready,Status,Restarts,Age,IP,Node,Nominated Node,Readiness Gates" {
		t.Fatalf("columns %s", got)
	}
	if len(tbl.Rows) != 1 || tbl.Rows[0].Cells[0] != "tp" || tbl.Rows[0].Cells[1] != "0/1" || tbl.Rows[0].Cells[2] != "Pending" {
		t.Fatalf("rows %+v", tbl.Rows)
	}
	var pm metav1.PartialObjectMetadata
	if err := json.Unmarshal(tbl.Rows[0].Object.Raw, &pm); err != nil || pm.Kind != "PartialObjectMetadata" || pm.Name != "tp" {
		t.Fatalf("row object %s", tbl.Rows[0].Object.Raw)
	}
	_, body, _ = ts.do(t, "GET", "/api/v1/namespaces/default/pods/tp?includeObject=None", "", "", "Accept", accept)
	tbl = metav1.Table{}
	if err := json.Unmarshal(body, &tbl); err != nil || len(tbl.Rows) != 1 || tbl.Rows[0].Object.Raw != nil {
		t.Fatalf("includeObject=None: %v %s", err, body)
	}
	_, body, _ = ts.do(t, "GET", "/apis/apps/v1/namespaces/default/deployments", "", "", "Accept", accept)
	if err := json.Unmarshal(body, &tbl); err != nil || tbl.ColumnDefinitions[1].Name != "Ready" || tbl.ColumnDefinitions[2].Name != "Up-to-date" {
		t.Fatalf("deployment columns: %v %s", err, body)
	}
}

func TestBadInput(t *testing.T) {
	ts := startServer(t, nil)
	cmPath := "/api/v1/namespaces/default/configmaps"
	big := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"x":"` + strings.Repeat("a", 4<<20) + `"}}`
	cases := []struct {
		name, method, path, ctype, body string
		hdr                             []string
		code                            int
		reason                          metav1.StatusReason
	}{
		{"malformed json", "POST", cmPath, "application/json", `{"apiVersion":"v1",`, nil, 400, metav1.StatusReasonBadRequest},
		{"malformed yaml", "POST", cmPath, "application/yaml", "a: [b\n  - c: :", nil, 400, metav1.StatusReasonBadRequest},
		{"wrong kind", "POST", cmPath, "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`, nil, 400, metav1.StatusReasonBadRequest},
		{"wrong apiVersion", "POST", cmPath, "application/json", `{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}`, nil, 400, metav1.StatusReasonBadRequest},
		{"invalid name", "POST", cmPath, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}`, nil, 422, metav1.StatusReasonInvalid},
		{"missing name", "POST", cmPath, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}`, nil, 422, metav1.StatusReasonInvalid},
		{"pod without containers", "POST", "/api/v1/namespaces/default/pods", "application/json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}}`, nil, 422, metav1.StatusReasonInvalid},
		{"unknown resource", "GET", "/api/v1/namespaces/default/widgets", "", "", nil, 404, metav1.StatusReasonNotFound},
		{"unknown group", "GET", "/apis/nope.io/v1/things", "", "", nil, 404, metav1.StatusReasonNotFound},
		{"oversized", "POST", cmPath, "application/json", big, nil, 413, metav1.StatusReasonRequestEntityTooLarge},
		{"method not allowed", "PUT", cmPath, "application/json", `{}`, nil, 405, metav1.StatusReasonMethodNotAllowed},
		{"unknown field strict", "POST", cmPath + "?fieldValidation=Strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"bogus":1}`, nil, 400, metav1.StatusReasonBadRequest},
		{"duplicate field strict", "POST", cmPath + "?fieldValidation=Strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s","name":"t"}}`, nil, 400, metav1.StatusReasonBadRequest},
		{"not acceptable", "GET", cmPath, "", "", []string{"Accept", "application/vnd.kubernetes.protobuf"}, 406, metav1.StatusReasonNotAcceptable},
		{"unsupported media type", "POST", cmPath, "text/plain", "hi", nil, 415, metav1.StatusReasonUnsupportedMediaType},
		{"bad token", "GET", cmPath, "", "", []string{"Authorization", "Bearer nope"}, 401, metav1.StatusReasonUnauthorized},
		{"bad limit", "GET", cmPath + "?limit=-3", "", "", nil, 400, metav1.StatusReasonBadRequest},
		{"bad resourceVersion", "GET", cmPath + "?resourceVersion=abc", "", "", nil, 400, metav1.StatusReasonBadRequest},
		// Invalid ListOptions are 422 Invalid in Kubernetes (ValidateListOptions).
		{"bad resourceVersionMatch", "GET", cmPath + "?resourceVersionMatch=Sometimes", "", "", nil, 422, metav1.StatusReasonInvalid},
		{"bad timeoutSeconds", "GET", cmPath + "?watch=true&timeoutSeconds=x", "", "", nil, 400, metav1.StatusReasonBadRequest},
		{"bad includeObject", "GET", cmPath + "?includeObject=Everything", "", "", []string{"Accept", "application/json;as=Table;v=v1;g=meta.k8s.io"}, 400, metav1.StatusReasonBadRequest},
		{"bad fieldValidation", "POST", cmPath + "?fieldValidation=Loose", "application/json", `{}`, nil, 400, metav1.StatusReasonBadRequest},
		{"bad dryRun", "POST", cmPath + "?dryRun=Some", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"}}`, nil, 400, metav1.StatusReasonBadRequest},
		{"bad propagationPolicy", "DELETE", cmPath + "/x?propagationPolicy=Sideways", "", "", nil, 422, metav1.StatusReasonInvalid},
		{"sendInitialEvents without match", "GET", cmPath + "?watch=true&sendInitialEvents=true", "", "", nil, 422, metav1.StatusReasonInvalid},
		{"watch on a missing pod log", "GET", "/api/v1/namespaces/default/pods/nope/log", "", "", nil, 400, metav1.StatusReasonBadRequest},
		{"patch without type", "PATCH", cmPath + "/x", "application/json", `{}`, nil, 415, metav1.StatusReasonUnsupportedMediaType},
		{"namespace mismatch", "POST", cmPath, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"kube-system"}}`, nil, 400, metav1.StatusReasonBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body, _ := ts.do(t, c.method, c.path, c.ctype, c.body, c.hdr...)
			if code != c.code {
				t.Fatalf("code %d, want %d: %.300s", code, c.code, body)
			}
			st := decodeStatus(t, body)
			if st.Reason != c.reason || int(st.Code) != c.code {
				t.Fatalf("status %+v", st)
			}
		})
	}
	// The strict message names the field like the real API server.
	_, body, _ := ts.do(t, "POST", cmPath+"?fieldValidation=Strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"bogus":1}`)
	if st := decodeStatus(t, body); !strings.Contains(st.Message, `strict decoding error: unknown field "bogus"`) {
		t.Errorf("strict message %q", st.Message)
	}
	// Warn creates and warns.
	code, _, hdr := ts.do(t, "POST", cmPath+"?fieldValidation=Warn", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"warned"},"bogus":1}`)
	if code != 201 || !strings.Contains(hdr.Get("Warning"), `unknown field \"bogus\"`) {
		t.Errorf("warn: %d %q", code, hdr.Get("Warning"))
	}
	// Invalid names list their field causes.
	_, body, _ = ts.do(t, "POST", cmPath, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}`)
	if st := decodeStatus(t, body); st.Details == nil || len(st.Details.Causes) == 0 || st.Details.Causes[0].Field != "metadata.name" {
		t.Errorf("invalid causes: %+v", st.Details)
	}
	// No token at all: 401 with a Status.
	anon := ts.RESTConfig()
	anon.BearerToken = ""
	tr, err := rest.TransportFor(anon)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get(ts.base + cmPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || decodeStatus(t, data).Reason != metav1.StatusReasonUnauthorized {
		t.Fatalf("no token: %d %s", resp.StatusCode, data)
	}
}

func TestServiceAllocation(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	svcs := ts.cs.CoreV1().Services("default")
	seen := map[string]bool{"10.96.0.1": true}
	for i := 0; i < 20; i++ {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}}}
		out, err := svcs.Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := out.Spec.ClusterIP
		if seen[ip] || ip == "10.96.0.10" || !strings.HasPrefix(ip, "10.") {
			t.Fatalf("bad or duplicate cluster IP %s", ip)
		}
		seen[ip] = true
		np := out.Spec.Ports[0].NodePort
		if np < 30000 || np > 32767 {
			t.Fatalf("node port %d", np)
		}
		if out.Spec.Ports[0].TargetPort.IntVal != 80 || out.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
			t.Fatalf("port defaults %+v", out.Spec.Ports[0])
		}
	}
	// The DNS address can be asked for; a taken address cannot.
	dns := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 53}}}}
	if _, err := svcs.Create(ctx, dns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dup := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dup"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 53}}}}
	if _, err := svcs.Create(ctx, dup, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("taken IP: %v", err)
	}
	// Deleting frees the address.
	if err := svcs.Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, dup, metav1.CreateOptions{}); err != nil {
		t.Fatalf("reuse after delete: %v", err)
	}
	// An update that leaves clusterIP and nodePort empty keeps them.
	s0, _ := svcs.Get(ctx, "s0", metav1.GetOptions{})
	put := s0.DeepCopy()
	put.Spec.ClusterIP, put.Spec.ClusterIPs, put.Spec.Ports[0].NodePort = "", nil, 0
	put.Labels = map[string]string{"touched": "yes"}
	after, err := svcs.Update(ctx, put, metav1.UpdateOptions{})
	if err != nil || after.Spec.ClusterIP != s0.Spec.ClusterIP || after.Spec.Ports[0].NodePort != s0.Spec.Ports[0].NodePort {
		t.Fatalf("update kept allocations: %v %+v", err, after)
	}
	// Headless services get no address.
	hl := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hl"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}}
	if out, err := svcs.Create(ctx, hl, metav1.CreateOptions{}); err != nil || out.Spec.ClusterIP != "None" {
		t.Fatalf("headless: %v", err)
	}
}

func TestPodBindingAndGracefulDelete(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	pods := ts.cs.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, testPod("b", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	if err := pods.Bind(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, _ := pods.Get(ctx, "b", metav1.GetOptions{})
	if p.Spec.NodeName != "n1" {
		t.Fatalf("nodeName %q", p.Spec.NodeName)
	}
	bind.Target.Name = "n2"
	if err := pods.Bind(ctx, bind, metav1.CreateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("second bind: %v", err)
	}
	// A bound pod is only marked; its node removes it with grace 0.
	if err := pods.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := pods.Get(ctx, "b", metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp == nil || *p.DeletionGracePeriodSeconds != 30 {
		t.Fatalf("graceful delete: %v %+v", err, p.ObjectMeta)
	}
	if err := pods.Delete(ctx, "b", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "b", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after grace 0: %v", err)
	}
	// An unbound pod goes at once.
	if _, err := pods.Create(ctx, testPod("u", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "u", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "u", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("unbound pod: %v", err)
	}
}

func TestFinalizers(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "f", Finalizers: []string{"example.com/hold"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "f", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cm, err := cms.Get(ctx, "f", metav1.GetOptions{})
	if err != nil || cm.DeletionTimestamp == nil {
		t.Fatalf("finalized object: %v %+v", err, cm)
	}
	cm.Finalizers = nil
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "f", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after removing finalizer: %v", err)
	}
	// Foreground propagation becomes a finalizer.
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "fg"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fg := metav1.DeletePropagationForeground
	if err := cms.Delete(ctx, "fg", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatal(err)
	}
	cm, err = cms.Get(ctx, "fg", metav1.GetOptions{})
	if err != nil || len(cm.Finalizers) != 1 || cm.Finalizers[0] != metav1.FinalizerDeleteDependents {
		t.Fatalf("foreground: %v %+v", err, cm)
	}
}

// testTable is the resource table of a server with the default settings.
func testTable() *registry.Table {
	reg, err := newTable(netip.MustParsePrefix("10.96.0.0/12"), Config{NodePortMin: 30000, NodePortMax: 32767}, nil, nil)
	if err != nil {
		panic(err)
	}
	return reg
}
