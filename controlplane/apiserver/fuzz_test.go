package apiserver

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/internal/testutil"
)

// fuzzTarget is one request shape the decoder fuzz drives.
type fuzzTarget struct {
	method, path, ctype string
}

var fuzzTargets = []fuzzTarget{
	{"POST", "/api/v1/namespaces/default/configmaps", "application/json"},
	{"POST", "/api/v1/namespaces/default/pods?fieldValidation=Strict", "application/json"},
	{"POST", "/apis/apps/v1/namespaces/default/deployments", "application/yaml"},
	{"POST", "/api/v1/namespaces/default/services?fieldValidation=Strict", "application/yaml"},
	{"POST", "/api/v1/namespaces/default/secrets", "application/vnd.kubernetes.protobuf"},
	{"PUT", "/apis/apps/v1/namespaces/default/deployments/fuzz", "application/json"},
	{"PATCH", "/apis/apps/v1/namespaces/default/deployments/fuzz", "application/strategic-merge-patch+json"},
	{"PATCH", "/apis/apps/v1/namespaces/default/deployments/fuzz", "application/merge-patch+json"},
	{"PATCH", "/apis/apps/v1/namespaces/default/deployments/fuzz?fieldValidation=Strict", "application/json-patch+json"},
	{"PATCH", "/apis/apps/v1/namespaces/default/deployments/fuzz/scale", "application/merge-patch+json"},
	{"POST", "/api/v1/namespaces/default/pods/fuzz/binding", "application/json"},
	{"DELETE", "/api/v1/namespaces/default/configmaps", "application/json"},
}

var fuzzSeeds = []string{
	`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"p-"},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
	"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      containers: [{name: c, image: i}]\n",
	"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n",
	"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x0e\n\x0c\n\x01s\x12\x00\x1a\x00\"\x00",
	`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"j"}]}}}}`,
	`{"spec":{"replicas":3},"metadata":{"labels":{"x":null}}}`,
	`[{"op":"replace","path":"/spec/replicas","value":2},{"op":"add","path":"/metadata/labels/z","value":"q"}]`,
	`{"apiVersion":"v1","kind":"Binding","metadata":{"name":"fuzz"},"target":{"kind":"Node","name":"n"}}`,
	`{"apiVersion":"v1","kind":"DeleteOptions","gracePeriodSeconds":0,"propagationPolicy":"Foreground"}`,
	`{"metadata":{"name":"x","name":"y"},"spec":{"$patch":"replace"}}`,
	`{"spec":{"template":{"spec":{"containers":[{"$patch":"delete","name":"c"}]}}}}`,
	`{"a":1e999999}`, `null`, `[]`, `""`, "\xff\xfe", `{"apiVersion":1}`, "--- !!binary\n", "a: &a [*a]\n",
	`{"metadata":{"name":"Ünïcode"}}`, `{"spec":{"replicas":-1}}`, `{"spec":{"replicas":"x"}}`,
}

// newFuzzServer is an in-process server (no TLS) over the memory store with
// a deployment and a pod the update and patch targets refer to.
func newFuzzServer(tb testing.TB) (http.Handler, string) {
	srv, err := New(Config{DataDir: tb.TempDir(), Listen: "127.0.0.1:0", Store: newMemStore(),
		Logger: testutil.QuietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	h := srv.Handler()
	tok := srv.AdminToken()
	for _, setup := range []struct{ path, body string }{
		{"/apis/apps/v1/namespaces/default/deployments", `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"fuzz"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`},
		{"/api/v1/namespaces/default/pods", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"fuzz"},"spec":{"containers":[{"name":"c","image":"i"}]}}`},
	} {
		req := httptest.NewRequest("POST", setup.path, strings.NewReader(setup.body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 201 {
			tb.Fatalf("setup %s: %d %s", setup.path, rec.Code, rec.Body)
		}
	}
	return h, tok
}

// checkDecode sends one fuzzed request and checks the invariant: never a
// 5xx, and every error is a metav1.Status carrying its code.
func checkDecode(t testing.TB, h http.Handler, tok string, target uint8, body []byte) {
	ft := fuzzTargets[int(target)%len(fuzzTargets)]
	req := httptest.NewRequest(ft.method, ft.path, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", ft.ctype)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s (%s) %q: %d %s", ft.method, ft.path, ft.ctype, body, rec.Code, rec.Body)
	}
	if rec.Code >= 400 {
		var st metav1.Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" || int(st.Code) != rec.Code {
			t.Fatalf("%s %s %q: error is not a Status: %d %s", ft.method, ft.path, body, rec.Code, rec.Body)
		}
	}
}

// FuzzDecodeRequest fuzzes request decoding (JSON, YAML, protobuf bodies,
// the three patch types, delete options) through the whole handler.
// Run: go test -run '^$' -fuzz=FuzzDecodeRequest -fuzztime=20s ./controlplane/apiserver
func FuzzDecodeRequest(f *testing.F) {
	for i, s := range fuzzSeeds {
		for j := range fuzzTargets {
			if (i+j)%3 == 0 {
				f.Add(uint8(j), []byte(s))
			}
		}
	}
	h, tok := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, target uint8, body []byte) {
		checkDecode(t, h, tok, target, body)
	})
}

// TestFuzzDecodeSeeds runs the fuzz invariant over every seed against
// every target, then over a bounded number of random mutations.
func TestFuzzDecodeSeeds(t *testing.T) {
	h, tok := newFuzzServer(t)
	for _, s := range fuzzSeeds {
		for j := range fuzzTargets {
			checkDecode(t, h, tok, uint8(j), []byte(s))
		}
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for i := 0; i < 3000; i++ {
		b := []byte(fuzzSeeds[rng.IntN(len(fuzzSeeds))])
		for k := rng.IntN(4); k >= 0 && len(b) > 0; k-- {
			switch rng.IntN(3) {
			case 0:
				b[rng.IntN(len(b))] = byte(rng.IntN(256))
			case 1:
				p := rng.IntN(len(b))
				b = append(b[:p:p], b[p+1:]...)
			case 2:
				p := rng.IntN(len(b) + 1)
				b = append(b[:p:p], append([]byte{"{}[]\":,"[rng.IntN(7)]}, b[p:]...)...)
			}
		}
		checkDecode(t, h, tok, uint8(rng.IntN(256)), b)
	}
}
