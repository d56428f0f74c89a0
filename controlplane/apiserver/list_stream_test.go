package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/store"
)

// streamTestPods writes n pods into ms, each with labels, annotations that
// hold JSON-looking strings, and an init container, so items are not all
// the same size.
func streamTestPods(t *testing.T, ts *testServer, ms *memStore, n int) *registry.Resource {
	t.Helper()
	pres := ts.reg.Lookup(corev1.SchemeGroupVersion.WithResource("pods"))
	for i := 0; i < n; i++ {
		p := testPod(fmt.Sprintf("p-%05d", i), map[string]string{"app": "stream", "i": fmt.Sprint(i % 7)})
		p.Namespace = "default"
		// Long ago, so a Table's Age column reads the same on every call.
		p.CreationTimestamp = metav1.NewTime(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Minute))
		p.Annotations = map[string]string{"note": strings.Repeat(`"metadata":{}]`, i%5)}
		if i%4 == 0 {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", Command: []string{"sh", "-c", strings.Repeat("x", i)}}}
		}
		pres.Strategy.Default(p)
		data, err := encodeForStore(pres, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ms.Create(context.Background(), pres.Key("default", p.Name), data); err != nil {
			t.Fatal(err)
		}
	}
	return pres
}

// storedPods is what the store holds under the default namespace's pods,
// decoded as the API answers single objects.
func storedPods(t *testing.T, ts *testServer, ms *memStore, pres *registry.Resource) []corev1.Pod {
	t.Helper()
	lr, err := ms.List(context.Background(), pres.PrefixFor("default"), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]corev1.Pod, len(lr.Items))
	for i, kv := range lr.Items {
		obj, err := ts.decodeKV(pres, kv)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = *obj.(*corev1.Pod)
	}
	return out
}

// TestListStreamedMatchesStore: a list far larger than the write buffer
// goes out whole and equal to the stored objects, as JSON, YAML and
// PartialObjectMetadataList, and with paging every page is a complete
// document whose items join up to the whole list.
func TestListStreamedMatchesStore(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, ms)
	const n = 600 // about 500 kB of JSON: many times listWriteBufSize
	pres := streamTestPods(t, ts, ms, n)
	want := storedPods(t, ts, ms, pres)

	code, body, hdr := ts.do(t, http.MethodGet, "/api/v1/namespaces/default/pods", "", "")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("list: %d %s: %.200s", code, hdr.Get("Content-Type"), body)
	}
	if len(body) < 4*listWriteBufSize || !bytes.HasSuffix(body, []byte("]}\n")) {
		t.Fatalf("body of %d bytes does not end the list", len(body))
	}
	var l corev1.PodList
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("decode list: %v", err)
	}
	if l.Kind != "PodList" || l.APIVersion != "v1" || l.ResourceVersion != fmt.Sprint(ms.Revision()) {
		t.Fatalf("list header: %s %s rv %q (store %d)", l.Kind, l.APIVersion, l.ResourceVersion, ms.Revision())
	}
	if len(l.Items) != n {
		t.Fatalf("%d items, want %d", len(l.Items), n)
	}
	for i := range want {
		if !equality.Semantic.DeepEqual(l.Items[i], want[i]) {
			t.Fatalf("item %d differs from the stored pod:\n got %+v\nwant %+v", i, l.Items[i].ObjectMeta, want[i].ObjectMeta)
		}
	}

	// The client-go typed client (protobuf preferred, JSON answered).
	cl, err := ts.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(cl.Items) != n || !equality.Semantic.DeepEqual(cl.Items, want) {
		t.Fatalf("client-go list: %v, %d items", err, len(cl.Items))
	}

	// YAML is the same document.
	code, ybody, hdr := ts.do(t, http.MethodGet, "/api/v1/namespaces/default/pods", "", "", "Accept", "application/yaml")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/yaml" {
		t.Fatalf("yaml list: %d %s", code, hdr.Get("Content-Type"))
	}
	var yl corev1.PodList
	if err := yaml.Unmarshal(ybody, &yl); err != nil || !equality.Semantic.DeepEqual(yl.Items, want) {
		t.Fatalf("yaml list: %v, %d items", err, len(yl.Items))
	}

	// Metadata only.
	code, pbody, _ := ts.do(t, http.MethodGet, "/api/v1/namespaces/default/pods", "", "", "Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
	var pl metav1.PartialObjectMetadataList
	if err := json.Unmarshal(pbody, &pl); err != nil || code != http.StatusOK || pl.Kind != "PartialObjectMetadataList" || len(pl.Items) != n {
		t.Fatalf("metadata list: %d %v, kind %q, %d items", code, err, pl.Kind, len(pl.Items))
	}
	for i := range want {
		if pl.Items[i].Kind != "PartialObjectMetadata" || !equality.Semantic.DeepEqual(pl.Items[i].ObjectMeta, want[i].ObjectMeta) {
			t.Fatalf("metadata item %d: %s %+v, want %+v", i, pl.Items[i].Kind, pl.Items[i].ObjectMeta, want[i].ObjectMeta)
		}
	}

	// Pages of 250 with a label selector, then without.
	for _, sel := range []string{"", "i=3"} {
		var got []corev1.Pod
		cont := ""
		for page := 0; ; page++ {
			l, err := ts.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{Limit: 250, Continue: cont, LabelSelector: sel})
			if err != nil {
				t.Fatalf("selector %q page %d: %v", sel, page, err)
			}
			got = append(got, l.Items...)
			if cont = l.Continue; cont == "" {
				break
			}
			if page > n/250+1 {
				t.Fatalf("selector %q: paging does not end", sel)
			}
		}
		var wantSel []corev1.Pod
		for _, p := range want {
			if sel == "" || p.Labels["i"] == "3" {
				wantSel = append(wantSel, p)
			}
		}
		if !equality.Semantic.DeepEqual(got, wantSel) {
			t.Fatalf("selector %q: pages give %d items, want %d", sel, len(got), len(wantSel))
		}
	}
}

