package apiserver

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// TestUpdateNameMismatchOnMissingObject: the body's name is checked
// against the URL before storage, so a PUT naming another object is 400
// whether or not the URL's object exists (404 would hide the client's bug).
func TestUpdateNameMismatchOnMissingObject(t *testing.T) {
	ts := startServer(t, nil)
	body := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"good"},"data":{"k":"v"}}`
	code, data, _ := ts.do(t, "PUT", "/api/v1/namespaces/default/configmaps/other", "application/json", body)
	if code != 400 {
		t.Fatalf("PUT with mismatched name on a missing object: %d %s, want 400", code, data)
	}
	st := decodeStatus(t, data)
	if st.Reason != "BadRequest" || st.Message != "the name of the object (good) does not match the name on the URL (other)" {
		t.Errorf("status = %s %q", st.Reason, st.Message)
	}
	body = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other","namespace":"kube-system"}}`
	if code, data, _ := ts.do(t, "PUT", "/api/v1/namespaces/default/configmaps/other", "application/json", body); code != 400 {
		t.Errorf("PUT with mismatched namespace on a missing object: %d %s, want 400", code, data)
	}
	// A matching name on a missing object is still 404.
	body = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}`
	if code, data, _ := ts.do(t, "PUT", "/api/v1/namespaces/default/configmaps/other", "application/json", body); code != 404 {
		t.Errorf("PUT of a missing object: %d %s, want 404", code, data)
	}
}

// TestDataSizeLimits: configmaps and secrets hold at most 1 MiB of data in
// total (upstream's MaxSecretSize); more is 422 Invalid, on create and update.
func TestDataSizeLimits(t *testing.T) {
	ts := startServer(t, nil)
	obj := func(kind, name string, total int) string {
		half := strings.Repeat("x", total/2)
		rest := strings.Repeat("y", total-total/2)
		var m map[string]any
		if kind == "Secret" {
			m = map[string]any{"apiVersion": "v1", "kind": kind, "metadata": map[string]any{"name": name},
				"data": map[string]string{"a": base64.StdEncoding.EncodeToString([]byte(half)), "b": base64.StdEncoding.EncodeToString([]byte(rest))}}
		} else {
			m = map[string]any{"apiVersion": "v1", "kind": kind, "metadata": map[string]any{"name": name},
				"data": map[string]string{"a": half}, "binaryData": map[string]string{"b": base64.StdEncoding.EncodeToString([]byte(rest))}}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct{ kind, path, field string }{
		{"ConfigMap", "/api/v1/namespaces/default/configmaps", "[]"},
		{"Secret", "/api/v1/namespaces/default/secrets", "data"},
	} {
		if code, data, _ := ts.do(t, "POST", tc.path, "application/json", obj(tc.kind, "max", 1<<20)); code != 201 {
			t.Errorf("%s of exactly 1 MiB: %d %.300s, want 201", tc.kind, code, data)
		}
		code, data, _ := ts.do(t, "POST", tc.path, "application/json", obj(tc.kind, "over", 1<<20+1))
		if code != 422 {
			t.Fatalf("%s of 1 MiB + 1: %d %.300s, want 422", tc.kind, code, data)
		}
		st := decodeStatus(t, data)
		if st.Reason != "Invalid" || !strings.Contains(st.Message, "Too long: may not be more than 1048576 bytes") ||
			st.Details == nil || len(st.Details.Causes) == 0 || st.Details.Causes[0].Field != tc.field {
			t.Errorf("%s of 1 MiB + 1: %s %q %+v", tc.kind, st.Reason, st.Message, st.Details)
		}
		// Growing the stored object past the limit is refused too.
		if code, data, _ := ts.do(t, "PUT", tc.path+"/max", "application/json", obj(tc.kind, "max", 1<<20+2)); code != 422 {
			t.Errorf("%s update past 1 MiB: %d %.300s, want 422", tc.kind, code, data)
		}
	}
}
