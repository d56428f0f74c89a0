package deployment

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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
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
		return New(f, f.Informers.Apps().V1().Deployments(), f.Informers.Apps().V1().ReplicaSets(), f.Informers.Core().V1().Pods(),
			Options{Logger: testutil.QuietLogger(), Clock: testingclock.NewFakeClock(time.Now())})
	})
	return &fixture{Fake: f, c: c}
}

func (f *fixture) sync(t *testing.T) {
	t.Helper()
	if err := f.c.sync(context.Background(), "default/web"); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

// replicaSets are the ReplicaSets in the clientset, "name=replicas" sorted.
func (f *fixture) replicaSets(t *testing.T) (map[string]*appsv1.ReplicaSet, string) {
	t.Helper()
	l, err := f.AppsV1().ReplicaSets("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*appsv1.ReplicaSet{}
	var s []string
	for i := range l.Items {
		rs := &l.Items[i]
		m[rs.Name] = rs
		s = append(s, fmt.Sprintf("%s=%d", rs.Name, *rs.Spec.Replicas))
	}
	sort.Strings(s)
	return m, strings.Join(s, ",")
}

func (f *fixture) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d, err := f.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newDeployment(replicas int32, image string) *appsv1.Deployment {
	lbls := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "d-uid", Generation: 1},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
			RevisionHistoryLimit:    ptr.To(int32(10)),
			ProgressDeadlineSeconds: ptr.To(int32(600)),
		},
	}
}

// rsFor is a ReplicaSet of d for image with replicas, all of them
// available, at revision rev.
func rsFor(d *appsv1.Deployment, image string, replicas int32, rev int, age time.Duration) *appsv1.ReplicaSet {
	tmpl := d.Spec.Template.DeepCopy()
	tmpl.Spec.Containers[0].Image = image
	hash := controller.ComputeHash(tmpl, nil)
	tmpl.Labels = withLabel(tmpl.Labels, hash)
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash, Namespace: "default", UID: types.UID("rs-" + image), Labels: tmpl.Labels,
			CreationTimestamp: metav1.NewTime(time.Now().Add(-age)),
			Annotations:       map[string]string{RevisionAnnotation: fmt.Sprint(rev), DesiredReplicasAnnotation: fmt.Sprint(*d.Spec.Replicas), MaxReplicasAnnotation: fmt.Sprint(*d.Spec.Replicas + 1)},
			OwnerReferences:   []metav1.OwnerReference{*metav1.NewControllerRef(d, kind)}},
		Spec:   appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: *tmpl},
		Status: appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas, ObservedGeneration: 1},
	}
}

// TestCreatesNewReplicaSet: a new Deployment gets a ReplicaSet named after
// its template hash, with the hash in its labels and selector, revision 1
// and the replica annotations; the Deployment gets revision 1 and
// NewReplicaSetCreated.
func TestCreatesNewReplicaSet(t *testing.T) {
	d := newDeployment(3, "v1")
	f := newFixture(t, d)
	f.sync(t)
	rss, _ := f.replicaSets(t)
	hash := controller.ComputeHash(&d.Spec.Template, nil)
	rs := rss["web-"+hash]
	if rs == nil {
		t.Fatalf("no replicaset web-%s: %v", hash, rss)
	}
	if *rs.Spec.Replicas != 3 || rs.Spec.Selector.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] != hash ||
		rs.Spec.Template.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash || rs.Annotations[RevisionAnnotation] != "1" ||
		rs.Annotations[DesiredReplicasAnnotation] != "3" || rs.Annotations[MaxReplicasAnnotation] != "4" || !metav1.IsControlledBy(rs, d) {
		t.Errorf("replicaset %+v", rs)
	}
	got := f.deployment(t)
	if got.Annotations[RevisionAnnotation] != "1" || getCondition(got.Status, appsv1.DeploymentProgressing).Reason != reasonNewRS {
		t.Errorf("deployment %v %+v", got.Annotations, got.Status.Conditions)
	}
}

