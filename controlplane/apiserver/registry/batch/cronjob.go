package batch

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/apps"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
)

// maxCronJobNameLength leaves room for the 11 characters the CronJob
// controller appends to name a Job (-<minutes since the epoch>), which in
// turn names its pods.
const maxCronJobNameLength = 52

func cronJobResource() *registry.Resource {
	st := cronJobStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return &registry.Resource{
		GVK: batchv1.SchemeGroupVersion.WithKind("CronJob"), Plural: "cronjobs", ShortNames: []string{"cj"}, Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &batchv1.CronJob{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
		},
		Columns: append([]registry.Column{
			{Name: "Schedule", Type: "string", Description: "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."},
			{Name: "Timezone", Type: "string", Description: "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."},
			{Name: "Suspend", Type: "boolean", Description: "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions."},
			{Name: "Active", Type: "integer", Description: "A list of pointers to currently running jobs."},
			{Name: "Last Schedule", Type: "string", Description: "Information when was the last time the job was successfully scheduled."},
		}, apps.TemplateColumns("A label query over pods that should match the pod count.")...),
		Row: cronJobRow,
	}
}

type cronJobStrategy struct{ registry.SpecStatus }

// Default is Kubernetes' batch/v1 CronJob defaulting; the job template's
// own Job defaults are applied when the controller creates each Job.
func (cronJobStrategy) Default(o runtime.Object) {
	cj := o.(*batchv1.CronJob)
	if cj.Spec.ConcurrencyPolicy == "" {
		cj.Spec.ConcurrencyPolicy = batchv1.AllowConcurrent
	}
	if cj.Spec.Suspend == nil {
		cj.Spec.Suspend = ptr.To(false)
	}
	if cj.Spec.SuccessfulJobsHistoryLimit == nil {
		cj.Spec.SuccessfulJobsHistoryLimit = ptr.To(int32(3))
	}
	if cj.Spec.FailedJobsHistoryLimit == nil {
		cj.Spec.FailedJobsHistoryLimit = ptr.To(int32(1))
	}
	core.DefaultPodSpec(&cj.Spec.JobTemplate.Spec.Template.Spec)
}

func (st cronJobStrategy) Validate(o runtime.Object) field.ErrorList {
	return validateCronJob(o.(*batchv1.CronJob), false)
}

// ValidateUpdate: a CronJob stored with TZ= in its schedule (allowed
// before spec.timeZone existed) may keep it.
func (st cronJobStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	return validateCronJob(o.(*batchv1.CronJob), strings.Contains(old.(*batchv1.CronJob).Spec.Schedule, "TZ"))
}

func validateCronJob(cj *batchv1.CronJob, allowTZInSchedule bool) field.ErrorList {
	var errs field.ErrorList
	if len(cj.Name) > maxCronJobNameLength {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), cj.Name, fmt.Sprintf("must be no more than %d characters", maxCronJobNameLength)))
	}
	sp := field.NewPath("spec")
	errs = append(errs, validateSchedule(cj.Spec.Schedule, cj.Spec.TimeZone, allowTZInSchedule, sp.Child("schedule"))...)
	errs = append(errs, validateTimeZone(cj.Spec.TimeZone, sp.Child("timeZone"))...)
	switch p := cj.Spec.ConcurrencyPolicy; p {
	case batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent:
	default:
		errs = append(errs, field.NotSupported(sp.Child("concurrencyPolicy"), p,
			[]string{string(batchv1.AllowConcurrent), string(batchv1.ForbidConcurrent), string(batchv1.ReplaceConcurrent)}))
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil && *d < 0 {
		errs = append(errs, field.Invalid(sp.Child("startingDeadlineSeconds"), *d, "must be greater than or equal to 0"))
	}
	for name, v := range map[string]*int32{"successfulJobsHistoryLimit": cj.Spec.SuccessfulJobsHistoryLimit, "failedJobsHistoryLimit": cj.Spec.FailedJobsHistoryLimit} {
		if v != nil && *v < 0 {
			errs = append(errs, field.Invalid(sp.Child(name), *v, "must be greater than or equal to 0"))
		}
	}
	// The Jobs' selector is generated when each is created.
	jp := sp.Child("jobTemplate", "spec")
	js := &cj.Spec.JobTemplate.Spec
	if js.Selector != nil {
		errs = append(errs, field.Invalid(jp.Child("selector"), js.Selector, "`selector` will be auto-generated"))
	}
	if ptr.Deref(js.ManualSelector, false) {
		errs = append(errs, field.NotSupported(jp.Child("manualSelector"), *js.ManualSelector, []string{"nil", "false"}))
	}
	return append(errs, validateJobSpec(js, jp)...)
}

// validateSchedule parses the schedule the way the CronJob controller
// will (robfig/cron's standard parser: five fields or a descriptor).
func validateSchedule(s string, tz *string, allowTZ bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	if _, err := cron.ParseStandard(s); err != nil {
		errs = append(errs, field.Invalid(p, s, err.Error()))
	}
	switch {
	case allowTZ && strings.Contains(s, "TZ") && tz != nil:
		errs = append(errs, field.Invalid(p, s, "cannot use both timeZone field and TZ or CRON_TZ in schedule"))
	case !allowTZ && strings.Contains(s, "TZ"):
		errs = append(errs, field.Invalid(p, s, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
	}
	return errs
}

var timeZonePart = regexp.MustCompile(`^[A-Za-z\.\-_0-9+]{1,14}$`)

// validateTimeZone accepts an IANA time zone name the server knows.
func validateTimeZone(tz *string, p *field.Path) field.ErrorList {
	if tz == nil {
		return nil
	}
	if *tz == "" {
		return field.ErrorList{field.Invalid(p, *tz, "timeZone must be nil or non-empty string")}
	}
	for _, part := range strings.Split(*tz, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, "-") || !timeZonePart.MatchString(part) {
			return field.ErrorList{field.Invalid(p, *tz, "unknown time zone "+*tz)}
		}
	}
	if strings.EqualFold(*tz, "Local") {
		return field.ErrorList{field.Invalid(p, *tz, "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")}
	}
	if _, err := time.LoadLocation(*tz); err != nil {
		return field.ErrorList{field.Invalid(p, *tz, err.Error())}
	}
	return nil
}

func cronJobRow(o runtime.Object) []interface{} {
	cj := o.(*batchv1.CronJob)
	last := "<none>"
	if t := cj.Status.LastScheduleTime; t != nil {
		last = registry.Age(t.Time)
	}
	tz := "<none>"
	if cj.Spec.TimeZone != nil {
		tz = *cj.Spec.TimeZone
	}
	suspend := "<unset>"
	if cj.Spec.Suspend != nil {
		suspend = "False"
		if *cj.Spec.Suspend {
			suspend = "True"
		}
	}
	return append([]interface{}{cj.Spec.Schedule, tz, suspend, int64(len(cj.Status.Active)), last},
		apps.TemplateCells(&cj.Spec.JobTemplate.Spec.Template, cj.Spec.JobTemplate.Spec.Selector)...)
}
