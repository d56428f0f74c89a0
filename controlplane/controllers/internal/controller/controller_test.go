package controller

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestExpectations(t *testing.T) {
	e := NewExpectations()
	now := time.Now()
	e.now = func() time.Time { return now }
	if !e.Satisfied("a") {
		t.Fatal("no expectations: satisfied")
	}
	e.ExpectCreations("a", 2)
	e.CreationObserved("a")
	if e.Satisfied("a") {
		t.Fatal("one creation still awaited")
	}
	e.CreationObserved("a")
	if !e.Satisfied("a") {
		t.Fatal("both creations seen")
	}
	e.ExpectDeletions("a", []string{"ns/p1", "ns/p2"})
	e.DeletionObserved("a", "ns/other") // not ours
	e.DeletionObserved("a", "ns/p1")
	e.DeletionObserved("a", "ns/p1") // twice counts once
	if e.Satisfied("a") {
		t.Fatal("p2's deletion still awaited")
	}
	now = now.Add(ExpectationsTimeout + time.Second)
	if !e.Satisfied("a") {
		t.Fatal("expired expectations must not block forever")
	}
	e.Expect("b", 3, nil)
	e.LowerCreations("b", 3)
	if !e.Satisfied("b") {
		t.Fatal("lowered creations")
	}
}

func pod(name, node string, phase corev1.PodPhase, ready bool, created time.Time) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name), CreationTimestamp: metav1.NewTime(created)},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(created)}}
	}
	return p
}

// TestRankedPods: the scale-down order puts unscheduled, pending, not
// ready, cheap, doubled-up and young pods first.
func TestRankedPods(t *testing.T) {
	now := time.Now()
	old, young := now.Add(-time.Hour), now.Add(-time.Second)
	cheap := pod("cheap", "n3", corev1.PodRunning, true, old)
	cheap.Annotations = map[string]string{PodDeletionCostAnnotation: "-5"}
	pods := []*corev1.Pod{
		pod("old-ready", "n1", corev1.PodRunning, true, old),
		pod("young-ready", "n2", corev1.PodRunning, true, young),
		pod("unscheduled", "", corev1.PodPending, false, old),
		pod("pending", "n1", corev1.PodPending, false, old),
		pod("not-ready", "n1", corev1.PodRunning, false, old),
		cheap,
		pod("doubled", "n4", corev1.PodRunning, true, old),
	}
	ranks := map[string]int{"doubled": 3}
	r := RankedPods{Pods: pods, Rank: make([]int, len(pods)), Now: now}
	for i, p := range pods {
		r.Rank[i] = ranks[p.Name]
	}
	sort.Sort(r)
	var got []string
	for _, p := range r.Pods {
		got = append(got, p.Name)
	}
	want := "unscheduled,pending,not-ready,cheap,doubled,young-ready,old-ready"
	if strings.Join(got, ",") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

func TestIsPodAvailable(t *testing.T) {
	now := time.Now()
	p := pod("p", "n", corev1.PodRunning, true, now.Add(-5*time.Second))
	if !IsPodAvailable(p, 0, now) || !IsPodAvailable(p, 4, now) || IsPodAvailable(p, 10, now) {
		t.Error("availability must count minReadySeconds from the Ready transition")
	}
}

func TestSlowStartBatch(t *testing.T) {
	var calls atomic.Int32
	ok, err := SlowStartBatch(10, 1, func() error { calls.Add(1); return nil })
	if ok != 10 || err != nil || calls.Load() != 10 {
		t.Errorf("all succeed: %d %v %d calls", ok, err, calls.Load())
	}
	calls.Store(0)
	// Every call fails: batches 1 then stop.
	ok, err = SlowStartBatch(10, 1, func() error { calls.Add(1); return errors.New("quota") })
	if ok != 0 || err == nil || calls.Load() != 1 {
		t.Errorf("all fail: %d successes, %v, %d calls, want 0, an error, 1 call", ok, err, calls.Load())
	}
	calls.Store(0)
	// The 4th call fails: batches 1, 2, 4 are made (7 calls), 6 succeed.
	ok, err = SlowStartBatch(10, 1, func() error {
		if calls.Add(1) == 4 {
			return errors.New("boom")
		}
		return nil
	})
	if ok != 6 || err == nil || calls.Load() != 7 {
		t.Errorf("one failure: %d successes, %v, %d calls, want 6, an error, 7", ok, err, calls.Load())
	}
}

func TestComputeHash(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "a"}}}}
	h1 := ComputeHash(tmpl, nil)
	if h1 != ComputeHash(tmpl.DeepCopy(), nil) {
		t.Error("the hash of equal templates differs")
	}
	one := int32(1)
	if h1 == ComputeHash(tmpl, &one) {
		t.Error("the collision count does not change the hash")
	}
	tmpl.Spec.Containers[0].Image = "b"
	if h1 == ComputeHash(tmpl, nil) {
		t.Error("the hash ignores the image")
	}
}

// TestClaim: orphans that match are adopted, owned pods that no longer
// match are released, others' pods are left, and nothing is adopted for
// a controller the fresh read says is being deleted.
func TestClaim(t *testing.T) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "rs", Namespace: "ns", UID: "rs-uid"}}
	kind := appsv1.SchemeGroupVersion.WithKind("ReplicaSet")
	mine := metav1.NewControllerRef(rs, kind)
	theirs := metav1.NewControllerRef(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: "x-uid"}}, kind)
	mk := func(name, app string, ref *metav1.OwnerReference) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name), Labels: map[string]string{"app": app}}}
		if ref != nil {
			p.OwnerReferences = []metav1.OwnerReference{*ref}
		}
		return p
	}
	pods := []*corev1.Pod{mk("owned", "web", mine), mk("orphan", "web", nil), mk("relabelled", "db", mine),
		mk("theirs", "web", theirs), mk("stranger", "db", nil)}
	cs := fake.NewClientset(pods[0], pods[1], pods[2], pods[3], pods[4])
	m := &RefManager{Controller: rs, Kind: kind, Selector: labels.SelectorFromSet(labels.Set{"app": "web"}),
		CanAdopt: func(context.Context) error { return nil }}
	got, err := Claim(context.Background(), m, pods, PodPatcher(cs))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "owned,orphan" {
		t.Errorf("claimed %v, want owned,orphan", names)
	}
	patched := map[string]string{}
	for _, a := range cs.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok {
			patched[pa.GetName()] = string(pa.GetPatch())
		}
	}
	if len(patched) != 2 || !strings.Contains(patched["orphan"], `"controller":true`) || !strings.Contains(patched["relabelled"], `"$patch":"delete"`) {
		t.Errorf("patches %v: want an adoption of orphan and a release of relabelled", patched)
	}

	// A controller being deleted adopts nothing.
	m = &RefManager{Controller: rs, Kind: kind, Selector: labels.Everything(),
		CanAdopt: func(context.Context) error { return errors.New("being deleted") }}
	if got, err := Claim(context.Background(), m, []*corev1.Pod{mk("orphan2", "web", nil)}, PodPatcher(cs)); len(got) != 0 || err == nil {
		t.Errorf("claimed %v (err %v) for a controller that may not adopt", got, err)
	}
}
