package openapi

import (
	"encoding/json"
	"reflect"
	"runtime"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

func testKinds() []Kind {
	return []Kind{
		{GVK: corev1.SchemeGroupVersion.WithKind("Pod"), Plural: "pods", Namespaced: true, Type: reflect.TypeOf(&corev1.Pod{}), Subresources: []string{"status"}},
		{GVK: corev1.SchemeGroupVersion.WithKind("ConfigMap"), Plural: "configmaps", Namespaced: true, Type: reflect.TypeOf(&corev1.ConfigMap{})},
		{GVK: appsv1.SchemeGroupVersion.WithKind("Deployment"), Plural: "deployments", Namespaced: true, Type: reflect.TypeOf(&appsv1.Deployment{}), Subresources: []string{"status"}},
	}
}

func TestBuild(t *testing.T) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	t0 := time.Now()
	s := New(scheme.Scheme, testKinds(), "v1.34.2")
	tc, err := s.TypeConverter()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("type converter in %v", time.Since(t0))
	runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("heap +%d KB", (m1.HeapAlloc-m0.HeapAlloc)/1024)
	if _, err := tc.ObjectToTyped(&corev1.Pod{TypeMeta: metav1TypeMeta("v1", "Pod")}); err != nil {
		t.Fatal(err)
	}
	js, err := s.V3(appsv1.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	d, ok := schemas["io.k8s.api.apps.v1.Deployment"].(map[string]any)
	if !ok {
		t.Fatalf("no Deployment schema among %d", len(schemas))
	}
	if d["x-kubernetes-group-version-kind"] == nil || d["description"] == "" {
		t.Errorf("Deployment schema: %v", d)
	}
	pb, err := s.V2()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("v3 apps/v1 %d bytes, v2 %d bytes, %v", len(js), len(pb), time.Since(t0))
}

func metav1TypeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}
