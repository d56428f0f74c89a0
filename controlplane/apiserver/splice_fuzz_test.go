package apiserver

import (
	"bytes"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/store"
)

// FuzzStoredJSONSplice: lists and watches answer stored objects by splicing
// bytes (the resourceVersion into the object, the metadata cut out as a
// PartialObjectMetadata) instead of decoding them. For any object the store
// can hold, whatever its strings, the spliced bytes must decode to what the
// decoding path answers, and the streaming writers must write the same
// bytes as the functions that return them.
//
// go test -run '^$' -fuzz FuzzStoredJSONSplice ./controlplane/apiserver
func FuzzStoredJSONSplice(f *testing.F) {
	f.Add("a", "app", "web", `}]"{[\`, "x", int64(0), int64(1))
	f.Add("b-1", `"metadata":{`, `{"kind":"x"}`, "é\u2028\x00", `"resourceVersion":"9"`, int64(3), int64(1<<40))
	f.Add("", "", "", "", "", int64(-1), int64(0))
	res := testTable().Lookup(corev1.SchemeGroupVersion.WithResource("configmaps"))
	f.Fuzz(func(t *testing.T, name, key, value, note, data string, generation, rev int64) {
		if rev < 0 {
			rev = -rev
		}
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(note), Generation: generation,
				Labels: map[string]string{key: value}, Annotations: map[string]string{note: data}, Finalizers: []string{value}},
			Data: map[string]string{key: data},
		}
		stored, err := encodeForStore(res, cm)
		if err != nil {
			t.Skip("not encodable") // invalid UTF-8 is replaced, never an error; kept for safety
		}
		kv := store.KV{Key: res.Key("default", name), Value: stored, ModRevision: rev}
		want, err := s0.decodeKV(res, kv)
		if err != nil {
			t.Fatalf("stored bytes do not decode: %v", err)
		}

		js := withResourceVersion(stored, rev)
		if js == nil {
			t.Fatalf("stored bytes %q not in the store's shape", stored)
		}
		got := &corev1.ConfigMap{}
		if err := json.Unmarshal(js, got); err != nil {
			t.Fatalf("spliced object %q: %v", js, err)
		}
		if !registry.EqualSemantic(got, want) {
			t.Fatalf("spliced object differs from the decoded one:\n%s\nwant %+v", js, want)
		}
		var buf bytes.Buffer
		if ok, err := writeWithResourceVersion(&buf, stored, rev, make([]byte, 24)); !ok || err != nil || !bytes.Equal(buf.Bytes(), js) {
			t.Fatalf("streamed splice %q (%v, %v), want %q", buf.Bytes(), ok, err, js)
		}

		pm := partialMetaJSON(stored, rev)
		if pm == nil {
			t.Fatalf("no metadata cut from %q", stored)
		}
		gotPM := &metav1.PartialObjectMetadata{}
		if err := json.Unmarshal(pm, gotPM); err != nil {
			t.Fatalf("cut metadata %q: %v", pm, err)
		}
		if wantPM := partialMeta(want); !registry.EqualSemantic(gotPM, wantPM) {
			t.Fatalf("cut metadata differs from the decoded object's:\n%s\nwant %+v", pm, wantPM)
		}
		buf.Reset()
		if ok, err := writePartialMeta(&buf, stored, rev, make([]byte, 24)); !ok || err != nil || !bytes.Equal(buf.Bytes(), pm) {
			t.Fatalf("streamed metadata %q (%v, %v), want %q", buf.Bytes(), ok, err, pm)
		}
	})
}

// FuzzSpliceArbitraryBytes: bytes the store did not write (a corrupt
// record, another writer) never make the splicers panic or read out of
// bounds; they either decline (nil, false) or answer.
func FuzzSpliceArbitraryBytes(f *testing.F) {
	f.Add([]byte(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"}}`))
	f.Add([]byte(`{"kind":"ConfigMap","metadata":{"name":"a\"}`))
	f.Add([]byte(`{"kind":"X","metadata":{}`))
	f.Add([]byte(`{"kind":"X","metadata":{"a":[{"b":"\\"}]}}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		var buf bytes.Buffer
		js := withResourceVersion(value, 7)
		ok, _ := writeWithResourceVersion(&buf, value, 7, make([]byte, 24))
		if ok != (js != nil) || (ok && !bytes.Equal(buf.Bytes(), js)) {
			t.Fatalf("writer and splicer disagree on %q", value)
		}
		buf.Reset()
		pm := partialMetaJSON(value, 7)
		ok, _ = writePartialMeta(&buf, value, 7, make([]byte, 24))
		if ok != (pm != nil) || (ok && !bytes.Equal(buf.Bytes(), pm)) {
			t.Fatalf("metadata writer and cutter disagree on %q", value)
		}
		if pm != nil && json.Valid(value) && !json.Valid(pm) {
			t.Fatalf("metadata cut from valid JSON %q is not JSON: %q", value, pm)
		}
	})
}
