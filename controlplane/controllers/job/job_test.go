package job

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
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
		return New(f, f.Informers.Batch().V1().Jobs(), f.Informers.Core().V1().Pods(), Options{Logger: testutil.QuietLogger(), Clock: testingclock.NewFakeClock(time.Now())})
	})
	return &fixture{Fake: f, c: c}
}

func (f *fixture) sync(t *testing.T) {
	t.Helper()
	if err := f.c.sync(context.Background(), "default/j"); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func (f *fixture) job(t *testing.T) *batchv1.Job {
	t.Helper()
	j, err := f.BatchV1().Jobs("default").Get(context.Background(), "j", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func newJob(completions, parallelism, backoffLimit int32) *batchv1.Job {
	lbls := map[string]string{batchv1.ControllerUidLabel: "j-uid", batchv1.JobNameLabel: "j"}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "default", UID: "j-uid"},
		Spec: batchv1.JobSpec{
			Completions: &completions, Parallelism: &parallelism, BackoffLimit: &backoffLimit,
			CompletionMode: ptr.To(batchv1.NonIndexedCompletion), Suspend: ptr.To(false),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{batchv1.ControllerUidLabel: "j-uid"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "img"}}}},
		},
	}
}

func jobPod(j *batchv1.Job, name string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name), Labels: j.Spec.Template.Labels,
			Finalizers:      []string{batchv1.JobTrackingFinalizer},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(j, kind)}},
		Spec:   corev1.PodSpec{NodeName: "n"},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// TestCreatesParallelismPods: 5 completions, 2 at a time: 2 pods, with
// the tracking finalizer, controlled by the Job; startTime set.
func TestCreatesParallelismPods(t *testing.T) {
	f := newFixture(t, newJob(5, 2, 6))
	f.sync(t)
	pods, _ := f.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if len(pods.Items) != 2 {
		t.Fatalf("%d pods, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		if !hasFinalizer(&p) || !metav1.IsControlledBy(&p, newJob(0, 0, 0)) || !strings.HasPrefix(p.Name, "j-") {
			t.Errorf("pod %s: finalizers %v, owners %v", p.Name, p.Finalizers, p.OwnerReferences)
		}
	}
	j := f.job(t)
	if j.Status.Active != 2 || j.Status.StartTime == nil {
		t.Errorf("status %+v", j.Status)
	}
	// Before the watch shows them, no more.
	f.ClearActions()
	f.sync(t)
	if n := controllertest.Creates(f.Clientset, "pods"); n != 0 {
		t.Errorf("%d more pods before the watch showed the first", n)
	}
}

// TestCountsThroughUncounted: a succeeded pod is written to
// uncountedTerminatedPods, loses its finalizer, then is counted.
func TestCountsThroughUncounted(t *testing.T) {
	j := newJob(2, 1, 6)
	f := newFixture(t, j, jobPod(j, "done", corev1.PodSucceeded))
	f.sync(t)
	var steps []string
	for _, a := range controllertest.Actions(f.Clientset) {
		if a != "create events" {
			steps = append(steps, a)
		}
	}
	// The status goes out with the uid before the finalizer is removed,
	// and the count after; the replacement pod is created first.
	want := "create pods,update jobs/status,patch pods,update jobs/status"
	if strings.Join(steps, ",") != want {
		t.Errorf("actions %v, want %s", steps, want)
	}
	st := f.job(t).Status
	if st.Succeeded != 1 || len(st.UncountedTerminatedPods.Succeeded) != 0 || st.Active != 1 {
		t.Errorf("status %+v", st)
	}
	p, _ := f.CoreV1().Pods("default").Get(context.Background(), "done", metav1.GetOptions{})
	if hasFinalizer(p) {
		t.Error("the counted pod kept its finalizer")
	}
}

