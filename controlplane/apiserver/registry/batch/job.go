package batch

import (
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/apps"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
)

// The labels generated selectors used before the batch.kubernetes.io/
// prefixed ones; Kubernetes still sets both.
const (
	legacyJobNameLabel       = "job-name"
	legacyControllerUIDLabel = "controller-uid"
)

// maxIndexedCompletions bounds completions and parallelism of an Indexed
// Job, as Kubernetes does.
const maxIndexedCompletions = 100000

func jobResource() *registry.Resource {
	st := jobStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return &registry.Resource{
		GVK: batchv1.SchemeGroupVersion.WithKind("Job"), Plural: "jobs", Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &batchv1.Job{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
		},
		// Kubernetes' one field selector for Jobs.
		Fields: func(o runtime.Object) fields.Set {
			return fields.Set{"status.successful": strconv.Itoa(int(o.(*batchv1.Job).Status.Succeeded))}
		},
		Columns: append([]registry.Column{
			{Name: "Status", Type: "string", Description: "Status of the job."},
			{Name: "Completions", Type: "string", Description: "The number of pods which reached phase Succeeded."},
			{Name: "Duration", Type: "string", Description: "Time required to complete the job."},
		}, apps.TemplateColumns("A label query over pods that should match the pod count.")...),
		Row: jobRow,
	}
}

type jobStrategy struct{ registry.SpecStatus }

// PrepareForCreate generates the Job's selector and its pods' labels
// unless it asks for a manual selector (the uid is set by now).
func (st jobStrategy) PrepareForCreate(o runtime.Object) {
	st.SpecStatus.PrepareForCreate(o)
	j := o.(*batchv1.Job)
	if !ptr.Deref(j.Spec.ManualSelector, false) {
		generateSelector(j)
	}
}

// generateSelector labels the template with the job's name and uid (both
// the batch.kubernetes.io/ keys and the legacy ones) and selects the uid.
// Labels the client set are kept: a conflicting one fails validation.
func generateSelector(j *batchv1.Job) {
	if j.Spec.Template.Labels == nil {
		j.Spec.Template.Labels = map[string]string{}
	}
	for k, v := range map[string]string{
		legacyJobNameLabel:         j.Name,
		batchv1.JobNameLabel:       j.Name,
		legacyControllerUIDLabel:   string(j.UID),
		batchv1.ControllerUidLabel: string(j.UID),
	} {
		if _, set := j.Spec.Template.Labels[k]; !set {
			j.Spec.Template.Labels[k] = v
		}
	}
	if j.Spec.Selector == nil {
		j.Spec.Selector = &metav1.LabelSelector{}
	}
	if j.Spec.Selector.MatchLabels == nil {
		j.Spec.Selector.MatchLabels = map[string]string{}
	}
	if _, set := j.Spec.Selector.MatchLabels[batchv1.ControllerUidLabel]; !set {
		j.Spec.Selector.MatchLabels[batchv1.ControllerUidLabel] = string(j.UID)
	}
}

// Default is Kubernetes' batch/v1 Job defaulting. A Job without labels
// gets its template's, which by now include the generated ones.
func (jobStrategy) Default(o runtime.Object) {
	j := o.(*batchv1.Job)
	defaultJobSpec(&j.Spec)
	if len(j.Labels) == 0 && len(j.Spec.Template.Labels) > 0 {
		j.Labels = make(map[string]string, len(j.Spec.Template.Labels))
		for k, v := range j.Spec.Template.Labels {
			j.Labels[k] = v
		}
	}
}

func defaultJobSpec(s *batchv1.JobSpec) {
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions = ptr.To(int32(1))
	}
	if s.Parallelism == nil {
		s.Parallelism = ptr.To(int32(1))
	}
	if s.BackoffLimit == nil {
		s.BackoffLimit = ptr.To(int32(6))
	}
	if s.CompletionMode == nil {
		s.CompletionMode = ptr.To(batchv1.NonIndexedCompletion)
	}
	if s.Suspend == nil {
		s.Suspend = ptr.To(false)
	}
	if s.PodReplacementPolicy == nil {
		s.PodReplacementPolicy = ptr.To(batchv1.TerminatingOrFailed)
	}
	if s.ManualSelector == nil {
		s.ManualSelector = ptr.To(false)
	}
	core.DefaultPodSpec(&s.Template.Spec)
}