// TestListUnencodableItem: a stored value that cannot be decoded is a 500
// Status while nothing has been sent, and cuts the response off (never a
// short list that reads as whole) once a buffer's worth has gone out.
func TestListUnencodableItem(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, ms)
	pres := streamTestPods(t, ts, ms, 300)
	// Keys sort after the pods above: "p-~" > "p-00299"; "a-broken" sorts first.
	bad := []byte(`{"kind":"Pod","apiVersion":"v1","spec":{"containers":"not a list"}}`)
	for _, name := range []string{"a-broken", "p-~broken"} {
		if _, err := ms.Create(context.Background(), pres.Key("default", name), bad); err != nil {
			t.Fatal(err)
		}
	}

	// First item broken: nothing sent yet, so the client gets a Status.
	code, body, _ := ts.do(t, http.MethodGet, "/api/v1/namespaces/default/pods?limit=5", "", "")
	if code != http.StatusInternalServerError {
		t.Fatalf("first item broken: %d %.300s, want 500", code, body)
	}
	if st := decodeStatus(t, body); !strings.Contains(st.Message, "decode") {
		t.Fatalf("status message %q does not say what failed", st.Message)
	}

	// Broken item after the first buffer went out: the body is cut off.
	// The continue token starts the list after the first broken pod.
	cont := encodeContinue(ms.Revision(), pres.Key("default", "a-broken"), pres.KeyPrefix())
	req, err := http.NewRequest(http.MethodGet, ts.base+"/api/v1/namespaces/default/pods?continue="+cont, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, rerr := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("mid-stream failure: status %d, want the 200 already sent", resp.StatusCode)
	}
	if rerr == nil {
		var pl corev1.PodList
		if json.Unmarshal(data, &pl) == nil {
			t.Fatalf("a list with a broken item read as a whole list of %d items", len(pl.Items))
		}
		t.Fatalf("body read without error but is not JSON: the response was not aborted (%d bytes)", len(data))
	}
	if len(data) < listWriteBufSize {
		t.Fatalf("only %d bytes arrived before the abort; the test must fail after the first buffer", len(data))
	}
}

// TestListTableStreamedMatchesWholeTable: the Table streamed row by row
// has exactly the bytes of the Table built from all the objects at once,
// for each includeObject policy, in JSON and YAML.
func TestListTableStreamedMatchesWholeTable(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, ms)
	const n = 1000
	pres := streamTestPods(t, ts, ms, n)
	pods := storedPods(t, ts, ms, pres)
	objs := make([]runtime.Object, len(pods))
	for i := range pods {
		objs[i] = &pods[i]
	}
	const accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
	for _, q := range []string{"", "?includeObject=Object", "?includeObject=None"} {
		path := "/api/v1/namespaces/default/pods" + q
		code, body, _ := ts.do(t, http.MethodGet, path, "", "", "Accept", accept)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %.300s", path, code, body)
		}
		whole, err := ts.toTable(httptest.NewRequest(http.MethodGet, path, nil), pres, objs, metav1.ListMeta{ResourceVersion: fmt.Sprint(ms.Revision())}, true)
		if err != nil {
			t.Fatal(err)
		}
		want, err := encodeJSON(whole)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		if len(want) < 2*listWriteBufSize {
			t.Fatalf("table of %d bytes is too small to stream through more than one buffer", len(want))
		}
		if !bytes.Equal(body, want) {
			i := 0
			for i < len(body) && i < len(want) && body[i] == want[i] {
				i++
			}
			t.Fatalf("%s: streamed table differs from the whole table at byte %d of %d/%d:\n got %.120s\nwant %.120s", path, i, len(body), len(want), body[max(0, i-40):], want[max(0, i-40):])
		}
		code, ybody, _ := ts.do(t, http.MethodGet, path, "", "", "Accept", "application/yaml;as=Table;v=v1;g=meta.k8s.io")
		wantY, _ := yaml.JSONToYAML(want)
		if code != http.StatusOK || !bytes.Equal(ybody, wantY) {
			t.Fatalf("%s: yaml table: %d, %d bytes, want %d", path, code, len(ybody), len(wantY))
		}
	}
	code, body, _ := ts.do(t, http.MethodGet, "/api/v1/namespaces/default/pods?includeObject=Everything", "", "", "Accept", accept)
	if code != http.StatusBadRequest {
		t.Fatalf("bad includeObject: %d %.200s, want 400", code, body)
	}
}

