package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkNamespaceDeletion measures `delete ns` to the namespace being
// gone, for a namespace of 100 configmaps, 20 secrets and 20 (unbound)
// pods owned by a ReplicaSet. Re-run with:
//
//	go test -run '^$' -bench NamespaceDeletion ./controlplane/controllers
func BenchmarkNamespaceDeletion(b *testing.B) {
	c := startCluster(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ns := fmt.Sprintf("bench-%d", i)
		mustCreateNamespace(b, c.cs, ns)
		for j := 0; j < 100; j++ {
			if _, err := c.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d", j)}}, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		for j := 0; j < 20; j++ {
			if _, err := c.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", j)}}, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		rs, err := c.cs.AppsV1().ReplicaSets(ns).Create(ctx, replicaSet("rs"), metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < 20; j++ {
			if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, pod(fmt.Sprintf("p%d", j), "", 30, controllerRef("apps/v1", "ReplicaSet", rs.Name, rs.UID)), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := c.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		waitGone(b, func(ctx context.Context) error {
			_, err := c.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return err
		})
	}
}

// BenchmarkGCBackground measures deleting a ReplicaSet to its 100 pods
// being collected.
//
//	go test -run '^$' -bench GCBackground ./controlplane/controllers
func BenchmarkGCBackground(b *testing.B) {
	c := startCluster(b)
	ctx := context.Background()
	pods := c.cs.CoreV1().Pods("default")
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		rs, err := c.cs.AppsV1().ReplicaSets("default").Create(ctx, replicaSet(fmt.Sprintf("rs-%d", i)), metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < 100; j++ {
			if _, err := pods.Create(ctx, pod(fmt.Sprintf("rs-%d-%d", i, j), "", 30, controllerRef("apps/v1", "ReplicaSet", rs.Name, rs.UID)), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := c.cs.AppsV1().ReplicaSets("default").Delete(ctx, rs.Name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		for {
			l, err := pods.List(ctx, metav1.ListOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if len(l.Items) == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// waitGone polls get every 50ms until it answers NotFound (30s at most).
func waitGone(b *testing.B, get func(ctx context.Context) error) {
	b.Helper()
	eventually(b, "gone", func(ctx context.Context) (bool, error) { return gone(get(ctx)) })
}