// TestCompleteAfterSuccessCriteria: the last success gives
// SuccessCriteriaMet and, with nothing left to count, Complete.
func TestCompleteAfterSuccessCriteria(t *testing.T) {
	j := newJob(1, 1, 6)
	f := newFixture(t, j, jobPod(j, "done", corev1.PodSucceeded))
	f.sync(t)
	st := f.job(t).Status
	var types []string
	for _, c := range st.Conditions {
		types = append(types, string(c.Type))
	}
	if strings.Join(types, ",") != "SuccessCriteriaMet,Complete" || st.CompletionTime == nil || st.Succeeded != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestBackoffLimitExceeded: more failures than backoffLimit fail the Job
// (FailureTarget, then Failed) and delete its running pods.
func TestBackoffLimitExceeded(t *testing.T) {
	j := newJob(3, 2, 1)
	j.Status.Failed = 1
	running := jobPod(j, "running", corev1.PodRunning)
	f := newFixture(t, j, jobPod(j, "failed", corev1.PodFailed), running)
	f.sync(t)
	st := f.job(t).Status
	if d := controllertest.Deleted(f.Clientset, "pods"); strings.Join(d, ",") != "running" {
		t.Errorf("deleted %v, want the running pod", d)
	}
	var reasons []string
	for _, c := range st.Conditions {
		reasons = append(reasons, string(c.Type)+":"+c.Reason)
	}
	// The running pod is terminating: Failed waits for it.
	if strings.Join(reasons, ",") != "FailureTarget:BackoffLimitExceeded" || st.Failed != 3 {
		t.Errorf("conditions %v, failed %d: want FailureTarget only and 3 failed (the deleted pod counts)", reasons, st.Failed)
	}
}

// TestSuspend: a suspended Job deletes its active pods (dropping their
// finalizer: they are not failures) and says Suspended.
func TestSuspend(t *testing.T) {
	j := newJob(3, 2, 6)
	j.Spec.Suspend = ptr.To(true)
	f := newFixture(t, j, jobPod(j, "p1", corev1.PodRunning))
	f.sync(t)
	st := f.job(t).Status
	if len(controllertest.Deleted(f.Clientset, "pods")) != 1 || st.Active != 0 || st.Failed != 0 ||
		len(st.Conditions) != 1 || st.Conditions[0].Type != batchv1.JobSuspended {
		t.Errorf("status %+v, deleted %v", st, controllertest.Deleted(f.Clientset, "pods"))
	}
}

// TestFailureBackoff: a replacement for a failed pod waits 10s, 20s, …
func TestFailureBackoff(t *testing.T) {
	now := time.Now()
	failedAt := func(d time.Duration) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(now.Add(-d))}}}}}}
	}
	s := newBackoffStore()
	r := s.next("k", nil, []*corev1.Pod{failedAt(2 * time.Second)})
	if got := r.remaining(now, 10*time.Second, time.Minute); got != 8*time.Second {
		t.Errorf("after one failure 2s ago: %v, want 8s", got)
	}
	s.update(r)
	r = s.next("k", nil, []*corev1.Pod{failedAt(time.Second)})
	if got := r.remaining(now, 10*time.Second, time.Minute); got != 19*time.Second {
		t.Errorf("after two failures: %v, want 19s", got)
	}
	r = s.next("k", []*corev1.Pod{{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}}, nil)
	if got := r.remaining(now, 10*time.Second, time.Minute); got != 0 {
		t.Errorf("after a success: %v, want 0", got)
	}
}

func TestIndexes(t *testing.T) {
	s := indexes(nil).with([]int{5, 1, 2, 3, 7, 8})
	if got := s.String(); got != "1-3,5,7,8" {
		t.Errorf("%q, want 1-3,5,7,8", got)
	}
	if p := parseIndexes("1-3,5,7,8,12", 10); p.String() != "1-3,5,7,8" || p.total() != 6 || !p.has(2) || p.has(4) {
		t.Errorf("parsed %q (%d)", p.String(), p.total())
	}
	j := newJob(4, 2, 6)
	if got := pendingIndexes(j, nil, parseIndexes("0,2", 4), 5); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Errorf("pending %v, want [1 3]", got)
	}
}
