package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/internal/testutil"
)

// daemonNodes are the nodes running a live pod of app=name.
func daemonNodes(ctx context.Context, w *workloadCluster, name string) ([]string, []corev1.Pod, error) {
	pods, err := podsOf(ctx, w, "default", name)
	if err != nil {
		return nil, nil, err
	}
	var nodes []string
	for _, p := range pods {
		nodes = append(nodes, p.Spec.NodeName)
	}
	sort.Strings(nodes)
	return nodes, pods, nil
}

func waitDaemonNodes(t *testing.T, w *workloadCluster, name string, want ...string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("daemonset %s on %v", name, want), func() error {
		ctx := context.Background()
		nodes, _, err := daemonNodes(ctx, w, name)
		if err != nil {
			return err
		}
		if strings.Join(nodes, ",") != strings.Join(want, ",") {
			return fmt.Errorf("pods on %v", nodes)
		}
		ds, err := w.cs.AppsV1().DaemonSets("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n := int32(len(want))
		if st := ds.Status; st.ObservedGeneration < ds.Generation || st.DesiredNumberScheduled != n || st.CurrentNumberScheduled != n ||
			st.NumberReady != n || st.UpdatedNumberScheduled != n || st.NumberAvailable != n || st.NumberMisscheduled != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestDaemonSetFollowsNodes: a DaemonSet with a node selector runs one pod
// on each matching node, follows nodes added, relabelled, tainted and
// removed, and rolls a new image out through kubectl (status, history,
// undo).
func TestDaemonSetFollowsNodes(t *testing.T) {
	w := startWorkloads(t, controllers.Options{}, fakeNodeOptions{})
	ctx := context.Background()
	ssd := map[string]string{"disk": "ssd"}
	w.nodes.addNode(t, "a", ssd)
	w.nodes.addNode(t, "b", ssd)
	w.nodes.addNode(t, "c", nil)
	lbls := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{NodeSelector: ssd, TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{Name: "agent", Image: "agent:1"}}},
			},
		},
	}
	if _, err := w.cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDaemonNodes(t, w, "agent", "a", "b")
	_, pods, _ := daemonNodes(ctx, w, "agent")
	for _, p := range pods {
		if p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == "" || p.Labels["pod-template-generation"] != "1" || len(p.Spec.Tolerations) < 6 {
			t.Errorf("daemon pod %s: labels %v, tolerations %v", p.Name, p.Labels, p.Spec.Tolerations)
		}
	}

	w.nodes.addNode(t, "d", ssd)
	waitDaemonNodes(t, w, "agent", "a", "b", "d")
	// c gains the label: it runs one too.
	if _, err := w.cs.CoreV1().Nodes().Patch(ctx, "c", "application/merge-patch+json", []byte(`{"metadata":{"labels":{"disk":"ssd"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDaemonNodes(t, w, "agent", "a", "b", "c", "d")
	// A NoSchedule taint keeps the pod there; a NoExecute one evicts it.
	taint := func(node, effect string) {
		t.Helper()
		if _, err := w.cs.CoreV1().Nodes().Patch(ctx, node, "application/merge-patch+json",
			[]byte(`{"spec":{"taints":[{"key":"maintenance","effect":"`+effect+`"}]}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	taint("c", "NoSchedule")
	time.Sleep(200 * time.Millisecond)
	if nodes, _, _ := daemonNodes(ctx, w, "agent"); len(nodes) != 4 {
		t.Errorf("a NoSchedule taint removed a running daemon pod: on %v", nodes)
	}
	taint("c", "NoExecute")
	waitDaemonNodes(t, w, "agent", "a", "b", "d")
	if err := w.cs.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDaemonNodes(t, w, "agent", "a", "d")

	// A rollout and an undo with each kubectl: the revision of agent:1
	// becomes the newest again each time.
	ks := kubectls(t)
	for i, k := range ks {
		run := w.kubectl(t, k)
		image := fmt.Sprintf("agent:%d", i+2)
		run("set", "image", "daemonset/agent", "agent="+image)
		if out := run("rollout", "status", "daemonset/agent", "--timeout=30s"); !strings.Contains(out, "successfully rolled out") {
			t.Errorf("rollout status: %s", out)
		}
		waitDaemonNodes(t, w, "agent", "a", "d")
		expectImages(t, w, "agent", image)
		if out := run("rollout", "history", "daemonset/agent"); !strings.Contains(out, "REVISION") {
			t.Errorf("rollout history: %s", out)
		}
		run("rollout", "undo", "daemonset/agent")
		run("rollout", "status", "daemonset/agent", "--timeout=30s")
		waitDaemonNodes(t, w, "agent", "a", "d")
		expectImages(t, w, "agent", "agent:1")
	}
	revs, err := w.cs.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
	if err != nil {
		t.Fatal(err)
	}
	var nums []int64
	for _, r := range revs.Items {
		nums = append(nums, r.Revision)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	if want := map[int]string{1: "[2 3]", 2: "[2 4 5]"}[len(ks)]; fmt.Sprint(nums) != want {
		t.Errorf("revisions after %d rollouts and undos: %v, want %s", len(ks), nums, want)
	}
	run := w.kubectl(t, ks[0])
	run("rollout", "restart", "daemonset/agent")
	run("rollout", "status", "daemonset/agent", "--timeout=30s")
	waitDaemonNodes(t, w, "agent", "a", "d")
	_, pods, err = daemonNodes(ctx, w, "agent")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if p.Annotations["kubectl.kubernetes.io/restartedAt"] == "" {
			t.Errorf("pod %s was not restarted: %v", p.Name, p.Annotations)
		}
	}
	if out := run("get", "ds", "agent"); !strings.Contains(out, "disk=ssd") {
		t.Errorf("kubectl get ds: %s", out)
	}
}
