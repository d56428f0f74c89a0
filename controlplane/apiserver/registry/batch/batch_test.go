package batch

import (
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

func template(restart corev1.RestartPolicy) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: restart, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
}

// create runs a Job through the create steps: prepare, default, validate.
func create(j *batchv1.Job) field.ErrorList {
	st := jobResource().Strategy
	st.PrepareForCreate(j)
	st.Default(j)
	return st.Validate(j)
}

func TestJobDefaultsAndSelector(t *testing.T) {
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "pi", UID: "u1"}, Spec: batchv1.JobSpec{Template: template(corev1.RestartPolicyNever)}}
	if errs := create(j); len(errs) != 0 {
		t.Fatalf("valid job refused: %v", errs)
	}
	s := j.Spec
	if *s.Completions != 1 || *s.Parallelism != 1 || *s.BackoffLimit != 6 || *s.CompletionMode != batchv1.NonIndexedCompletion ||
		*s.Suspend || *s.ManualSelector || *s.PodReplacementPolicy != batchv1.TerminatingOrFailed {
		t.Errorf("defaults %+v", s)
	}
	if s.Selector.MatchLabels[batchv1.ControllerUidLabel] != "u1" {
		t.Errorf("selector %v", s.Selector)
	}
	for _, k := range []string{batchv1.ControllerUidLabel, batchv1.JobNameLabel, "controller-uid", "job-name"} {
		if s.Template.Labels[k] == "" || j.Labels[k] == "" {
			t.Errorf("label %s missing: template %v, job %v", k, s.Template.Labels, j.Labels)
		}
	}
	// parallelism alone leaves completions unset (a work queue).
	wq := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "wq", UID: "u2"}, Spec: batchv1.JobSpec{Parallelism: ptr.To(int32(3)), Template: template(corev1.RestartPolicyOnFailure)}}
	if errs := create(wq); len(errs) != 0 || wq.Spec.Completions != nil {
		t.Errorf("work queue job: %v, completions %v", errs, wq.Spec.Completions)
	}
}

func TestJobValidation(t *testing.T) {
	for name, c := range map[string]struct {
		job  *batchv1.Job
		want string
	}{
		"restartPolicy Always": {&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "u"}, Spec: batchv1.JobSpec{Template: template("")}},
			"spec.template.spec.restartPolicy"},
		"foreign selector": {&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "b", UID: "u"}, Spec: batchv1.JobSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}, Template: template(corev1.RestartPolicyNever)}},
			"`selector` not auto-generated"},
		"indexed without completions": {&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "c", UID: "u"}, Spec: batchv1.JobSpec{
			Parallelism: ptr.To(int32(2)), CompletionMode: ptr.To(batchv1.IndexedCompletion), Template: template(corev1.RestartPolicyNever)}},
			"spec.completions"},
		"negative backoffLimit": {&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "d", UID: "u"}, Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(int32(-1)), Template: template(corev1.RestartPolicyNever)}},
			"spec.backoffLimit"},
		"pod failure policy": {&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "e", UID: "u"}, Spec: batchv1.JobSpec{
			PodFailurePolicy: &batchv1.PodFailurePolicy{}, Template: template(corev1.RestartPolicyNever)}},
			"spec.podFailurePolicy"},
	} {
		errs := create(c.job)
		if !strings.Contains(errs.ToAggregate().Error(), c.want) {
			t.Errorf("%s: errors %v, want one about %s", name, errs, c.want)
		}
	}
	// Manual selectors are the user's.
	m := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "m", UID: "u"}, Spec: batchv1.JobSpec{ManualSelector: ptr.To(true),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}, Template: template(corev1.RestartPolicyNever)}}
	m.Spec.Template.Labels = map[string]string{"app": "x"}
	if errs := create(m); len(errs) != 0 {
		t.Errorf("manual selector refused: %v", errs)
	}
}