func (jobStrategy) Validate(o runtime.Object) field.ErrorList {
	j := o.(*batchv1.Job)
	sp := field.NewPath("spec")
	errs := apps.ValidateSelector(j.Spec.Selector, &j.Spec.Template, "job", sp)
	if !ptr.Deref(j.Spec.ManualSelector, false) && j.Spec.Selector != nil {
		// The selector must select what the generated labels say, whoever
		// wrote it.
		want := labels.Set{batchv1.ControllerUidLabel: string(j.UID), batchv1.JobNameLabel: j.Name,
			legacyControllerUIDLabel: string(j.UID), legacyJobNameLabel: j.Name}
		if s, err := metav1.LabelSelectorAsSelector(j.Spec.Selector); err == nil && !s.Matches(want) {
			errs = append(errs, field.Invalid(sp.Child("selector"), j.Spec.Selector, "`selector` not auto-generated"))
		}
	}
	return append(errs, validateJobSpec(&j.Spec, sp)...)
}

// validateJobSpec checks a Job's spec but its selector, for Jobs and the
// job templates of CronJobs.
func validateJobSpec(s *batchv1.JobSpec, sp *field.Path) field.ErrorList {
	errs := apps.ValidatePodTemplate(&s.Template, sp, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever)
	nonNegative := func(v *int32, name string) {
		if v != nil && *v < 0 {
			errs = append(errs, field.Invalid(sp.Child(name), *v, "must be greater than or equal to 0"))
		}
	}
	nonNegative(s.Parallelism, "parallelism")
	nonNegative(s.Completions, "completions")
	nonNegative(s.BackoffLimit, "backoffLimit")
	nonNegative(s.TTLSecondsAfterFinished, "ttlSecondsAfterFinished")
	if s.ActiveDeadlineSeconds != nil && *s.ActiveDeadlineSeconds < 0 {
		errs = append(errs, field.Invalid(sp.Child("activeDeadlineSeconds"), *s.ActiveDeadlineSeconds, "must be greater than or equal to 0"))
	}
	switch mode := ptr.Deref(s.CompletionMode, batchv1.NonIndexedCompletion); mode {
	case batchv1.NonIndexedCompletion:
	case batchv1.IndexedCompletion:
		if s.Completions == nil {
			errs = append(errs, field.Required(sp.Child("completions"), "when completion mode is Indexed"))
		} else if *s.Completions > maxIndexedCompletions {
			errs = append(errs, field.Invalid(sp.Child("completions"), *s.Completions, fmt.Sprintf("must be less than or equal to %d when completion mode is Indexed", maxIndexedCompletions)))
		}
		if s.Parallelism != nil && *s.Parallelism > maxIndexedCompletions {
			errs = append(errs, field.Invalid(sp.Child("parallelism"), *s.Parallelism, fmt.Sprintf("must be less than or equal to %d when completion mode is Indexed", maxIndexedCompletions)))
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("completionMode"), mode, []string{string(batchv1.NonIndexedCompletion), string(batchv1.IndexedCompletion)}))
	}
	if p := s.PodReplacementPolicy; p != nil && *p != batchv1.TerminatingOrFailed && *p != batchv1.Failed {
		errs = append(errs, field.NotSupported(sp.Child("podReplacementPolicy"), *p, []string{string(batchv1.TerminatingOrFailed), string(batchv1.Failed)}))
	}
	// What the Job controller does not implement is refused rather than
	// silently ignored.
	for name, set := range map[string]bool{
		"podFailurePolicy":     s.PodFailurePolicy != nil,
		"successPolicy":        s.SuccessPolicy != nil,
		"backoffLimitPerIndex": s.BackoffLimitPerIndex != nil,
		"maxFailedIndexes":     s.MaxFailedIndexes != nil,
	} {
		if set {
			errs = append(errs, field.Forbidden(sp.Child(name), "not supported by skep's Job controller"))
		}
	}
	return errs
}

