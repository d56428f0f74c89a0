package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skep-dev/skep/proxy"
)

func TestCompleteFromNode(t *testing.T) {
	c := fake.NewClientset(&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec:       corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "::ffff:172.31.77.10"}}},
	})
	n, err := completeFromNode(context.Background(), c, proxy.Node{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	// The v4-mapped address is the IPv4 one the data path needs as NodeIP.
	if fmt.Sprint(n.IPs, n.PodCIDRs) != "[172.31.77.10] [10.244.1.0/24]" || !n.IPs[0].Is4() {
		t.Fatalf("node %+v", n)
	}
}

// Waiting for a Node that is not registered ends with the context, not
// at the next retry.
func TestCompleteFromNodeHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := completeFromNode(ctx, fake.NewClientset(), proxy.Node{Name: "n1"}); err == nil {
		t.Fatal("no error for a Node that does not exist")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("returned %v after the context ended", d)
	}
}
