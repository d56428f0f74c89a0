package replicaset

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller/controllertest"
	"github.com/skep-dev/skep/internal/testutil"
)

type fixture struct {
	*controllertest.Fake
	c *Controller
}

// newFixture builds a controller over the fake clientset; objs are in the
// clientset and in the informers' stores (nothing runs: the test drives
// sync).
func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	f, c := controllertest.Build(t, objs, func(f *controllertest.Fake) (*Controller, error) {
		return New(f, f.Informers.Apps().V1().ReplicaSets(), f.Informers.Core().V1().Pods(), Options{Logger: testutil.QuietLogger(), Clock: testingclock.NewFakeClock(time.Now())})
	})
	return &fixture{Fake: f, c: c}
}

func (f *fixture) sync(t *testing.T, key string) {
	t.Helper()
	if err := f.c.sync(context.Background(), key); err != nil {
		t.Fatalf("sync %s: %v", key, err)
	}
}

func newRS(name string, replicas int32) *appsv1.ReplicaSet {
	lbls := map[string]string{"app": name}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name + "-uid"), Generation: 1},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "img"}}}}},
	}
}

func podOf(rs *appsv1.ReplicaSet, name, node string, ready bool, age time.Duration) *corev1.Pod {
	created := metav1.NewTime(time.Now().Add(-age))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rs.Namespace, UID: types.UID(name), Labels: rs.Spec.Template.Labels,
		CreationTimestamp: created, OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, kind)}},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	if node == "" {
		p.Status.Phase = corev1.PodPending
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: created}}
	return p
}

// TestCreatesPodsOnce: a ReplicaSet of 3 creates 3 pods controlled by it;
// a second sync before the watch shows them creates nothing.
func TestCreatesPodsOnce(t *testing.T) {
	rs := newRS("web", 3)
	f := newFixture(t, rs)
	f.sync(t, "default/web")
	list, err := f.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 3 {
		t.Fatalf("%d pods created (%v), want 3", len(list.Items), err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.UID != rs.UID || !strings.HasPrefix(p.Name, "web-") || p.Labels["app"] != "web" {
			t.Errorf("pod %s: controller %v, labels %v", p.Name, ref, p.Labels)
		}
	}
	f.ClearActions()
	f.sync(t, "default/web") // the informer has not seen the pods
	if n := controllertest.Creates(f.Clientset, "pods"); n != 0 {
		t.Errorf("a sync before the watch caught up created %d more pods", n)
	}
	// The watch shows them: expectations are met, nothing to do.
	for i := range list.Items {
		f.c.podEvents.Handlers().OnAdd(&list.Items[i], false)
		controllertest.Add(f.Informers.Core().V1().Pods().Informer(), &list.Items[i])
	}
	f.ClearActions()
	f.sync(t, "default/web")
	if n := controllertest.Creates(f.Clientset, "pods"); n != 0 {
		t.Errorf("created %d pods with all 3 there", n)
	}
}

// TestSlowStartCap: a scale-up is capped at BurstReplicas a sync.
func TestSlowStartCap(t *testing.T) {
	f := newFixture(t, newRS("big", 30))
	f.c.opts.BurstReplicas = 10
	f.sync(t, "default/big")
	if n := controllertest.Creates(f.Clientset, "pods"); n != 10 {
		t.Errorf("%d pods created in one sync, want the burst of 10", n)
	}
}

// TestScaleDownRanking: scaling 5 to 2 deletes the unscheduled, the not
// ready and the youngest ready pod, keeping the two oldest ready.
func TestScaleDownRanking(t *testing.T) {
	rs := newRS("web", 2)
	pods := []runtime.Object{
		podOf(rs, "old1", "n1", true, time.Hour),
		podOf(rs, "old2", "n2", true, 2*time.Hour),
		podOf(rs, "young", "n3", true, time.Second),
		podOf(rs, "unscheduled", "", false, time.Hour),
		podOf(rs, "notready", "n1", false, time.Hour),
	}
	f := newFixture(t, append([]runtime.Object{rs}, pods...)...)
	f.sync(t, "default/web")
	deleted := controllertest.Deleted(f.Clientset, "pods")
	sort.Strings(deleted)
	if strings.Join(deleted, ",") != "notready,unscheduled,young" {
		t.Errorf("deleted %v, want notready, unscheduled and young", deleted)
	}
}

// TestAdoptsAndReleases: an orphan that matches is adopted (counting
// toward replicas, so nothing is created); an owned pod whose labels no
// longer match is released.
func TestAdoptsAndReleases(t *testing.T) {
	rs := newRS("web", 1)
	orphan := podOf(rs, "orphan", "n1", true, time.Hour)
	orphan.OwnerReferences = nil
	gone := podOf(rs, "relabelled", "n1", true, time.Hour)
	gone.Labels = map[string]string{"app": "other"}
	f := newFixture(t, rs, orphan, gone)
	f.sync(t, "default/web")
	var patched []string
	for _, a := range controllertest.Actions(f.Clientset) {
		if strings.HasPrefix(a, "patch") {
			patched = append(patched, a)
		}
	}
	if len(patched) != 2 || controllertest.Creates(f.Clientset, "pods") != 0 || len(controllertest.Deleted(f.Clientset, "pods")) != 0 {
		t.Errorf("actions %v: want an adoption and a release, no create or delete", controllertest.Actions(f.Clientset))
	}
}

// TestStatus: replicas, readiness, availability after minReadySeconds on
// the controller's clock, fully labelled pods, observedGeneration.
func TestStatus(t *testing.T) {
	rs := newRS("web", 3)
	rs.Spec.MinReadySeconds = 10
	rs.Generation = 4
	p1 := podOf(rs, "p1", "n1", true, time.Minute) // ready a minute ago
	p2 := podOf(rs, "p2", "n1", true, 0)           // ready now
	p3 := podOf(rs, "p3", "n1", false, time.Minute)
	p3.Labels = map[string]string{"app": "web", "extra": "x"}
	rs.Spec.Template.Labels = map[string]string{"app": "web", "tier": "front"}
	p1.Labels = rs.Spec.Template.Labels
	f := newFixture(t, rs, p1, p2, p3)
	f.sync(t, "default/web")
	got, err := f.AppsV1().ReplicaSets("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := appsv1.ReplicaSetStatus{Replicas: 3, FullyLabeledReplicas: 1, ReadyReplicas: 2, AvailableReplicas: 1, ObservedGeneration: 4}
	if !equality.Semantic.DeepEqual(got.Status, want) {
		t.Errorf("status %+v, want %+v", got.Status, want)
	}
	if f.c.Queue.Len() != 0 {
		t.Errorf("queued before minReadySeconds")
	}
}

// TestReplicaFailure: a create the server refuses sets ReplicaFailure.
func TestReplicaFailure(t *testing.T) {
	rs := newRS("web", 1)
	rs.Spec.Template.Labels = nil // pods without labels cannot be created
	rs.Spec.Selector = &metav1.LabelSelector{}
	f := newFixture(t, rs)
	if err := f.c.sync(context.Background(), "default/web"); err == nil {
		t.Fatal("no error for a failed create")
	}
	got, _ := f.AppsV1().ReplicaSets("default").Get(context.Background(), "web", metav1.GetOptions{})
	if len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Reason != "FailedCreate" {
		t.Errorf("conditions %+v", got.Status.Conditions)
	}
}
