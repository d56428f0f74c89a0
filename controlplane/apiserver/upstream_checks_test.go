package apiserver

import (
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
