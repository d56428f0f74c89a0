package cronjob

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

// t0 is a schedule boundary: 10:00 UTC.
var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

type fixture struct {
	*controllertest.Fake
	c *Controller
}

func newFixture(t *testing.T, now time.Time, objs ...runtime.Object) *fixture {
	t.Helper()
	f, c := controllertest.Build(t, objs, func(f *controllertest.Fake) (*Controller, error) {
		return New(f, f.Informers.Batch().V1().Jobs(), f.Informers.Batch().V1().CronJobs(),
			Options{Logger: testutil.QuietLogger(), Clock: testingclock.NewFakeClock(now)})
	})
	return &fixture{Fake: f, c: c}
}

func (f *fixture) sync(t *testing.T) *time.Duration {
	t.Helper()
	after, err := f.c.sync(context.Background(), "default/cj")
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return after
}

func (f *fixture) cronJob(t *testing.T) *batchv1.CronJob {
	t.Helper()
	cj, err := f.BatchV1().CronJobs("default").Get(context.Background(), "cj", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cj
}

func newCJ(schedule string, policy batchv1.ConcurrencyPolicy) *batchv1.CronJob {
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "cj", Namespace: "default", UID: "cj-uid", CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec: batchv1.CronJobSpec{Schedule: schedule, TimeZone: ptr.To("UTC"), ConcurrencyPolicy: policy, Suspend: ptr.To(false),
			SuccessfulJobsHistoryLimit: ptr.To(int32(1)), FailedJobsHistoryLimit: ptr.To(int32(1)),
			JobTemplate: batchv1.JobTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"l": "v"}},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{Name: "c", Image: "img"}}}}}}},
		Status: batchv1.CronJobStatus{LastScheduleTime: &metav1.Time{Time: t0.Add(-time.Minute)}},
	}
}

func childJob(cj *batchv1.CronJob, at time.Time, state batchv1.JobConditionType) *batchv1.Job {
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: jobName(cj, at), Namespace: "default", UID: types.UID(jobName(cj, at)),
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(cj, kind)}},
		Status: batchv1.JobStatus{StartTime: &metav1.Time{Time: at}}}
	if state != "" {
		j.Status.Conditions = []batchv1.JobCondition{{Type: state, Status: corev1.ConditionTrue}}
		j.Status.CompletionTime = &metav1.Time{Time: at.Add(time.Second)}
	}
	return j
}

func TestMostRecent(t *testing.T) {
	cj := newCJ("*/5 * * * *", batchv1.AllowConcurrent)
	cj.Status.LastScheduleTime = &metav1.Time{Time: t0}
	sched, err := parseSchedule(cj)
	if err != nil {
		t.Fatal(err)
	}
	if _, last, _, _ := mostRecent(cj, t0.Add(4*time.Minute), sched, true); last != nil {
		t.Errorf("before the next time: %v", last)
	}
	_, last, missed, _ := mostRecent(cj, t0.Add(17*time.Minute), sched, true)
	if last == nil || !last.Equal(t0.Add(15*time.Minute)) || missed != 3 {
		t.Errorf("17 minutes later: most recent %v, %d missed; want 10:15 and 3", last, missed)
	}
	cj.Spec.StartingDeadlineSeconds = ptr.To(int64(60))
	if _, last, _, _ := mostRecent(cj, t0.Add(17*time.Minute), sched, true); last != nil {
		t.Errorf("10:15 is more than 60s ago: %v", last)
	}
	if d := untilNext(cj, t0.Add(17*time.Minute), sched); d != 3*time.Minute+nextDelta {
		t.Errorf("until next %v, want 3m0.1s", d)
	}
	feb31 := newCJ("0 0 31 2 *", batchv1.AllowConcurrent)
	s2, _ := parseSchedule(feb31)
	if _, _, _, err := mostRecent(feb31, t0, s2, true); err == nil {
		t.Error("a schedule that never fires is an error")
	}
}