func TestJobUpdate(t *testing.T) {
	st := jobResource().Strategy
	old := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "pi", UID: "u1"}, Spec: batchv1.JobSpec{Template: template(corev1.RestartPolicyNever)}}
	create(old)
	j := old.DeepCopy()
	j.Spec.Parallelism = ptr.To(int32(5))
	if errs := st.ValidateUpdate(j, old); len(errs) != 0 {
		t.Errorf("parallelism is mutable: %v", errs)
	}
	j.Spec.Template.Spec.Containers[0].Image = "other"
	j.Spec.Completions = ptr.To(int32(9))
	errs := st.ValidateUpdate(j, old).ToAggregate().Error()
	if !strings.Contains(errs, "spec.template") || !strings.Contains(errs, "spec.completions") {
		t.Errorf("template and completions changed: %s", errs)
	}
}

func TestCronJob(t *testing.T) {
	st := cronJobResource().Strategy
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "hello"}, Spec: batchv1.CronJobSpec{Schedule: "*/1 * * * *",
		JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: template(corev1.RestartPolicyOnFailure)}}}}
	st.Default(cj)
	if errs := st.Validate(cj); len(errs) != 0 {
		t.Fatalf("valid cronjob refused: %v", errs)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.AllowConcurrent || *cj.Spec.Suspend || *cj.Spec.SuccessfulJobsHistoryLimit != 3 || *cj.Spec.FailedJobsHistoryLimit != 1 {
		t.Errorf("defaults %+v", cj.Spec)
	}
	for name, mut := range map[string]func(*batchv1.CronJob){
		"spec.schedule":                  func(c *batchv1.CronJob) { c.Spec.Schedule = "*/1 * *" },
		"TZ":                             func(c *batchv1.CronJob) { c.Spec.Schedule = "TZ=UTC 0 * * * *" },
		"spec.timeZone":                  func(c *batchv1.CronJob) { c.Spec.TimeZone = ptr.To("Mars/Olympus") },
		"spec.concurrencyPolicy":         func(c *batchv1.CronJob) { c.Spec.ConcurrencyPolicy = "Sometimes" },
		"metadata.name":                  func(c *batchv1.CronJob) { c.Name = strings.Repeat("x", 53) },
		"spec.jobTemplate.spec.selector": func(c *batchv1.CronJob) { c.Spec.JobTemplate.Spec.Selector = &metav1.LabelSelector{} },
	} {
		c := cj.DeepCopy()
		mut(c)
		if errs := st.Validate(c); !strings.Contains(errs.ToAggregate().Error(), name) {
			t.Errorf("%s: errors %v", name, errs)
		}
	}
	tz := cj.DeepCopy()
	tz.Spec.TimeZone = ptr.To("Europe/Paris")
	if errs := st.Validate(tz); len(errs) != 0 {
		t.Errorf("Europe/Paris refused: %v", errs)
	}
}

func TestRows(t *testing.T) {
	j := &batchv1.Job{Spec: batchv1.JobSpec{Completions: ptr.To(int32(3)), Template: template(corev1.RestartPolicyNever)},
		Status: batchv1.JobStatus{Succeeded: 2, Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}}
	row := jobRow(j)
	if row[0] != "Failed" || row[1] != "2/3" {
		t.Errorf("job row %v", row)
	}
	j.Spec.Completions, j.Spec.Parallelism = nil, ptr.To(int32(4))
	if row := jobRow(j); row[1] != "2/1 of 4" {
		t.Errorf("work queue completions %v", row[1])
	}
	cj := &batchv1.CronJob{Spec: batchv1.CronJobSpec{Schedule: "@hourly", Suspend: ptr.To(true)}}
	if row := cronJobRow(cj); row[0] != "@hourly" || row[1] != "<none>" || row[2] != "True" || row[3] != int64(0) || row[4] != "<none>" {
		t.Errorf("cronjob row %v", row)
	}
}
