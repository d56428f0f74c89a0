package controllers_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/internal/testutil"
)

func webDeployment(name string, replicas int32, image string) *appsv1.Deployment {
	lbls := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: image}}},
			},
		},
	}
}

// podsOf lists the pods of app=name not being deleted.
func podsOf(ctx context.Context, w *workloadCluster, ns, name string) ([]corev1.Pod, error) {
	l, err := w.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// TestDeploymentOfFive: a Deployment of 5 gives 5 pods, bound across the
// nodes, and a status that says so; scaling it moves the pods.
func TestDeploymentOfFive(t *testing.T) {
	w := startWorkloads(t, controllers.Options{}, fakeNodeOptions{})
	for i := range 3 {
		w.nodes.addNode(t, fmt.Sprintf("n%d", i), nil)
	}
	ctx := context.Background()
	if _, err := w.cs.AppsV1().Deployments("default").Create(ctx, webDeployment("five", 5, "web:1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDeployment(t, w, "five", 5)
	pods, err := podsOf(ctx, w, "default", "five")
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]int{}
	for _, p := range pods {
		nodes[p.Spec.NodeName]++
		ref := metav1.GetControllerOf(&p)
		if ref == nil || ref.Kind != "ReplicaSet" || !strings.HasPrefix(ref.Name, "five-") || p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] == "" {
			t.Errorf("pod %s: controller %v, labels %v", p.Name, ref, p.Labels)
		}
	}
	if len(pods) != 5 || len(nodes) != 3 {
		t.Errorf("%d pods on nodes %v, want 5 across 3 nodes", len(pods), nodes)
	}
	d, _ := w.cs.AppsV1().Deployments("default").Get(ctx, "five", metav1.GetOptions{})
	if d.Annotations["deployment.kubernetes.io/revision"] != "1" || !hasDeploymentCondition(d, appsv1.DeploymentAvailable, "MinimumReplicasAvailable") ||
		!hasDeploymentCondition(d, appsv1.DeploymentProgressing, "NewReplicaSetAvailable") {
		t.Errorf("deployment annotations %v, conditions %+v", d.Annotations, d.Status.Conditions)
	}

	// Scale down, then up: the ReplicaSet follows.
	for _, n := range []int32{2, 7} {
		if _, err := w.cs.AppsV1().Deployments("default").Patch(ctx, "five", "application/merge-patch+json",
			[]byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitDeployment(t, w, "five", n)
	}
}

func hasDeploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType, reason string) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == t && c.Reason == reason {
			return true
		}
	}
	return false
}

// waitDeployment waits until the Deployment's status is that of a
// finished rollout of n replicas and exactly n pods remain.
func waitDeployment(t testing.TB, w *workloadCluster, name string, n int32) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("deployment %s at %d ready replicas", name, n), func() error {
		ctx := context.Background()
		d, err := w.cs.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := d.Status
		if st.ObservedGeneration < d.Generation || st.Replicas != n || st.UpdatedReplicas != n || st.ReadyReplicas != n || st.AvailableReplicas != n {
			return fmt.Errorf("status %+v", st)
		}
		pods, err := podsOf(ctx, w, "default", name)
		if err != nil {
			return err
		}
		if int32(len(pods)) != n {
			return fmt.Errorf("%d pods", len(pods))
		}
		return nil
	})
}

// rolloutWatch checks, at every change of a Deployment's ReplicaSets and
// pods, the bounds of a rolling update: the ReplicaSets ask for at most
// replicas+maxSurge pods, and at least replicas-maxUnavailable pods are
// ready and not being deleted.
type rolloutWatch struct {
	mu         sync.Mutex
	violations []string
	maxPods    int
	minReady   int
	seenRS     int
}

func watchRollout(t *testing.T, w *workloadCluster, app string, maxTotal, minReady int) *rolloutWatch {
	t.Helper()
	rw := &rolloutWatch{minReady: minReady}
	factory := informers.NewSharedInformerFactoryWithOptions(w.cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = "app=" + app
	}))
	rsInf, podInf := factory.Apps().V1().ReplicaSets().Informer(), factory.Core().V1().Pods().Informer()
	var synced atomic.Bool // the stores are complete: the initial list is delivered item by item
	check := func(any) {
		if !synced.Load() {
			return
		}
		rw.mu.Lock()
		defer rw.mu.Unlock()
		total := 0
		for _, o := range rsInf.GetStore().List() {
			total += int(*o.(*appsv1.ReplicaSet).Spec.Replicas)
		}
		rw.seenRS = max(rw.seenRS, len(rsInf.GetStore().List()))
		ready, live := 0, 0
		for _, o := range podInf.GetStore().List() {
			p := o.(*corev1.Pod)
			if p.DeletionTimestamp != nil {
				continue
			}
			live++
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		rw.maxPods = max(rw.maxPods, live)
		if total > maxTotal {
			rw.violations = append(rw.violations, fmt.Sprintf("replicasets ask for %d pods > %d", total, maxTotal))
		}
		if ready < minReady {
			rw.violations = append(rw.violations, fmt.Sprintf("%d ready pods < %d", ready, minReady))
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, o any) { check(o) }, DeleteFunc: check}
	rsReg, err := rsInf.AddEventHandler(h)
	if err != nil {
		t.Fatal(err)
	}
	podReg, err := podInf.AddEventHandler(h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	factory.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), rsReg.HasSynced, podReg.HasSynced)
	synced.Store(true)
	check(nil)
	return rw
}

