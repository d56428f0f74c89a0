package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/test/e2e/harness"
)

const validConfigMap = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"good","labels":{"a":"b"}},"data":{"k":"v"}}`
const validPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":80}]}]}}`

// TestBadInputGetsStatus sends malformed and hostile requests over raw HTTPS
// and checks each gets a metav1.Status with the right 4xx code — never a 5xx,
// never a hung connection (the client has a 15 s timeout).
func TestBadInputGetsStatus(t *testing.T) {
	srv := startServer(t)
	c, token, err := srv.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + srv.Addr
	cms := base + "/api/v1/namespaces/default/configmaps"
	big := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":"%s"}}`, strings.Repeat("x", 10<<20))

	cases := []struct {
		name        string
		method, url string
		noToken     bool
		token       string
		ctype       string
		body        string
		want        int
	}{
		{"malformed JSON", "POST", cms, false, "", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":`, 400},
		{"JSON array", "POST", cms, false, "", "application/json", `[1,2,3]`, 400},
		{"empty body", "POST", cms, false, "", "application/json", ``, 400},
		{"wrong kind", "POST", cms, false, "", "application/json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`, 400},
		{"wrong apiVersion", "POST", cms, false, "", "application/json", `{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}`, 400},
		{"malformed YAML", "POST", cms, false, "", "application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [name: x\n", 400},
		{"unknown resource", "GET", base + "/api/v1/namespaces/default/widgets", false, "", "", "", 404},
		{"unknown group", "GET", base + "/apis/nosuch.example.com/v1/things", false, "", "", "", 404},
		{"oversized body", "POST", cms, false, "", "application/json", big, 413},
		{"no token", "GET", cms, true, "", "", "", 401},
		{"bad token", "GET", cms, false, "not-the-token", "", "", 401},
		{"invalid name", "POST", cms, false, "", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}`, 422},
		{"name too long", "POST", cms, false, "", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + strings.Repeat("a", 300) + `"}}`, 422},
		{"no name", "POST", cms, false, "", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}`, 422},
		{"pod without containers", "POST", base + "/api/v1/namespaces/default/pods", false, "", "application/json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"empty"},"spec":{}}`, 422},
		{"missing namespace", "POST", base + "/api/v1/namespaces/nope/configmaps", false, "", "application/json", validConfigMap, 404},
		{"get missing object", "GET", cms + "/nothing-here", false, "", "", "", 404},
		{"delete missing object", "DELETE", cms + "/nothing-here", false, "", "", "", 404},
		{"bad label selector", "GET", cms + "?labelSelector=a%20in%20(", false, "", "", "", 400},
		{"patch with unsupported content type", "PATCH", cms + "/nothing-here", false, "", "text/plain", `{}`, 415},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := token
			if tc.noToken {
				tok = ""
			} else if tc.token != "" {
				tok = tc.token
			}
			var body []byte
			if tc.method == "POST" || tc.method == "PUT" || tc.method == "PATCH" {
				body = []byte(tc.body)
			}
			code, resp, err := harness.Do(context.Background(), c, tok, tc.method, tc.url, tc.ctype, body)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.url, err)
			}
			checkStatus(t, code, resp, tc.want)
		})
	}

	// A malformed patch on an object that exists, for each patch type.
	code, resp, err := harness.Do(context.Background(), c, token, "POST", cms, "application/json", []byte(validConfigMap))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create configmap good: %d %v %s", code, err, resp)
	}
	t.Run("name mismatch on update", func(t *testing.T) {
		body := strings.Replace(validConfigMap, `"name":"good"`, `"name":"other"`, 1)
		code, resp, err := harness.Do(context.Background(), c, token, "PUT", cms+"/good", "application/json", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		checkStatus(t, code, resp, 400)
	})
	for _, ct := range []string{"application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"} {
		t.Run("malformed patch "+ct, func(t *testing.T) {
			code, resp, err := harness.Do(context.Background(), c, token, "PATCH", cms+"/good", ct, []byte(`{"data":`))
			if err != nil {
				t.Fatal(err)
			}
			checkStatus(t, code, resp, 400)
		})
	}
	t.Run("json patch on a missing path", func(t *testing.T) {
		code, resp, err := harness.Do(context.Background(), c, token, "PATCH", cms+"/good", "application/json-patch+json", []byte(`[{"op":"replace","path":"/spec/x/y","value":1}]`))
		if err != nil {
			t.Fatal(err)
		}
		if code < 400 || code >= 500 {
			t.Errorf("json patch on a missing path: %d %s, want a 4xx", code, resp)
		}
	})
}