// TestStartsJob: at its schedule time a CronJob creates the Job of that
// time from its template, records it active and the time scheduled, and
// asks to be woken at the next time.
func TestStartsJob(t *testing.T) {
	cj := newCJ("*/1 * * * *", batchv1.AllowConcurrent)
	f := newFixture(t, t0.Add(5*time.Second), cj)
	after := f.sync(t)
	jobs, _ := f.BatchV1().Jobs("default").List(context.Background(), metav1.ListOptions{})
	if len(jobs.Items) != 1 {
		t.Fatalf("%d jobs, want 1", len(jobs.Items))
	}
	j := jobs.Items[0]
	if j.Name != jobName(cj, t0) || j.Labels["l"] != "v" || j.Annotations[batchv1.CronJobScheduledTimestampAnnotation] != "2025-03-01T10:00:00Z" || !metav1.IsControlledBy(&j, cj) {
		t.Errorf("job %s %v %v", j.Name, j.Labels, j.Annotations)
	}
	st := f.cronJob(t).Status
	if len(st.Active) != 1 || !st.LastScheduleTime.Time.Equal(t0) {
		t.Errorf("status %+v", st)
	}
	if after == nil || *after != 55*time.Second+nextDelta {
		t.Errorf("wake after %v, want 55.1s", after)
	}
}

// TestConcurrencyPolicies: Forbid waits for the active Job; Replace
// deletes it and starts the new one.
func TestConcurrencyPolicies(t *testing.T) {
	cj := newCJ("*/1 * * * *", batchv1.ForbidConcurrent)
	running := childJob(cj, t0.Add(-time.Minute), "")
	cj.Status.Active = []corev1.ObjectReference{{Kind: "Job", Namespace: "default", Name: running.Name, UID: running.UID}}
	f := newFixture(t, t0.Add(time.Second), cj, running)
	f.sync(t)
	if n := controllertest.Creates(f.Clientset, "jobs"); n != 0 {
		t.Errorf("Forbid created %d jobs while one runs", n)
	}
	cj.Spec.ConcurrencyPolicy = batchv1.ReplaceConcurrent
	f = newFixture(t, t0.Add(time.Second), cj, running)
	f.sync(t)
	if d := controllertest.Deleted(f.Clientset, "jobs"); strings.Join(d, ",") != running.Name || controllertest.Creates(f.Clientset, "jobs") != 1 {
		t.Errorf("Replace: deleted %v, %d created", d, controllertest.Creates(f.Clientset, "jobs"))
	}
	if st := f.cronJob(t).Status; len(st.Active) != 1 || st.Active[0].Name != jobName(cj, t0) {
		t.Errorf("active %v", st.Active)
	}
}

// TestHistoryAndSuccess: finished Jobs beyond the limits go, oldest
// first; the last success is recorded and finished Jobs leave the active
// list.
func TestHistoryAndSuccess(t *testing.T) {
	cj := newCJ("*/1 * * * *", batchv1.AllowConcurrent)
	cj.Spec.Suspend = ptr.To(true) // only bookkeeping
	ok1 := childJob(cj, t0.Add(-3*time.Minute), batchv1.JobComplete)
	ok2 := childJob(cj, t0.Add(-2*time.Minute), batchv1.JobComplete)
	bad := childJob(cj, t0.Add(-time.Minute), batchv1.JobFailed)
	cj.Status.Active = []corev1.ObjectReference{{Name: bad.Name, UID: bad.UID}}
	f := newFixture(t, t0, cj, ok1, ok2, bad)
	f.sync(t)
	if d := controllertest.Deleted(f.Clientset, "jobs"); strings.Join(d, ",") != ok1.Name {
		t.Errorf("deleted %v, want the older success %s", d, ok1.Name)
	}
	st := f.cronJob(t).Status
	if len(st.Active) != 0 || st.LastSuccessfulTime == nil || !st.LastSuccessfulTime.Time.Equal(ok2.Status.CompletionTime.Time) {
		t.Errorf("status %+v", st)
	}
	if n := controllertest.Creates(f.Clientset, "jobs"); n != 0 {
		t.Errorf("a suspended cronjob created %d jobs", n)
	}
}

// TestMissedDeadline: a schedule time older than startingDeadlineSeconds
// is skipped.
func TestMissedDeadline(t *testing.T) {
	cj := newCJ("0 * * * *", batchv1.AllowConcurrent) // hourly
	cj.Spec.StartingDeadlineSeconds = ptr.To(int64(30))
	cj.Status.LastScheduleTime = &metav1.Time{Time: t0.Add(-time.Hour)}
	f := newFixture(t, t0.Add(time.Minute), cj)
	f.sync(t)
	if n := controllertest.Creates(f.Clientset, "jobs"); n != 0 {
		t.Errorf("created %d jobs a minute past a 30s deadline", n)
	}
}