// TestRollingUpdateSteps: with 4 replicas, maxSurge 1 and maxUnavailable
// 1, a new template adds one new pod (5 in all) and removes one old
// available pod (3 available left); while the new pods are not available
// the total stays at 5 and no more old pods go.
func TestRollingUpdateSteps(t *testing.T) {
	d := newDeployment(4, "v2")
	old := rsFor(d, "v1", 4, 1, time.Hour)
	f := newFixture(t, d, old)
	f.sync(t)
	rss, got := f.replicaSets(t)
	var newRS *appsv1.ReplicaSet
	for n, rs := range rss {
		if n != old.Name {
			newRS = rs
		}
	}
	if newRS == nil || *newRS.Spec.Replicas != 1 || *rss[old.Name].Spec.Replicas != 3 {
		t.Fatalf("after the first sync: %s, want the new replicaset at 1 and the old at 3", got)
	}
	if newRS.Annotations[RevisionAnnotation] != "2" {
		t.Errorf("new replicaset revision %q, want 2", newRS.Annotations[RevisionAnnotation])
	}
	// The ReplicaSet controller did its part; the new pod is not ready.
	old = rss[old.Name]
	old.Status = appsv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 3, AvailableReplicas: 3, ObservedGeneration: 1}
	newRS.Status = appsv1.ReplicaSetStatus{Replicas: 1, ObservedGeneration: 1}
	f = newFixture(t, f.deployment(t), old, newRS)
	f.sync(t)
	rss, got = f.replicaSets(t)
	if *rss[newRS.Name].Spec.Replicas != 2 || *rss[old.Name].Spec.Replicas != 3 {
		t.Fatalf("second sync: %s, want new 2 (5 in all) and old still 3", got)
	}
	newRS = rss[newRS.Name]
	newRS.Status = appsv1.ReplicaSetStatus{Replicas: 2, ObservedGeneration: 1}
	f = newFixture(t, f.deployment(t), old, newRS)
	f.sync(t)
	if _, again := f.replicaSets(t); again != got {
		t.Errorf("third sync with nothing available: %s, want no change from %s", again, got)
	}
}

// TestRollbackKeepsHistory: when the template goes back to an old
// ReplicaSet's (kubectl rollout undo), that ReplicaSet becomes the newest
// revision and remembers its old number.
func TestRollbackKeepsHistory(t *testing.T) {
	d := newDeployment(2, "v1")
	v1 := rsFor(d, "v1", 0, 1, 2*time.Hour)
	v1.Status = appsv1.ReplicaSetStatus{ObservedGeneration: 1}
	v2 := rsFor(d, "v2", 2, 2, time.Hour)
	f := newFixture(t, d, v1, v2)
	f.sync(t)
	rss, _ := f.replicaSets(t)
	if a := rss[v1.Name].Annotations; a[RevisionAnnotation] != "3" || a[RevisionHistoryAnnotation] != "1" {
		t.Errorf("rolled-back replicaset annotations %v, want revision 3, history 1", a)
	}
}

// TestCleanupHistory: a complete Deployment keeps revisionHistoryLimit old
// ReplicaSets without pods, deleting the oldest.
func TestCleanupHistory(t *testing.T) {
	d := newDeployment(1, "v4")
	d.Spec.RevisionHistoryLimit = ptr.To(int32(1))
	cur := rsFor(d, "v4", 1, 4, 0)
	objs := []runtime.Object{d, cur}
	for i := 1; i <= 3; i++ {
		rs := rsFor(d, fmt.Sprintf("v%d", i), 0, i, time.Duration(5-i)*time.Hour)
		rs.Status = appsv1.ReplicaSetStatus{ObservedGeneration: 1}
		objs = append(objs, rs)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1}
	f := newFixture(t, objs...)
	f.sync(t)
	deleted := controllertest.Deleted(f.Clientset, "replicasets")
	sort.Strings(deleted)
	want := []string{objs[2].(*appsv1.ReplicaSet).Name, objs[3].(*appsv1.ReplicaSet).Name}
	sort.Strings(want)
	if strings.Join(deleted, ",") != strings.Join(want, ",") {
		t.Errorf("deleted %v, want revisions 1 and 2 (%v)", deleted, want)
	}
}

