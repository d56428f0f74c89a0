package apiserver

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkListPodsMem lists 10,000 pods written straight into a memory
// store: the API server's list cost without the disk.
// Run: go test -run '^$' -bench ListPodsMem ./controlplane/apiserver
func BenchmarkListPodsMem(b *testing.B) {
	ms := newMemStore()
	srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", Store: ms})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	pres := srv.reg.byGVR[corev1.SchemeGroupVersion.WithResource("pods")]
	for i := 0; i < 10000; i++ {
		p := testPod(fmt.Sprintf("p-%05d", i), map[string]string{"app": "bench", "i": fmt.Sprint(i % 10)})
		p.Namespace = "default"
		pres.defaults(p)
		data, _ := encodeForStore(pres, p)
		if _, err := ms.Create(context.Background(), pres.key("default", p.Name), data); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx)
	cs := mustClientset(b, srv)
	for _, sel := range []string{"", "i=3"} {
		b.Run("selector="+sel, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: sel})
				if err != nil || len(l.Items) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}
