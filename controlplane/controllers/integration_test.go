package controllers_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/skep-dev/skep/controlplane/apiserver"
	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/controlplane/controllers/namespace"
	"github.com/skep-dev/skep/internal/testutil"
)

// cluster is an in-process API server with the controllers running.
type cluster struct {
	srv *apiserver.Server
	cs  kubernetes.Interface
}

func quietLogger() *slog.Logger {
	if os.Getenv("SKEP_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startCluster runs a real API server (bbolt store in a temp dir) and the
// controller-manager against it until the test ends.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	srv, err := apiserver.New(apiserver.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() { sdone <- srv.Run(sctx) }()
	t.Cleanup(func() {
		scancel()
		select {
		case err := <-sdone:
			if err != nil {
				t.Errorf("server run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop")
		}
	})
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan error, 1)
	go func() {
		cdone <- controllers.RunWithOptions(cctx, srv.RESTConfig(), controllers.Options{
			Logger: quietLogger(),
			// Pods bound to a live node are forced 1s after their grace.
			Namespace: namespace.Options{ForceAfter: time.Second},
			// These tests make ReplicaSets and pods the workload
			// controllers would resize; those have tests of their own.
			Workloads: controllers.WorkloadOptions{Disable: controllers.AllWorkloads},
		})
	}()
	t.Cleanup(func() {
		ccancel()
		select {
		case err := <-cdone:
			if err != nil {
				t.Errorf("controllers run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("controllers did not stop")
		}
	})
	cs, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{srv: srv, cs: cs}
}

// eventually polls cond every 50ms for up to 30s.
func eventually(t testing.TB, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, cond)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func gone(err error) (bool, error) {
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, err
}

func pod(name, node string, grace int64, owners ...metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}, OwnerReferences: owners},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func replicaSet(name string) *appsv1.ReplicaSet {
	one := int32(1)
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.ReplicaSetSpec{Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}},
	}
}

// controllerRef is the ownerReference a ReplicaSet controller sets.
func controllerRef(apiVersion, kind, name string, uid types.UID) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: &t, BlockOwnerDeletion: &t}
}

func mustCreateNode(t testing.TB, cs kubernetes.Interface, name string) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
}

func mustCreateNamespace(t testing.TB, cs kubernetes.Interface, name string) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
}

// TestNamespaceDeletionRemovesContent deletes a namespace holding every
// common kind, including pods that linger (bound to a live node with a
// grace period, bound to a node that does not exist) and an object whose
// dependents the collector removes, and expects it and its content gone.
func TestNamespaceDeletionRemovesContent(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	const ns = "doomed"
	mustCreateNamespace(t, c.cs, ns)
	mustCreateNode(t, c.cs, "n1")
	for i, name := range []string{"a", "b"} {
		if _, err := c.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": string(rune('0' + i))}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := c.cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rs, err := c.cs.AppsV1().ReplicaSets(ns).Create(ctx, replicaSet("rs"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := controllerRef("apps/v1", "ReplicaSet", rs.Name, rs.UID)
	for _, p := range []*corev1.Pod{
		pod("unbound", "", 30, ref),
		pod("on-live-node", "n1", 2),    // the agent never acts: forced after grace + ForceAfter
		pod("on-gone-node", "gone", 30), // no such node: forced at once
	} {
		if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
	start := time.Now()
	if err := c.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller reports what is left while it works.
	sawCondition := false
	eventually(t, "namespace removed", func(ctx context.Context) (bool, error) {
		n, err := c.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return gone(err)
		}
		for _, cd := range n.Status.Conditions {
			if cd.Type == corev1.NamespaceContentRemaining && cd.Status == corev1.ConditionTrue && strings.Contains(cd.Message, "pods") {
				sawCondition = true
			}
		}
		return false, nil
	})
	t.Logf("namespace removed after %v", time.Since(start))
	if !sawCondition {
		t.Errorf("never saw a NamespaceContentRemaining condition naming pods while a pod lingered")
	}
	// Recreating the namespace must show none of the old content.
	mustCreateNamespace(t, c.cs, ns)
	if l, err := c.cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("configmaps after deletion: %v %d", err, len(l.Items))
	}
	if l, err := c.cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("secrets after deletion: %v %d", err, len(l.Items))
	}
	if l, err := c.cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("services after deletion: %v %d", err, len(l.Items))
	}
	if l, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("pods after deletion: %v %d", err, len(l.Items))
	}
	if l, err := c.cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("replicasets after deletion: %v %d", err, len(l.Items))
	}
}

