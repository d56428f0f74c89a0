package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/internal/nodejoin"
	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/test/e2e/harness"
)

// skepToken runs `skep token create` against srv and returns the token.
func skepToken(t *testing.T, srv *harness.Server, ttl string) string {
	t.Helper()
	out, err := exec.Command(skepBin, "token", "create", "--kubeconfig", srv.Kubeconfig(), "--ttl", ttl).CombinedOutput()
	if err != nil {
		t.Fatalf("skep token create: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// join makes a node identity with token and returns its clientset.
func join(t *testing.T, srv *harness.Server, token, node string) (kubernetes.Interface, error) {
	t.Helper()
	cfg := restConfig(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, err := nodejoin.Join(ctx, nodejoin.Request{Server: cfg.Host, CAPEM: cfg.TLSClientConfig.CAData, Token: token, NodeName: node, Dir: filepath.Join(t.TempDir(), node)})
	if err != nil {
		return nil, err
	}
	nc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	return clientset(t, nc), nil
}

// TestNodeIdentity: a node joins with a bootstrap token and gets its own
// credential, which reaches only its own Node and Lease, the pods bound to
// it and what they reference; the token can do nothing else, and not after
// it expires.
func TestNodeIdentity(t *testing.T) {
	srv := startServer(t)
	if len(restConfig(t, srv).TLSClientConfig.CAData) == 0 {
		t.Fatal("the admin kubeconfig embeds no CA")
	}
	admin := clientset(t, restConfig(t, srv))
	ctx := context.Background()
	token := skepToken(t, srv, "1h")

	// The token alone: only certificate requests.
	cfg := restConfig(t, srv)
	asToken := clientset(t, &rest.Config{Host: cfg.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.TLSClientConfig.CAData}})
	if _, err := asToken.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("bootstrap token lists pods: %v, want 403", err)
	}
	nodeA, err := join(t, srv, token, "node-a")
	if err != nil {
		t.Fatalf("join node-a: %v", err)
	}
	if _, err := join(t, srv, token, "node-b"); err != nil {
		t.Fatalf("join node-b: %v", err)
	}

	// Its own Node, not another's.
	if _, err := nodeA.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("node-a registers itself: %v", err)
	}
	if _, err := nodeA.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a creates node-c: %v, want 403", err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"labels":{"evil":"yes"}}}`)
	if _, err := nodeA.CoreV1().Nodes().Patch(ctx, "node-b", types.MergePatchType, patch, metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a patches node-b: %v, want 403", err)
	}
	if _, err := nodeA.CoreV1().Nodes().Patch(ctx, "node-a", types.MergePatchType, []byte(`{"metadata":{"labels":{"mine":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("node-a patches itself: %v", err)
	}
	// Its own Lease only.
	lease := func(name string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name)}}
	}
	if _, err := nodeA.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease("node-a"), metav1.CreateOptions{}); err != nil {
		t.Errorf("node-a's lease: %v", err)
	}
	if _, err := nodeA.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease("node-b"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a creates node-b's lease: %v, want 403", err)
	}
	// No pods of its own making.
	pod := func(name, secret string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			Volumes:    []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}},
		}}
	}
	if _, err := nodeA.CoreV1().Pods("default").Create(ctx, pod("rogue", "s-a"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a creates a pod: %v, want 403", err)
	}

	// Secrets: only those of pods bound to it.
	for _, s := range []string{"s-a", "s-b"} {
		if _, err := admin.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s}, StringData: map[string]string{"k": s}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, node := range map[string]string{"pa": "node-a", "pb": "node-b"} {
		p, err := admin.CoreV1().Pods("default").Create(ctx, pod(name, "s-"+node[len(node)-1:]), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.CoreV1().Pods("default").Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name, UID: p.UID},
			Target: corev1.ObjectReference{Kind: "Node", Name: node}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "node-a reads the secret of its pod", func() error {
		_, err := nodeA.CoreV1().Secrets("default").Get(ctx, "s-a", metav1.GetOptions{})
		return err
	})
	if _, err := nodeA.CoreV1().Secrets("default").Get(ctx, "s-b", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a reads node-b's pod's secret: %v, want 403", err)
	}
	if _, err := nodeA.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a lists secrets: %v, want 403", err)
	}
	// Pod status and tokens: only its pods'.
	pa, _ := nodeA.CoreV1().Pods("default").Get(ctx, "pa", metav1.GetOptions{})
	pa.Status.Phase = corev1.PodRunning
	if _, err := nodeA.CoreV1().Pods("default").UpdateStatus(ctx, pa, metav1.UpdateOptions{}); err != nil {
		t.Errorf("node-a updates its pod's status: %v", err)
	}
	pb, _ := nodeA.CoreV1().Pods("default").Get(ctx, "pb", metav1.GetOptions{})
	pb.Status.Phase = corev1.PodFailed
	if _, err := nodeA.CoreV1().Pods("default").UpdateStatus(ctx, pb, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a updates node-b's pod's status: %v, want 403", err)
	}
	if err := nodeA.CoreV1().Pods("default").Delete(ctx, "pb", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node-a deletes node-b's pod: %v, want 403", err)
	}
	if _, err := admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		testutil.Eventually(t, 10*time.Second, "default service account", func() error {
			_, err := admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		})
	}
	tokenFor := func(podName string, uid types.UID) error {
		_, err := nodeA.CoreV1().ServiceAccounts("default").CreateToken(ctx, "default", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: podName, UID: uid}}}, metav1.CreateOptions{})
		return err
	}
	if err := tokenFor("pa", pa.UID); err != nil {
		t.Errorf("node-a gets a token for its pod: %v", err)
	}
	if err := tokenFor("pb", pb.UID); !apierrors.IsForbidden(err) {
		t.Errorf("node-a gets a token for node-b's pod: %v, want 403", err)
	}

	// An expired token joins nothing.
	expired := skepToken(t, srv, "1s")
	time.Sleep(1500 * time.Millisecond)
	cfgX := &rest.Config{Host: cfg.Host, BearerToken: expired, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.TLSClientConfig.CAData}}
	if _, err := clientset(t, cfgX).CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("expired bootstrap token: %v, want 401", err)
	}
	if _, err := clientset(t, &rest.Config{Host: cfg.Host, BearerToken: "abcdef.0123456789abcdef", TLSClientConfig: cfgX.TLSClientConfig}).CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("unknown bootstrap token: %v, want 401", err)
	}
}
