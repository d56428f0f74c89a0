package daemonset

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller/controllertest"
	"github.com/skep-dev/skep/internal/testutil"
)

type fixture struct {
	*controllertest.Fake
	c *Controller
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	f, c := controllertest.Build(t, objs, func(f *controllertest.Fake) (*Controller, error) {
		return New(f, f.Informers.Apps().V1().DaemonSets(), f.Informers.Apps().V1().ControllerRevisions(), f.Informers.Core().V1().Pods(),
			f.Informers.Core().V1().Nodes(), Options{Logger: testutil.QuietLogger(), Clock: testingclock.NewFakeClock(time.Now())})
	})
	return &fixture{Fake: f, c: c}
}

func (f *fixture) sync(t *testing.T) {
	t.Helper()
	if err := f.c.sync(context.Background(), "default/agent"); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func (f *fixture) pods(t *testing.T) []corev1.Pod {
	t.Helper()
	l, err := f.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func newDS() *appsv1.DaemonSet {
	lbls := map[string]string{"app": "agent"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "default", UID: "ds-uid", Generation: 1,
			Annotations: map[string]string{TemplateGenerationAnnotation: "1"}},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "v1"}}}},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1)), MaxSurge: ptr.To(intstr.FromInt32(0))}},
			RevisionHistoryLimit: ptr.To(int32(10)),
		},
	}
}

func node(name string, lbls map[string]string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}, Spec: corev1.NodeSpec{Taints: taints}}
}

func TestNodeShouldRun(t *testing.T) {
	ds := newDS()
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	ssd := map[string]string{"disk": "ssd"}
	for _, c := range []struct {
		name           string
		node           *corev1.Node
		run, continue_ bool
	}{
		{"matching", node("n", ssd), true, true},
		{"selector mismatch", node("n", nil), false, false},
		{"NoSchedule taint", node("n", ssd, corev1.Taint{Key: "k", Effect: corev1.TaintEffectNoSchedule}), false, true},
		{"NoExecute taint", node("n", ssd, corev1.Taint{Key: "k", Effect: corev1.TaintEffectNoExecute}), false, false},
		{"not ready: tolerated", node("n", ssd, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute}), true, true},
		{"cordoned: tolerated", node("n", ssd, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}), true, true},
		{"network unavailable", node("n", ssd, corev1.Taint{Key: corev1.TaintNodeNetworkUnavailable, Effect: corev1.TaintEffectNoSchedule}), false, true},
	} {
		run, cont := nodeShouldRun(c.node, ds)
		if run != c.run || cont != c.continue_ {
			t.Errorf("%s: run %v continue %v, want %v %v", c.name, run, cont, c.run, c.continue_)
		}
	}
	// Host network pods tolerate network-unavailable; a required node
	// affinity is honoured.
	ds.Spec.Template.Spec.HostNetwork = true
	if run, _ := nodeShouldRun(node("n", ssd, corev1.Taint{Key: corev1.TaintNodeNetworkUnavailable, Effect: corev1.TaintEffectNoSchedule}), ds); !run {
		t.Error("a host network daemon must run where the network is unavailable")
	}
	ds.Spec.Template.Spec.Affinity = nodeAffinityTo(nil, "other")
	if run, _ := nodeShouldRun(node("n", ssd), ds); run {
		t.Error("required node affinity ignored")
	}
}

// TestCreatesOnePodPerNode: a pod for each eligible node, left for the
// scheduler with a required affinity to it, with the daemon tolerations,
// revision hash and template generation; the current ControllerRevision
// is created.
func TestCreatesOnePodPerNode(t *testing.T) {
	ds := newDS()
	f := newFixture(t, ds, node("a", nil), node("b", nil), node("c", nil, corev1.Taint{Key: "k", Effect: corev1.TaintEffectNoSchedule}))
	f.sync(t)
	revs, err := f.AppsV1().ControllerRevisions("default").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(revs.Items) != 1 {
		t.Fatalf("revisions %v %v", revs, err)
	}
	rev := revs.Items[0]
	hash := rev.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
	if rev.Revision != 1 || !strings.HasPrefix(rev.Name, "agent-") || !strings.Contains(string(rev.Data.Raw), `"$patch":"replace"`) {
		t.Errorf("revision %s %d %s", rev.Name, rev.Revision, rev.Data.Raw)
	}
	var nodes []string
	for _, p := range f.pods(t) {
		n, err := targetNode(&p)
		if err != nil || p.Spec.NodeName != "" {
			t.Errorf("pod %s: node %q (%v), nodeName %q", p.Name, n, err, p.Spec.NodeName)
		}
		nodes = append(nodes, n)
		if p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != hash || p.Labels[TemplateGenerationLabel] != "1" || len(p.Spec.Tolerations) != 6 {
			t.Errorf("pod %s: labels %v, %d tolerations", p.Name, p.Labels, len(p.Spec.Tolerations))
		}
	}
	sort.Strings(nodes)
	if strings.Join(nodes, ",") != "a,b" {
		t.Errorf("pods for %v, want a and b", nodes)
	}
}