// ownedPods creates a ReplicaSet in default and n pods it controls.
func ownedPods(t *testing.T, c *cluster, rsName string, pods ...*corev1.Pod) *appsv1.ReplicaSet {
	t.Helper()
	ctx := context.Background()
	rs, err := c.cs.AppsV1().ReplicaSets("default").Create(ctx, replicaSet(rsName), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := controllerRef("apps/v1", "ReplicaSet", rs.Name, rs.UID)
	for _, p := range pods {
		p.OwnerReferences = append(p.OwnerReferences, ref)
		if _, err := c.cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
	return rs
}

func TestGCBackgroundDeletesDependents(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ownedPods(t, c, "bg", pod("bg-1", "", 30), pod("bg-2", "", 30), pod("bg-3", "", 30))
	if _, err := c.cs.CoreV1().Pods("default").Create(ctx, pod("bystander", "", 30), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.cs.AppsV1().ReplicaSets("default").Delete(ctx, "bg", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bg-1", "bg-2", "bg-3"} {
		eventually(t, "pod "+name+" collected", func(ctx context.Context) (bool, error) {
			_, err := c.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return gone(err)
		})
	}
	if _, err := c.cs.CoreV1().Pods("default").Get(ctx, "bystander", metav1.GetOptions{}); err != nil {
		t.Errorf("a pod without owners was touched: %v", err)
	}
}

func TestGCForegroundWaitsForDependents(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	mustCreateNode(t, c.cs, "n1")
	// fg-bound is bound to a live node: its deletion waits for the agent,
	// so the ReplicaSet must wait too.
	ownedPods(t, c, "fg", pod("fg-1", "", 30), pod("fg-2", "", 30), pod("fg-bound", "n1", 30))
	fg := metav1.DeletePropagationForeground
	if err := c.cs.AppsV1().ReplicaSets("default").Delete(ctx, "fg", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"fg-1", "fg-2"} {
		eventually(t, "pod "+name+" deleted", func(ctx context.Context) (bool, error) {
			_, err := c.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return gone(err)
		})
	}
	eventually(t, "bound pod marked for deletion", func(ctx context.Context) (bool, error) {
		p, err := c.cs.CoreV1().Pods("default").Get(ctx, "fg-bound", metav1.GetOptions{})
		return err == nil && p.DeletionTimestamp != nil, err
	})
	// Give the collector time to do the wrong thing.
	time.Sleep(500 * time.Millisecond)
	rs, err := c.cs.AppsV1().ReplicaSets("default").Get(ctx, "fg", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("replicaset removed while a blocking dependent remains: %v", err)
	}
	if rs.DeletionTimestamp == nil || !contains(rs.Finalizers, metav1.FinalizerDeleteDependents) {
		t.Fatalf("replicaset lost its foreground finalizer early: %+v", rs.ObjectMeta)
	}
	// The node agent finishes the pod: now the owner goes.
	zero := int64(0)
	if err := c.cs.CoreV1().Pods("default").Delete(ctx, "fg-bound", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replicaset removed", func(ctx context.Context) (bool, error) {
		_, err := c.cs.AppsV1().ReplicaSets("default").Get(ctx, "fg", metav1.GetOptions{})
		return gone(err)
	})
}

// TestGCForegroundCascades deletes a Deployment in foreground: its
// ReplicaSet is deleted in foreground too, so the pods go first.
func TestGCForegroundCascades(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: replicaSet("x").Spec.Template}}
	d, err := c.cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := replicaSet("web-1")
	rs.OwnerReferences = []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", d.Name, d.UID)}
	if rs, err = c.cs.AppsV1().ReplicaSets("default").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.CoreV1().Pods("default").Create(ctx, pod("web-1-a", "", 30, controllerRef("apps/v1", "ReplicaSet", rs.Name, rs.UID)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fg := metav1.DeletePropagationForeground
	if err := c.cs.AppsV1().Deployments("default").Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deployment removed", func(ctx context.Context) (bool, error) {
		_, err := c.cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		return gone(err)
	})
	// Foreground: by the time the owner is gone, so are its dependents.
	if _, err := c.cs.AppsV1().ReplicaSets("default").Get(ctx, "web-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("replicaset outlived its foreground-deleted deployment: %v", err)
	}
	if _, err := c.cs.CoreV1().Pods("default").Get(ctx, "web-1-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod outlived its foreground-deleted grandparent: %v", err)
	}
}

