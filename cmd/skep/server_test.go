package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skep-dev/skep/internal/testutil"
)

// TestServerRunsControllers: `skep server` runs the namespace controller
// and the garbage collector in-process, so `kubectl delete ns` returns
// with the namespace and its content gone, a dependent goes with its
// owner, and everything stops when the server's context ends.
func TestServerRunsControllers(t *testing.T) {
	kubectl := testutil.RequireBinary(t, "kubectl")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, []string{"--data-dir", dir, "--listen", "127.0.0.1:0"}) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	var cs *kubernetes.Clientset
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("server exited: %v", err)
		default:
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return false, nil
		}
		if cs, err = kubernetes.NewForConfig(cfg); err != nil {
			return false, err
		}
		_, err = cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("server not ready: %v", err)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	owner, err := cs.CoreV1().ConfigMaps("x").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dependent", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}}}}
	if _, err := cs.CoreV1().ConfigMaps("x").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("x").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The garbage collector removes a dependent whose owner is gone.
	if err := cs.CoreV1().ConfigMaps("x").Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ConfigMaps("x").Get(ctx, "dependent", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("dependent of a deleted owner still there: %v", err)
	}

	// kubectl delete ns waits until the namespace is gone.
	kctx, kcancel := context.WithTimeout(ctx, 60*time.Second)
	defer kcancel()
	out, err := exec.CommandContext(kctx, kubectl, "--kubeconfig", kubeconfig, "delete", "ns", "x", "--timeout=45s").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl delete ns x: %v\n%s", err, out)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace x after kubectl delete returned: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("x").Get(ctx, "s", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("secret in deleted namespace: %v", err)
	}

	// Server and controllers stop together.
	cancel()
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server with controllers did not stop")
	}
}
