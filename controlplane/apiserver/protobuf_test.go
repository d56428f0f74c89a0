package apiserver

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestProtobufResponses: a client that prefers protobuf (typed client-go
// clients) gets single objects as protobuf, which decode to the object the
// server stored; lists stay JSON; a JSON client still gets JSON.
func TestProtobufResponses(t *testing.T) {
	ts := startServer(t, nil)
	const accept = "application/vnd.kubernetes.protobuf,application/json"
	body := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"pb"},"data":{"k":"v"}}`
	code, data, hdr := ts.do(t, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body, "Accept", accept)
	if code != 201 || hdr.Get("Content-Type") != "application/vnd.kubernetes.protobuf" {
		t.Fatalf("create: %d %s %q", code, hdr.Get("Content-Type"), data)
	}
	obj, gvk, err := protobufSerializer.Decode(data, nil, &corev1.ConfigMap{})
	if err != nil {
		t.Fatalf("decode protobuf response: %v", err)
	}
	cm := obj.(*corev1.ConfigMap)
	if gvk.Kind != "ConfigMap" || cm.Name != "pb" || cm.Data["k"] != "v" || cm.UID == "" || cm.ResourceVersion == "" || cm.CreationTimestamp.IsZero() {
		t.Errorf("create answered %v %+v", gvk, cm)
	}
	code, data, hdr = ts.do(t, "GET", "/api/v1/namespaces/default/configmaps/pb", "", "", "Accept", accept)
	if code != 200 || hdr.Get("Content-Type") != "application/vnd.kubernetes.protobuf" {
		t.Fatalf("get: %d %s", code, hdr.Get("Content-Type"))
	}
	got, _, err := protobufSerializer.Decode(data, nil, &corev1.ConfigMap{})
	if err != nil || got.(*corev1.ConfigMap).ResourceVersion != cm.ResourceVersion || got.(*corev1.ConfigMap).UID != cm.UID {
		t.Errorf("get answered %+v (%v), want %+v", got, err, cm)
	}
	if code, _, hdr := ts.do(t, "GET", "/api/v1/namespaces/default/configmaps", "", "", "Accept", accept); code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("list: %d %s, want JSON", code, hdr.Get("Content-Type"))
	}
	if code, _, hdr := ts.do(t, "GET", "/api/v1/namespaces/default/configmaps/pb", "", "", "Accept", "application/json"); code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("get as JSON: %d %s", code, hdr.Get("Content-Type"))
	}
	// Errors stay JSON Status, which client-go decodes whatever it asked for.
	if code, _, hdr := ts.do(t, "GET", "/api/v1/namespaces/default/configmaps/missing", "", "", "Accept", accept); code != 404 || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("missing: %d %s", code, hdr.Get("Content-Type"))
	}
}
