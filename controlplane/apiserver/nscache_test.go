package apiserver

import "testing"

// TestCreateInTerminatingNamespaceAfterCache: the namespace state cached
// by a create is not reused once the namespace changes, so content is
// refused as soon as it terminates.
func TestCreateInTerminatingNamespaceAfterCache(t *testing.T) {
	ts := startServer(t, nil)
	cm := func(name string) string {
		return `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + name + `"}}`
	}
	if code, data, _ := ts.do(t, "POST", "/api/v1/namespaces", "application/json", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"t1"}}`); code != 201 {
		t.Fatalf("create namespace: %d %s", code, data)
	}
	if code, data, _ := ts.do(t, "POST", "/api/v1/namespaces/t1/configmaps", "application/json", cm("a")); code != 201 {
		t.Fatalf("create in live namespace: %d %s", code, data)
	}
	// No namespace controller here: the namespace stays Terminating.
	if code, data, _ := ts.do(t, "DELETE", "/api/v1/namespaces/t1", "", ""); code != 200 && code != 202 {
		t.Fatalf("delete namespace: %d %s", code, data)
	}
	code, data, _ := ts.do(t, "POST", "/api/v1/namespaces/t1/configmaps", "application/json", cm("b"))
	if code != 403 {
		t.Fatalf("create in terminating namespace: %d %s, want 403", code, data)
	}
	if st := decodeStatus(t, data); st.Reason != "Forbidden" {
		t.Errorf("reason %s", st.Reason)
	}
}