// TestRecreate: old ReplicaSets go to 0 first; the new one is created
// only once no old pod runs.
func TestRecreate(t *testing.T) {
	d := newDeployment(2, "v2")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	old := rsFor(d, "v1", 2, 1, time.Hour)
	f := newFixture(t, d, old)
	f.sync(t)
	if _, got := f.replicaSets(t); got != old.Name+"=0" {
		t.Fatalf("after the first sync: %s, want only the old one, scaled to 0", got)
	}
	// Scaled down, but a pod of it still runs: wait.
	old.Spec.Replicas = ptr.To(int32(0))
	old.Status = appsv1.ReplicaSetStatus{ObservedGeneration: 1}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", Labels: old.Spec.Template.Labels,
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(old, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	f = newFixture(t, d, old, p)
	f.sync(t)
	if n := controllertest.Creates(f.Clientset, "replicasets"); n != 0 {
		t.Fatalf("created a new replicaset while an old pod runs")
	}
	f = newFixture(t, d, old)
	f.sync(t)
	if _, got := f.replicaSets(t); !strings.Contains(got, "=2") {
		t.Errorf("after the old pods went: %s, want the new replicaset at 2", got)
	}
}

// TestProportionalScaling: scaling 10 to 15 in the middle of a rollout
// spreads the 5 over both ReplicaSets by size.
func TestProportionalScaling(t *testing.T) {
	d := newDeployment(15, "v2")
	d.Spec.Strategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromInt32(2))
	old := rsFor(d, "v1", 8, 1, time.Hour)
	cur := rsFor(d, "v2", 4, 2, time.Minute)
	for _, rs := range []*appsv1.ReplicaSet{old, cur} {
		rs.Annotations[DesiredReplicasAnnotation], rs.Annotations[MaxReplicasAnnotation] = "10", "12"
	}
	f := newFixture(t, d, old, cur)
	f.sync(t)
	rss, got := f.replicaSets(t)
	// 17 allowed (15+2), 12 now: 5 more, 8/12 and 4/12 of them.
	if *rss[old.Name].Spec.Replicas+*rss[cur.Name].Spec.Replicas != 17 || *rss[cur.Name].Spec.Replicas < 5 || *rss[old.Name].Spec.Replicas < 11 {
		t.Errorf("after scaling to 15: %s, want 11/12 old and 5/6 new, 17 in all", got)
	}
}

// TestProgressDeadline: a rollout without progress for
// progressDeadlineSeconds gets ProgressDeadlineExceeded.
func TestProgressDeadline(t *testing.T) {
	d := newDeployment(2, "v2")
	d.Spec.ProgressDeadlineSeconds = ptr.To(int32(60))
	old := rsFor(d, "v1", 2, 1, time.Hour)
	stuck := rsFor(d, "v2", 1, 2, time.Minute)
	stuck.Status = appsv1.ReplicaSetStatus{Replicas: 1, ObservedGeneration: 1}
	now := time.Now()
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 1, ReadyReplicas: 2, AvailableReplicas: 2,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: reasonRSUpdated,
			LastUpdateTime: metav1.NewTime(now.Add(-2 * time.Minute)), LastTransitionTime: metav1.NewTime(now.Add(-2 * time.Minute))}}}
	old.Spec.Replicas = ptr.To(int32(2))
	f := newFixture(t, d, old, stuck)
	f.sync(t)
	c := getCondition(f.deployment(t).Status, appsv1.DeploymentProgressing)
	if c == nil || c.Reason != reasonTimedOut || c.Status != corev1.ConditionFalse {
		t.Errorf("progressing %+v, want ProgressDeadlineExceeded", c)
	}
}

func TestResolveFenceposts(t *testing.T) {
	for _, c := range []struct {
		surge, unavail string
		desired        int32
		s, u           int32
	}{
		{"25%", "25%", 10, 3, 2},
		{"0%", "1%", 2, 0, 1}, // rounds to 0 and 0: one may be unavailable
		{"1", "0", 5, 1, 0},
	} {
		s, u := resolveFenceposts(ptr.To(intstr.Parse(c.surge)), ptr.To(intstr.Parse(c.unavail)), c.desired)
		if s != c.s || u != c.u {
			t.Errorf("surge %s unavailable %s of %d: %d %d, want %d %d", c.surge, c.unavail, c.desired, s, u, c.s, c.u)
		}
	}
}
