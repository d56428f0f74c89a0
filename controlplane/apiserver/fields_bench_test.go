package apiserver

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/test/e2e/harness"
)

// BenchmarkTrackFields: what recording a create's manager costs the server,
// for the apibench ConfigMap and a Deployment (CPU per op, alone).
// Run: go test -run '^$' -bench TrackFields ./controlplane/apiserver
func BenchmarkTrackFields(b *testing.B) {
	srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", Logger: testutil.QuietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		name string
		gvr  schema.GroupVersionResource
		obj  func() runtime.Object
	}{
		{"configmap", corev1.SchemeGroupVersion.WithResource("configmaps"), func() runtime.Object { return harness.ConfigMap("default", "x") }},
		{"deployment", appsv1.SchemeGroupVersion.WithResource("deployments"), func() runtime.Object { return testDeployment("x") }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			res := srv.reg.Lookup(tc.gvr)
			if _, err := srv.trackFields(res, "", res.New(), tc.obj(), "warm"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := srv.trackFields(res, "", res.New(), tc.obj(), "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
