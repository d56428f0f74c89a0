package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/controlplane/controllers/job"
	"github.com/skep-dev/skep/internal/testutil"
)

// jobPhases makes the fake agents finish job pods as their image says:
// "ok" succeeds, "fail" fails, anything else runs.
func jobPhases(p *corev1.Pod) corev1.PodPhase {
	switch p.Spec.Containers[0].Image {
	case "ok":
		return corev1.PodSucceeded
	case "fail":
		return corev1.PodFailed
	}
	return corev1.PodRunning
}

func newJob(name, image string, completions, parallelism, backoffLimit int32) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			Completions: &completions, Parallelism: &parallelism, BackoffLimit: &backoffLimit,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "c", Image: image}}}},
		},
	}
}

func jobCluster(t *testing.T) *workloadCluster {
	t.Helper()
	w := startWorkloads(t, controllers.Options{Workloads: controllers.WorkloadOptions{
		Job: job.Options{PodFailureBackoff: 50 * time.Millisecond, BatchPeriod: 10 * time.Millisecond},
	}}, fakeNodeOptions{Phase: jobPhases})
	w.nodes.addNode(t, "n1", nil)
	return w
}

func waitJob(t *testing.T, w *workloadCluster, name string, cond batchv1.JobConditionType) *batchv1.Job {
	t.Helper()
	var j *batchv1.Job
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("job %s %s", name, cond), func() error {
		var err error
		if j, err = w.cs.BatchV1().Jobs("default").Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == cond && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("status %+v", j.Status)
	})
	return j
}

// jobPods lists every pod of a Job (by its generated job-name label).
func jobPods(t *testing.T, w *workloadCluster, name string) []corev1.Pod {
	t.Helper()
	l, err := w.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// TestJobRunsToCompletion: 5 completions, 2 at a time; created with
// kubectl create job's shape; the pods keep no tracking finalizer once
// counted; kubectl get and describe show the result.
func TestJobRunsToCompletion(t *testing.T) {
	w := jobCluster(t)
	ctx := context.Background()
	if _, err := w.cs.BatchV1().Jobs("default").Create(ctx, newJob("done", "ok", 5, 2, 6), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, w, "done", batchv1.JobComplete)
	st := j.Status
	if st.Succeeded != 5 || st.Failed != 0 || st.Active != 0 || st.CompletionTime == nil || st.StartTime == nil ||
		len(st.UncountedTerminatedPods.Succeeded)+len(st.UncountedTerminatedPods.Failed) != 0 {
		t.Errorf("status %+v", st)
	}
	var types []string
	for _, c := range st.Conditions {
		types = append(types, string(c.Type))
	}
	if strings.Join(types, ",") != "SuccessCriteriaMet,Complete" {
		t.Errorf("conditions %v, want SuccessCriteriaMet then Complete", types)
	}
	pods := jobPods(t, w, "done")
	if len(pods) != 5 {
		t.Errorf("%d pods, want 5", len(pods))
	}
	for _, p := range pods {
		if len(p.Finalizers) != 0 || p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("pod %s: finalizers %v, phase %s", p.Name, p.Finalizers, p.Status.Phase)
		}
	}

	for i, k := range kubectls(t) {
		run := w.kubectl(t, k)
		if out := run("get", "job", "done"); !strings.Contains(out, "Complete") || !strings.Contains(out, "5/5") {
			t.Errorf("%s get job:\n%s", k, out)
		}
		if out := run("describe", "job", "done"); !strings.Contains(out, "0 Active (0 Ready) / 5 Succeeded / 0 Failed") {
			t.Errorf("%s describe job:\n%s", k, out)
		}
		name := fmt.Sprintf("kc%d", i)
		run("create", "job", name, "--image=ok")
		waitJob(t, w, name, batchv1.JobComplete)
		run("create", "cronjob", name, "--image=ok", "--schedule=*/5 * * * *")
		if out := run("get", "cronjob", name); !strings.Contains(out, "*/5 * * * *") || !strings.Contains(out, "False") {
			t.Errorf("%s get cronjob:\n%s", k, out)
		}
		if out := run("describe", "cronjob", name); !strings.Contains(out, "Concurrency Policy:            Allow") {
			t.Errorf("%s describe cronjob:\n%s", k, out)
		}
	}
}

// TestJobBackoffLimit: a Job whose pods fail is failed once more than
// backoffLimit pods failed, after the interim FailureTarget condition.
func TestJobBackoffLimit(t *testing.T) {
	w := jobCluster(t)
	ctx := context.Background()
	if _, err := w.cs.BatchV1().Jobs("default").Create(ctx, newJob("bad", "fail", 1, 1, 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, w, "bad", batchv1.JobFailed)
	if j.Status.Failed != 3 || j.Status.Succeeded != 0 || j.Status.Active != 0 || j.Status.CompletionTime != nil {
		t.Errorf("status %+v", j.Status)
	}
	ft := false
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Reason != batchv1.JobReasonBackoffLimitExceeded {
			t.Errorf("failed for %s: %s", c.Reason, c.Message)
		}
		ft = ft || c.Type == batchv1.JobFailureTarget
	}
	if !ft {
		t.Errorf("no FailureTarget condition: %+v", j.Status.Conditions)
	}
	if pods := jobPods(t, w, "bad"); len(pods) != 3 {
		t.Errorf("%d pods, want backoffLimit+1 = 3", len(pods))
	}
}

// TestJobDeadlineAndTTL: a Job running longer than activeDeadlineSeconds
// fails and its pods are deleted; with ttlSecondsAfterFinished it is then
// deleted itself, with its pods.
func TestJobDeadlineAndTTL(t *testing.T) {
	w := jobCluster(t)
	ctx := context.Background()
	j := newJob("slow", "sleep", 2, 2, 6)
	j.Spec.ActiveDeadlineSeconds = ptr.To(int64(1))
	j.Spec.TTLSecondsAfterFinished = ptr.To(int32(1))
	if _, err := w.cs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitJob(t, w, "slow", batchv1.JobFailed)
	for _, c := range got.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Reason != batchv1.JobReasonDeadlineExceeded {
			t.Errorf("failed for %s", c.Reason)
		}
	}
	if got.Status.Failed != 2 || got.Status.Active != 0 {
		t.Errorf("status %+v", got.Status)
	}
	testutil.Eventually(t, 30*time.Second, "job deleted after its TTL", func() error {
		_, err := w.cs.BatchV1().Jobs("default").Get(ctx, "slow", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if n := len(jobPods(t, w, "slow")); n != 0 {
				return fmt.Errorf("%d pods left", n)
			}
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
}

// TestIndexedJob: each index runs once, and completedIndexes lists them.
func TestIndexedJob(t *testing.T) {
	w := jobCluster(t)
	ctx := context.Background()
	j := newJob("idx", "ok", 4, 2, 6)
	j.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
	if _, err := w.cs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitJob(t, w, "idx", batchv1.JobComplete)
	if got.Status.CompletedIndexes != "0-3" || got.Status.Succeeded != 4 {
		t.Errorf("status %+v", got.Status)
	}
	seen := map[string]bool{}
	for _, p := range jobPods(t, w, "idx") {
		ix := p.Annotations[batchv1.JobCompletionIndexAnnotation]
		if seen[ix] || p.Spec.Hostname != "idx-"+ix || !strings.HasPrefix(p.Name, "idx-"+ix+"-") {
			t.Errorf("pod %s: index %q, hostname %q", p.Name, ix, p.Spec.Hostname)
		}
		seen[ix] = true
	}
	if len(seen) != 4 {
		t.Errorf("indexes %v", seen)
	}
}
