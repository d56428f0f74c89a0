package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/controlplane/controllers/cronjob"
	"github.com/skep-dev/skep/controlplane/controllers/job"
	"github.com/skep-dev/skep/internal/testutil"
)

// jobFinished says how a Job finished, if it did.
func jobFinished(j *batchv1.Job) (batchv1.JobConditionType, bool) {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c.Type, true
		}
	}
	return "", false
}

func newCronJob(name, image string, policy batchv1.ConcurrencyPolicy) *batchv1.CronJob {
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.CronJobSpec{
			Schedule:                   "*/1 * * * *",
			ConcurrencyPolicy:          policy,
			SuccessfulJobsHistoryLimit: ptr.To(int32(2)),
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: image}}}}}},
		},
	}
}

// cronJobsOf lists the Jobs a CronJob created, sorted by name (by
// schedule time).
func cronJobsOf(ctx context.Context, w *workloadCluster, cj string) ([]batchv1.Job, error) {
	l, err := w.cs.BatchV1().Jobs("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []batchv1.Job
	for _, j := range l.Items {
		if ref := metav1.GetControllerOf(&j); ref != nil && ref.Kind == "CronJob" && ref.Name == cj && j.DeletionTimestamp == nil {
			out = append(out, j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// TestCronJobFires drives the CronJob controller's clock a minute at a
// time (no real minute passes): an every-minute CronJob starts one Job a
// minute, records lastScheduleTime and lastSuccessfulTime, keeps two
// successful Jobs; Forbid skips a minute while its Job runs, Replace
// replaces it; a suspended CronJob starts nothing.
func TestCronJobFires(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	w := startWorkloads(t, controllers.Options{Workloads: controllers.WorkloadOptions{
		Job:     job.Options{PodFailureBackoff: 50 * time.Millisecond, BatchPeriod: 10 * time.Millisecond},
		CronJob: cronjob.Options{Clock: clk},
	}}, fakeNodeOptions{Phase: jobPhases})
	w.nodes.addNode(t, "n1", nil)
	ctx := context.Background()
	for _, cj := range []*batchv1.CronJob{
		newCronJob("hello", "ok", batchv1.AllowConcurrent),
		newCronJob("forbid", "sleep", batchv1.ForbidConcurrent),
		newCronJob("replace", "sleep", batchv1.ReplaceConcurrent),
	} {
		if _, err := w.cs.BatchV1().CronJobs("default").Create(ctx, cj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// wantJobs waits until the CronJob has n Jobs, the newest of them
	// the Job of this minute when latest is set, and (done) all finished
	// and off its active list, or else one of them active.
	wantJobs := func(cj string, n int, latest, done bool) []batchv1.Job {
		t.Helper()
		var jobs []batchv1.Job
		testutil.Eventually(t, 20*time.Second, fmt.Sprintf("%s with %d jobs", cj, n), func() error {
			var err error
			if jobs, err = cronJobsOf(ctx, w, cj); err != nil {
				return err
			}
			if len(jobs) != n {
				return fmt.Errorf("%d jobs", len(jobs))
			}
			if want := fmt.Sprintf("%s-%d", cj, clk.Now().Unix()/60); latest && jobs[n-1].Name != want {
				return fmt.Errorf("newest job %s, want %s", jobs[n-1].Name, want)
			}
			for _, j := range jobs {
				if _, finished := jobFinished(&j); done && !finished {
					return fmt.Errorf("job %s not finished", j.Name)
				}
			}
			c, err := w.cs.BatchV1().CronJobs("default").Get(ctx, cj, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if done && len(c.Status.Active) != 0 {
				return fmt.Errorf("active %v", c.Status.Active)
			}
			if !done && len(c.Status.Active) != 1 {
				return fmt.Errorf("active %v", c.Status.Active)
			}
			return nil
		})
		return jobs
	}
	minute := func() {
		clk.Step(time.Minute)
	}

	minute()
	first := wantJobs("hello", 1, true, true)
	wantJobs("forbid", 1, true, false)
	replaced := wantJobs("replace", 1, true, false)
	c, _ := w.cs.BatchV1().CronJobs("default").Get(ctx, "hello", metav1.GetOptions{})
	if c.Status.LastScheduleTime == nil || c.Status.LastSuccessfulTime == nil ||
		first[0].Name != fmt.Sprintf("hello-%d", c.Status.LastScheduleTime.Unix()/60) ||
		first[0].Annotations[batchv1.CronJobScheduledTimestampAnnotation] == "" {
		t.Errorf("status %+v, job %s %v", c.Status, first[0].Name, first[0].Annotations)
	}

	minute()
	wantJobs("hello", 2, true, true)
	// Forbid looked at this minute and skipped it.
	testutil.Eventually(t, 20*time.Second, "forbid skipping a minute", func() error {
		evs, err := w.cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=forbid,reason=JobAlreadyActive"})
		if err != nil || len(evs.Items) == 0 {
			return fmt.Errorf("no JobAlreadyActive event: %v", err)
		}
		return nil
	})
	forbid := wantJobs("forbid", 1, false, false)
	testutil.Eventually(t, 20*time.Second, "replace's job replaced", func() error {
		jobs, err := cronJobsOf(ctx, w, "replace")
		if err != nil {
			return err
		}
		if len(jobs) != 1 || jobs[0].Name == replaced[0].Name {
			return fmt.Errorf("jobs %v", jobs)
		}
		return nil
	})

	minute()
	jobs := wantJobs("hello", 2, true, true) // the history limit keeps two
	if jobs[0].Name == first[0].Name {
		t.Errorf("the oldest successful job %s was kept", first[0].Name)
	}
	if again := wantJobs("forbid", 1, false, false); again[0].Name != forbid[0].Name {
		t.Errorf("forbid started %s while %s ran", again[0].Name, forbid[0].Name)
	}

	if _, err := w.cs.BatchV1().CronJobs("default").Patch(ctx, "hello", "application/merge-patch+json", []byte(`{"spec":{"suspend":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the controller sees the update
	minute()
	time.Sleep(300 * time.Millisecond)
	if jobs := wantJobs("hello", 2, false, true); jobs[1].Name == fmt.Sprintf("hello-%d", clk.Now().Unix()/60) {
		t.Errorf("a suspended cronjob started %s", jobs[1].Name)
	}

	run := w.kubectl(t, kubectls(t)[0])
	if out := run("get", "cronjobs"); !strings.Contains(out, "*/1 * * * *") || !strings.Contains(out, "True") {
		t.Errorf("kubectl get cronjobs:\n%s", out)
	}
	run("create", "job", "manual", "--from=cronjob/hello")
	waitJob(t, w, "manual", batchv1.JobComplete)
}