// checkStatus asserts a metav1.Status error response with the wanted code.
func checkStatus(t *testing.T, code int, body []byte, want int) {
	t.Helper()
	if code >= 500 {
		t.Errorf("server error %d for bad input: %s", code, trim(body))
	}
	if code != want {
		t.Errorf("HTTP %d, want %d: %s", code, want, trim(body))
	}
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Errorf("HTTP %d body is not a JSON metav1.Status: %v: %s", code, err, trim(body))
		return
	}
	if st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure || int(st.Code) != code {
		t.Errorf("HTTP %d Status: kind %q apiVersion %q status %q code %d reason %q message %q", code, st.Kind, st.APIVersion, st.Status, st.Code, st.Reason, st.Message)
	}
	if st.Message == "" {
		t.Errorf("HTTP %d Status has no message", code)
	}
}

func trim(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "…"
	}
	return string(b)
}

// TestMutatedBodiesNever5xx posts a bounded number of randomly damaged
// configmap and pod bodies (flipped, dropped and duplicated bytes,
// truncation) and checks no answer is a 5xx and every error is a Status. The
// seed is fixed, so a failure reproduces.
func TestMutatedBodiesNever5xx(t *testing.T) {
	srv := startServer(t)
	c, token, err := srv.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + srv.Addr + "/api/v1/namespaces/default/"
	rng := rand.New(rand.NewPCG(2, 7))
	seeds := []struct{ url, body string }{{base + "configmaps", validConfigMap}, {base + "pods", validPod}}
	const rounds = 400
	counts := map[int]int{}
	for i := 0; i < rounds; i++ {
		s := seeds[i%len(seeds)]
		body := mutate(rng, []byte(s.body))
		code, resp, err := harness.Do(context.Background(), c, token, "POST", s.url, "application/json", body)
		if err != nil {
			t.Fatalf("round %d: POST %q: %v", i, body, err)
		}
		counts[code]++
		if code >= 500 {
			t.Errorf("round %d: HTTP %d for body %q: %s", i, code, body, trim(resp))
			continue
		}
		if code >= 400 {
			var st metav1.Status
			if err := json.Unmarshal(resp, &st); err != nil || st.Kind != "Status" || int(st.Code) != code {
				t.Errorf("round %d: HTTP %d without a matching Status for body %q: %s", i, code, body, trim(resp))
			}
		}
		// Objects that did get created are removed so names can repeat.
		if code == http.StatusCreated {
			var m struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if json.Unmarshal(resp, &m) == nil && m.Metadata.Name != "" {
				res := strings.ToLower(m.Kind) + "s"
				_, _, _ = harness.Do(context.Background(), c, token, "DELETE", base+res+"/"+m.Metadata.Name+"?gracePeriodSeconds=0", "", nil)
			}
		}
	}
	t.Logf("answers to %d damaged bodies by HTTP code: %v", rounds, counts)
	if _, err := srv.WaitReady(5 * time.Second); err != nil {
		t.Errorf("server not ready after the damaged bodies: %v", err)
	}
}

func mutate(rng *rand.Rand, b []byte) []byte {
	b = bytes.Clone(b)
	for n := 1 + rng.IntN(4); n > 0 && len(b) > 0; n-- {
		i := rng.IntN(len(b))
		switch rng.IntN(5) {
		case 0: // flip to a random printable byte or a JSON metacharacter
			const meta = `{}[]":,\0123456789ntfe-.`
			if rng.IntN(2) == 0 {
				b[i] = meta[rng.IntN(len(meta))]
			} else {
				b[i] = byte(rng.IntN(256))
			}
		case 1: // drop a byte
			b = append(b[:i], b[i+1:]...)
		case 2: // duplicate a span
			j := min(len(b), i+1+rng.IntN(16))
			b = append(b[:j], append(bytes.Clone(b[i:j]), b[j:]...)...)
		case 3: // truncate
			b = b[:i]
		case 4: // insert a deep nesting
			b = append(b[:i], append(bytes.Repeat([]byte("["), 1+rng.IntN(2000)), b[i:]...)...)
		}
	}
	return b
}