func TestGCOrphanKeepsDependents(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ownedPods(t, c, "or", pod("or-1", "", 30), pod("or-2", "", 30))
	orphan := metav1.DeletePropagationOrphan
	if err := c.cs.AppsV1().ReplicaSets("default").Delete(ctx, "or", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replicaset removed", func(ctx context.Context) (bool, error) {
		_, err := c.cs.AppsV1().ReplicaSets("default").Get(ctx, "or", metav1.GetOptions{})
		return gone(err)
	})
	// Once the owner is gone the collector would delete pods still naming it.
	time.Sleep(300 * time.Millisecond)
	for _, name := range []string{"or-1", "or-2"} {
		p, err := c.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("orphaned pod %s: %v", name, err)
		}
		if len(p.OwnerReferences) != 0 || p.DeletionTimestamp != nil {
			t.Errorf("orphaned pod %s: ownerReferences %v deletionTimestamp %v", name, p.OwnerReferences, p.DeletionTimestamp)
		}
	}
}

// TestGCKeepsDependentWithLiveOwner: a dependent with a second, live owner
// only loses the reference to the deleted one.
func TestGCKeepsDependentWithLiveOwner(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	gone1, err := c.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner-a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	live, err := c.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner-b"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dep", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "ConfigMap", Name: gone1.Name, UID: gone1.UID},
		{APIVersion: "v1", Kind: "ConfigMap", Name: live.Name, UID: live.UID},
	}}}
	if _, err := c.cs.CoreV1().Secrets("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A dependent whose only owner never existed is collected.
	ghost := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ghost", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "ConfigMap", Name: "owner-b", UID: "00000000-0000-0000-0000-000000000000"}}}}
	if _, err := c.cs.CoreV1().Secrets("default").Create(ctx, ghost, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.cs.CoreV1().ConfigMaps("default").Delete(ctx, gone1.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ghost-owned secret collected (owner name matches, UID does not)", func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().Secrets("default").Get(ctx, "ghost", metav1.GetOptions{})
		return gone(err)
	})
	eventually(t, "reference to the deleted owner removed", func(ctx context.Context) (bool, error) {
		s, err := c.cs.CoreV1().Secrets("default").Get(ctx, "dep", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(s.OwnerReferences) == 1 && s.OwnerReferences[0].UID == live.UID, nil
	})
}

// TestKubectlDeleteReturns runs the real kubectl against the server: both
// `delete ns` and `delete deployment --cascade=foreground` wait for the
// object to disappear, so they hang without the controllers.
func TestKubectlDeleteReturns(t *testing.T) {
	kubectl := testutil.RequireBinary(t, "kubectl")
	c := startCluster(t)
	ctx := context.Background()
	mustCreateNamespace(t, c.cs, "kubectl-ns")
	if _, err := c.cs.CoreV1().ConfigMaps("kubectl-ns").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: replicaSet("x").Spec.Template}}
	d, err := c.cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := replicaSet("x-1")
	rs.OwnerReferences = []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", d.Name, d.UID)}
	if _, err = c.cs.AppsV1().ReplicaSets("default").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"delete", "ns", "kubectl-ns"},
		{"delete", "deployment", "x", "--cascade=foreground"},
	} {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		start := time.Now()
		out, err := exec.CommandContext(cctx, kubectl, append([]string{"--kubeconfig", c.srv.KubeconfigPath(), "--timeout=45s"}, args...)...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("kubectl %v took %v", args, took)
		}
		t.Logf("kubectl %v: %s (%v)", args, strings.TrimSpace(string(out)), time.Since(start))
	}
	if _, err := c.cs.CoreV1().Namespaces().Get(ctx, "kubectl-ns", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace after kubectl delete: %v", err)
	}
	if _, err := c.cs.AppsV1().ReplicaSets("default").Get(ctx, "x-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("replicaset after kubectl delete --cascade=foreground of its deployment: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