// ValidateUpdate: a Job's selector, template, completion mode and (but
// for an Indexed Job scaled with parallelism) completions are fixed; a
// suspended Job that never started may still change where its pods run.
func (st jobStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	j, prev := o.(*batchv1.Job), old.(*batchv1.Job)
	sp := field.NewPath("spec")
	errs := st.Validate(o)
	immutable := func(name string, a, b interface{}) {
		if !registry.EqualSemantic(a, b) {
			errs = append(errs, field.Invalid(sp.Child(name), a, "field is immutable"))
		}
	}
	immutable("selector", j.Spec.Selector, prev.Spec.Selector)
	immutable("completionMode", j.Spec.CompletionMode, prev.Spec.CompletionMode)
	tmpl := prev.Spec.Template.DeepCopy()
	if ptr.Deref(prev.Spec.Suspend, false) && prev.Status.StartTime == nil {
		tmpl.Labels, tmpl.Annotations = j.Spec.Template.Labels, j.Spec.Template.Annotations
		tmpl.Spec.NodeSelector, tmpl.Spec.Affinity = j.Spec.Template.Spec.NodeSelector, j.Spec.Template.Spec.Affinity
		tmpl.Spec.Tolerations, tmpl.Spec.SchedulingGates = j.Spec.Template.Spec.Tolerations, j.Spec.Template.Spec.SchedulingGates
	}
	if !registry.EqualSemantic(j.Spec.Template, *tmpl) {
		errs = append(errs, field.Invalid(sp.Child("template"), "", "field is immutable"))
	}
	elastic := ptr.Deref(j.Spec.CompletionMode, "") == batchv1.IndexedCompletion &&
		ptr.Equal(j.Spec.Completions, j.Spec.Parallelism) && ptr.Equal(prev.Spec.Completions, prev.Spec.Parallelism)
	if !elastic {
		immutable("completions", j.Spec.Completions, prev.Spec.Completions)
	}
	return errs
}

// jobRow prints a Job as kubectl get does.
func jobRow(o runtime.Object) []interface{} {
	j := o.(*batchv1.Job)
	var completions string
	switch p := ptr.Deref(j.Spec.Parallelism, 0); {
	case j.Spec.Completions != nil:
		completions = fmt.Sprintf("%d/%d", j.Status.Succeeded, *j.Spec.Completions)
	case p > 1:
		completions = fmt.Sprintf("%d/1 of %d", j.Status.Succeeded, p)
	default:
		completions = fmt.Sprintf("%d/1", j.Status.Succeeded)
	}
	var took string
	switch {
	case j.Status.StartTime == nil:
	case j.Status.CompletionTime == nil:
		took = duration.HumanDuration(time.Since(j.Status.StartTime.Time))
	default:
		took = duration.HumanDuration(j.Status.CompletionTime.Sub(j.Status.StartTime.Time))
	}
	return append([]interface{}{jobStatus(j), completions, took}, apps.TemplateCells(&j.Spec.Template, j.Spec.Selector)...)
}

func jobStatus(j *batchv1.Job) string {
	has := func(t batchv1.JobConditionType) bool {
		for _, c := range j.Status.Conditions {
			if c.Type == t && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	}
	switch {
	case has(batchv1.JobComplete):
		return "Complete"
	case has(batchv1.JobFailed):
		return "Failed"
	case j.DeletionTimestamp != nil:
		return "Terminating"
	case has(batchv1.JobSuspended):
		return "Suspended"
	case has(batchv1.JobFailureTarget):
		return "FailureTarget"
	}
	return "Running"
}