// TestWatchInitialEventsFromStore: a watch from "now" (resourceVersion 0,
// or sendInitialEvents) starts with one ADDED event per stored object,
// equal to it, in each format: typed JSON, metadata-only JSON and protobuf,
// with a label selector, and as Table rows.
func TestWatchInitialEventsFromStore(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, ms)
	const n = 300
	pres := streamTestPods(t, ts, ms, n)
	want := storedPods(t, ts, ms, pres)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// collect reads the initial ADDED events, up to the initial-events-end
	// bookmark when asked for, else up to count.
	collect := func(w watch.Interface, count int, untilBookmark bool) []runtime.Object {
		t.Helper()
		defer w.Stop()
		var out []runtime.Object
		for untilBookmark || len(out) < count {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatalf("watch closed after %d events", len(out))
				}
				switch ev.Type {
				case watch.Added:
					out = append(out, ev.Object)
				case watch.Bookmark:
					m, err := meta.Accessor(ev.Object)
					if err != nil {
						t.Fatal(err)
					}
					if untilBookmark && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
						if m.GetResourceVersion() != fmt.Sprint(ms.Revision()) {
							t.Fatalf("initial-events-end bookmark at %s, store at %d", m.GetResourceVersion(), ms.Revision())
						}
						return out
					}
				default:
					t.Fatalf("initial event %s", ev.Type)
				}
			case <-ctx.Done():
				t.Fatalf("%d initial events of %d", len(out), count)
			}
		}
		return out
	}
	pods := ts.cs.CoreV1().Pods("default")
	for _, opts := range []metav1.ListOptions{
		{ResourceVersion: "0"},
		{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan},
	} {
		w, err := pods.Watch(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		got := collect(w, n, opts.SendInitialEvents != nil)
		if len(got) != n {
			t.Fatalf("%+v: %d initial events, want %d", opts, len(got), n)
		}
		for i, o := range got {
			if !samePod(o.(*corev1.Pod), &want[i]) {
				t.Fatalf("%+v: event %d differs from the stored pod %s:\n got %+v\nwant %+v", opts, i, want[i].Name, o, &want[i])
			}
		}
	}

	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: "0", LabelSelector: "i=3"})
	if err != nil {
		t.Fatal(err)
	}
	var wantSel []corev1.Pod
	for _, p := range want {
		if p.Labels["i"] == "3" {
			wantSel = append(wantSel, p)
		}
	}
	for i, o := range collect(w, len(wantSel), false) {
		if !samePod(o.(*corev1.Pod), &wantSel[i]) {
			t.Fatalf("selector: event %d is %s, want %s", i, o.(*corev1.Pod).Name, wantSel[i].Name)
		}
	}

	// Metadata only: client-go's metadata client asks for protobuf first;
	// a JSON-only config gets JSON.
	for _, ctype := range []string{"", "application/json"} {
		cfg := ts.RESTConfig()
		cfg.AcceptContentTypes = ctype
		mc, err := metadata.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		w, err := mc.Resource(corev1.SchemeGroupVersion.WithResource("pods")).Namespace("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range collect(w, n, false) {
			pm := o.(*metav1.PartialObjectMetadata)
			if !equality.Semantic.DeepEqual(pm.ObjectMeta, want[i].ObjectMeta) {
				t.Fatalf("metadata watch %q: event %d: %+v, want %+v", ctype, i, pm.ObjectMeta, want[i].ObjectMeta)
			}
		}
	}

	// Table rows, as kubectl get -w asks for them.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.base+"/api/v1/namespaces/default/pods?watch=true&resourceVersion=0&timeoutSeconds=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for i := 0; i < n; i++ {
		var ev struct {
			Type   string
			Object metav1.Table
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("table event %d: %v", i, err)
		}
		if ev.Type != "ADDED" || len(ev.Object.Rows) != 1 || ev.Object.Rows[0].Cells[0] != want[i].Name {
			t.Fatalf("table event %d: %s %+v, want the row of %s", i, ev.Type, ev.Object.Rows, want[i].Name)
		}
	}
}

// samePod compares pods but for their TypeMeta, which client-go's typed
// watch decoder clears.
func samePod(got, want *corev1.Pod) bool {
	g, w := *got, *want
	g.TypeMeta, w.TypeMeta = metav1.TypeMeta{}, metav1.TypeMeta{}
	return equality.Semantic.DeepEqual(g, w)
}