func (rw *rolloutWatch) check(t *testing.T) {
	t.Helper()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if len(rw.violations) > 0 {
		t.Errorf("rolling update out of bounds %d times, first: %s", len(rw.violations), rw.violations[0])
	}
}

// TestRollingUpdateAndUndoWithKubectl rolls a Deployment of 8 (maxSurge
// 2, maxUnavailable 1) to a new image and back with the real kubectl:
// set image, rollout status, history, undo, restart, pause/resume. At
// every step the ReplicaSets ask for at most 10 pods and at least 7 are
// ready.
func TestRollingUpdateAndUndoWithKubectl(t *testing.T) {
	for _, k := range kubectls(t) {
		t.Run(filepath.Base(k), func(t *testing.T) { rollingUpdateAndUndo(t, k) })
	}
}

func rollingUpdateAndUndo(t *testing.T, kubectl string) {
	w := startWorkloads(t, controllers.Options{}, fakeNodeOptions{})
	for i := range 3 {
		w.nodes.addNode(t, fmt.Sprintf("n%d", i), nil)
	}
	ctx := context.Background()
	d := webDeployment("roll", 8, "web:1")
	d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(2)), MaxUnavailable: ptr.To(intstr.FromInt32(1))}
	if _, err := w.cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	run := w.kubectl(t, kubectl)
	out := run("rollout", "status", "deployment/roll", "--timeout=30s")
	if !strings.Contains(out, `deployment "roll" successfully rolled out`) {
		t.Fatalf("rollout status: %s", out)
	}
	waitDeployment(t, w, "roll", 8)
	rw := watchRollout(t, w, "roll", 10, 7)

	run("set", "image", "deployment/roll", "web=web:2")
	out = run("rollout", "status", "deployment/roll", "--timeout=30s")
	if !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status after set image: %s", out)
	}
	waitDeployment(t, w, "roll", 8)
	expectImages(t, w, "roll", "web:2")
	out = run("rollout", "history", "deployment/roll")
	if !strings.Contains(out, "1 ") || !strings.Contains(out, "2 ") {
		t.Errorf("rollout history: %s", out)
	}
	if out := run("rollout", "history", "deployment/roll", "--revision=1"); !strings.Contains(out, "web:1") {
		t.Errorf("rollout history --revision=1: %s", out)
	}

	out = run("rollout", "undo", "deployment/roll")
	if !strings.Contains(out, "rolled back") {
		t.Errorf("rollout undo: %s", out)
	}
	run("rollout", "status", "deployment/roll", "--timeout=30s")
	waitDeployment(t, w, "roll", 8)
	expectImages(t, w, "roll", "web:1")
	// The first ReplicaSet is the new one again, as revision 3 (it was 1).
	rss, err := w.cs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=roll"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rss.Items) != 2 {
		t.Errorf("%d replicasets after undo, want 2", len(rss.Items))
	}
	for _, rs := range rss.Items {
		switch rs.Spec.Template.Spec.Containers[0].Image {
		case "web:1":
			if rs.Annotations["deployment.kubernetes.io/revision"] != "3" || rs.Annotations["deployment.kubernetes.io/revision-history"] != "1" || *rs.Spec.Replicas != 8 {
				t.Errorf("rolled-back replicaset %s: %v, %d replicas", rs.Name, rs.Annotations, *rs.Spec.Replicas)
			}
		case "web:2":
			if *rs.Spec.Replicas != 0 {
				t.Errorf("old replicaset %s has %d replicas", rs.Name, *rs.Spec.Replicas)
			}
		}
	}

	run("rollout", "restart", "deployment/roll")
	run("rollout", "status", "deployment/roll", "--timeout=30s")
	waitDeployment(t, w, "roll", 8)

	// Paused: a template change is not rolled out until resumed.
	run("rollout", "pause", "deployment/roll")
	run("set", "image", "deployment/roll", "web=web:3")
	time.Sleep(300 * time.Millisecond)
	expectImages(t, w, "roll", "web:1")
	cur, _ := w.cs.AppsV1().Deployments("default").Get(ctx, "roll", metav1.GetOptions{})
	if !hasDeploymentCondition(cur, appsv1.DeploymentProgressing, "DeploymentPaused") {
		t.Errorf("paused deployment conditions: %+v", cur.Status.Conditions)
	}
	run("rollout", "resume", "deployment/roll")
	run("rollout", "status", "deployment/roll", "--timeout=30s")
	waitDeployment(t, w, "roll", 8)
	expectImages(t, w, "roll", "web:3")
	rw.check(t)
	t.Logf("at most %d pods at once, %d replicasets", rw.maxPods, rw.seenRS)
	if out := run("get", "deploy", "roll"); !strings.Contains(out, "8/8") {
		t.Errorf("kubectl get deploy: %s", out)
	}
}

func expectImages(t *testing.T, w *workloadCluster, app, image string) {
	t.Helper()
	pods, err := podsOf(context.Background(), w, "default", app)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if img := p.Spec.Containers[0].Image; img != image {
			t.Errorf("pod %s runs %s, want %s", p.Name, img, image)
		}
	}
}
