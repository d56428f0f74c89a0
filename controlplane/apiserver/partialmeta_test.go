package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"

	"github.com/skep-dev/skep/controlplane/store"
)

// TestPartialMetaJSONMatchesDecodePath: the PartialObjectMetadata cut from
// the stored bytes carries the decoded object's whole metadata, for
// metadata with strings that hold braces, brackets, quotes and escapes.
func TestPartialMetaJSONMatchesDecodePath(t *testing.T) {
	reg := testTable()
	res := reg.Lookup(corev1.SchemeGroupVersion.WithResource("configmaps"))
	if res == nil {
		t.Fatal("no configmaps resource")
	}
	ts := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	ctrl := true
	cases := map[string]*corev1.ConfigMap{
		"bare": {ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "default"}},
		"full": {
			ObjectMeta: metav1.ObjectMeta{
				Name: "b", Namespace: "ns", UID: "u-1", Generation: 3, CreationTimestamp: ts, DeletionTimestamp: &ts,
				Labels:          map[string]string{"app": "x}", "q": `"{[`},
				Annotations:     map[string]string{"note": `a \"quoted\" } ] brace\\`, "u": "é\u2028"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "u-0", Controller: &ctrl}},
				Finalizers:      []string{"example.com/f"},
				ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:data":{".":{}}}`)}}},
			},
			Data: map[string]string{"k": `}}}]]"`},
		},
	}
	for name, cm := range cases {
		t.Run(name, func(t *testing.T) {
			value, err := encodeForStore(res, cm)
			if err != nil {
				t.Fatal(err)
			}
			kv := store.KV{Key: res.Key(cm.Namespace, cm.Name), Value: value, ModRevision: 42}
			obj, err := s0.decodeKV(res, kv)
			if err != nil {
				t.Fatal(err)
			}
			// The whole metadata, managedFields included, as the real API
			// server answers it.
			want := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: obj.(*corev1.ConfigMap).ObjectMeta}
			js := partialMetaJSON(value, 42)
			if js == nil {
				t.Fatalf("fast path refused stored bytes %s", value)
			}
			var got metav1.PartialObjectMetadata
			if err := json.Unmarshal(js, &got); err != nil {
				t.Fatalf("fast path wrote invalid JSON %s: %v", js, err)
			}
			if !equality.Semantic.DeepEqual(*want, got) {
				t.Fatalf("fast path differs:\n got  %+v\n want %+v", got, *want)
			}
			if got.ResourceVersion != "42" {
				t.Fatalf("resourceVersion %q, want 42", got.ResourceVersion)
			}
		})
	}
	if partialMetaJSON([]byte(`{"kind":"ConfigMap","metadata":{"name":"x"`), 1) != nil {
		t.Fatal("unterminated metadata accepted")
	}
	if partialMetaJSON([]byte(`{"data":{}}`), 1) != nil {
		t.Fatal("bytes without metadata accepted")
	}
}

// s0 is a zero Server: decodeKV uses no server state.
var s0 = &Server{}

// BenchmarkPartialMetaEvent: the cost of one metadata-only watch event of a
// configmap, from the stored bytes (path=bytes) and by decoding the object
// (path=decode, as every event took before).
func BenchmarkPartialMetaEvent(b *testing.B) {
	reg := testTable()
	res := reg.Lookup(corev1.SchemeGroupVersion.WithResource("configmaps"))
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cm-1", Namespace: "default", UID: "0d3c4f5e-1111-2222-3333-444455556666", CreationTimestamp: metav1.Now(), Labels: map[string]string{"app": "bench"}},
		Data:       map[string]string{"key": strings.Repeat("v", 512)},
	}
	value, err := encodeForStore(res, cm)
	if err != nil {
		b.Fatal(err)
	}
	kv := store.KV{Key: res.Key("default", "cm-1"), Value: value, ModRevision: 7}
	b.Run("path=bytes", func(b *testing.B) {
		for b.Loop() {
			if partialMetaJSON(kv.Value, kv.ModRevision) == nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("path=decode", func(b *testing.B) {
		for b.Loop() {
			obj, err := s0.decodeKV(res, kv)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := json.Marshal(partialMeta(obj)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestMetadataWatchProtobuf: client-go's metadata client gets its watches
// as protobuf streams, with ADDED, MODIFIED, DELETED events carrying the
// whole metadata, a selector-filtered watch and initial events too.
func TestMetadataWatchProtobuf(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cfg := ts.RESTConfig()
	var ctypes []string
	var ctMu sync.Mutex
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && r.URL.Query().Get("watch") == "true" {
				ctMu.Lock()
				ctypes = append(ctypes, resp.Header.Get("Content-Type"))
				ctMu.Unlock()
			}
			return resp, err
		})
	})
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gvr := corev1.SchemeGroupVersion.WithResource("configmaps")
	cms := ts.cs.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c0"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	all, err := mc.Resource(gvr).Namespace("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "0", AllowWatchBookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Stop()
	sel, err := mc.Resource(gvr).Namespace("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "0", LabelSelector: "app=x"})
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Stop()
	next := func(w watch.Interface) (watch.EventType, *metav1.PartialObjectMetadata) {
		t.Helper()
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("watch closed")
				}
				if ev.Type == watch.Bookmark {
					continue
				}
				pm, ok := ev.Object.(*metav1.PartialObjectMetadata)
				if !ok {
					t.Fatalf("event %s object %T", ev.Type, ev.Object)
				}
				return ev.Type, pm
			case <-ctx.Done():
				t.Fatal("no watch event")
			}
		}
	}
	if typ, pm := next(all); typ != watch.Added || pm.Name != "c0" || pm.ResourceVersion == "" {
		t.Fatalf("initial event %s %+v", typ, pm)
	}
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c1", Labels: map[string]string{"app": "x"}, Annotations: map[string]string{"a": `{"}`}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	typ, pm := next(all)
	if typ != watch.Added || pm.Name != "c1" || pm.UID != cm.UID || pm.ResourceVersion != cm.ResourceVersion || pm.Annotations["a"] != `{"}` || pm.Labels["app"] != "x" {
		t.Fatalf("ADDED %s %+v, created %+v", typ, pm, cm.ObjectMeta)
	}
	if typ, pm := next(sel); typ != watch.Added || pm.Name != "c1" {
		t.Fatalf("selector ADDED %s %+v", typ, pm)
	}
	cm.Labels = map[string]string{"app": "y"}
	if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if typ, pm := next(all); typ != watch.Modified || pm.Labels["app"] != "y" || pm.ResourceVersion != cm.ResourceVersion {
		t.Fatalf("MODIFIED %s %+v", typ, pm)
	}
	if typ, pm := next(sel); typ != watch.Deleted || pm.Name != "c1" {
		t.Fatalf("selector: label change should be DELETED, got %s %+v", typ, pm)
	}
	if err := cms.Delete(ctx, "c1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if typ, pm := next(all); typ != watch.Deleted || pm.Name != "c1" {
		t.Fatalf("DELETED %s %+v", typ, pm)
	}
	ctMu.Lock()
	defer ctMu.Unlock()
	if len(ctypes) != 2 {
		t.Fatalf("saw %d watch responses, want 2", len(ctypes))
	}
	for _, ct := range ctypes {
		if ct != "application/vnd.kubernetes.protobuf;stream=watch" {
			t.Fatalf("watch content type %q, want protobuf stream", ct)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