func daemonPod(ds *appsv1.DaemonSet, name, node, hash string, ready bool) *corev1.Pod {
	lbls := map[string]string{"app": "agent", appsv1.DefaultDaemonSetUniqueLabelKey: hash}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name), Labels: lbls,
			CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour)),
			OwnerReferences:   []metav1.OwnerReference{*metav1.NewControllerRef(ds, kind)}},
		Spec: corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st,
			LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))}}},
	}
}

// TestDeletesWhereItShouldNotRun: a pod on a node tainted NoExecute goes,
// as does a second pod on one node (the younger).
func TestDeletesWhereItShouldNotRun(t *testing.T) {
	ds := newDS()
	f := newFixture(t, ds)
	f.sync(t) // the revision
	rev, _ := f.AppsV1().ControllerRevisions("default").List(context.Background(), metav1.ListOptions{})
	hash := rev.Items[0].Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
	extra := daemonPod(ds, "a-2", "a", hash, true)
	extra.CreationTimestamp = metav1.Now()
	f = newFixture(t, ds, &rev.Items[0],
		node("a", nil), node("x", nil, corev1.Taint{Key: "k", Effect: corev1.TaintEffectNoExecute}),
		daemonPod(ds, "a-1", "a", hash, true), extra, daemonPod(ds, "x-1", "x", hash, true))
	f.sync(t)
	deleted := controllertest.Deleted(f.Clientset, "pods")
	sort.Strings(deleted)
	if strings.Join(deleted, ",") != "a-2,x-1" {
		t.Errorf("deleted %v, want a-2 and x-1", deleted)
	}
}

// TestRollingUpdateWithinMaxUnavailable: of nodes with old pods, one is
// replaced at a time (maxUnavailable 1), and an unavailable old pod is
// replaced first (it uses the budget).
func TestRollingUpdateWithinMaxUnavailable(t *testing.T) {
	ds := newDS()
	f := newFixture(t, ds, node("a", nil), node("b", nil), node("c", nil),
		daemonPod(ds, "a-1", "a", "old", true), daemonPod(ds, "b-1", "b", "old", true), daemonPod(ds, "c-1", "c", "old", true))
	f.sync(t)
	if deleted := controllertest.Deleted(f.Clientset, "pods"); len(deleted) != 1 {
		t.Errorf("deleted %v, want one old pod", deleted)
	}
	f = newFixture(t, ds, node("a", nil), node("b", nil), node("c", nil), node("d", nil),
		daemonPod(ds, "a-1", "a", "old", true), daemonPod(ds, "b-1", "b", "old", true),
		daemonPod(ds, "c-1", "c", "old", true), daemonPod(ds, "d-1", "d", "old", false))
	f.sync(t)
	if deleted := controllertest.Deleted(f.Clientset, "pods"); strings.Join(deleted, ",") != "d-1" {
		t.Errorf("deleted %v, want the unavailable d-1 only", deleted)
	}
	if n := controllertest.Creates(f.Clientset, "pods"); n != 0 {
		t.Errorf("created %d pods while the old ones are there", n)
	}
	got, _ := f.AppsV1().DaemonSets("default").Get(context.Background(), "agent", metav1.GetOptions{})
	if st := got.Status; st.DesiredNumberScheduled != 4 || st.CurrentNumberScheduled != 4 || st.NumberReady != 3 || st.UpdatedNumberScheduled != 0 || st.NumberUnavailable != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestFailedPodReplaced: a failed daemon pod is deleted (and replaced by
// the next sync), but not again within the backoff.
func TestFailedPodReplaced(t *testing.T) {
	ds := newDS()
	f := newFixture(t, ds)
	f.sync(t) // the revision
	rev, _ := f.AppsV1().ControllerRevisions("default").List(context.Background(), metav1.ListOptions{})
	failed := daemonPod(ds, "a-1", "a", rev.Items[0].Labels[appsv1.DefaultDaemonSetUniqueLabelKey], false)
	failed.Status.Phase = corev1.PodFailed
	f = newFixture(t, ds, &rev.Items[0], node("a", nil), failed)
	f.sync(t)
	if d := controllertest.Deleted(f.Clientset, "pods"); len(d) != 1 {
		t.Fatalf("deleted %v, want the failed pod", d)
	}
	f.ClearActions()
	f.c.expectations.Delete("default/agent")
	f.sync(t)
	if d := controllertest.Deleted(f.Clientset, "pods"); len(d) != 0 {
		t.Errorf("deleted %v again within the backoff", d)
	}
}
