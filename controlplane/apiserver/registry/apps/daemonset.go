package apps

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
)

// TemplateGenerationAnnotation counts a DaemonSet's template changes. It is
// how apps/v1 carries the internal spec.templateGeneration of Kubernetes'
// API server; the DaemonSet controller copies it into each pod's
// pod-template-generation label.
const TemplateGenerationAnnotation = "deprecated.daemonset.template.generation"

func daemonSetResource() *registry.Resource {
	st := daemonSetStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return &registry.Resource{
		GVK: appsv1.SchemeGroupVersion.WithKind("DaemonSet"), Plural: "daemonsets", ShortNames: []string{"ds"}, Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &appsv1.DaemonSet{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
		},
		Columns: append([]registry.Column{
			{Name: "Desired", Type: "integer", Description: "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."},
			{Name: "Current", Type: "integer", Description: "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."},
			{Name: "Ready", Type: "integer", Description: "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."},
			{Name: "Up-to-date", Type: "integer", Description: "The total number of nodes that are running updated daemon pod"},
			{Name: "Available", Type: "integer", Description: "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"},
			{Name: "Node Selector", Type: "string", Description: "NodeSelector is a selector which must be true for the pod to fit on a node."},
		}, TemplateColumns("A label query over pods that are managed by the daemon set.")...),
		Row: daemonSetRow,
	}
}

// daemonSetStrategy adds the template generation annotation to
// SpecStatus: 1 on create, one more on each update that changes the
// template.
type daemonSetStrategy struct{ registry.SpecStatus }

func (st daemonSetStrategy) PrepareForCreate(o runtime.Object) {
	st.SpecStatus.PrepareForCreate(o)
	metav1.SetMetaDataAnnotation(&o.(*appsv1.DaemonSet).ObjectMeta, TemplateGenerationAnnotation, "1")
}

func (st daemonSetStrategy) PrepareForUpdate(o, old runtime.Object) {
	st.SpecStatus.PrepareForUpdate(o, old)
	ds, prev := o.(*appsv1.DaemonSet), old.(*appsv1.DaemonSet)
	gen, err := strconv.ParseInt(prev.Annotations[TemplateGenerationAnnotation], 10, 64)
	if err != nil {
		gen = 1 // stored before skep kept the annotation
	}
	// The template is compared defaulted on both sides (Default runs after
	// this step): default a copy of the new one first.
	tmpl := ds.Spec.Template.DeepCopy()
	core.DefaultPodSpec(&tmpl.Spec)
	if !registry.EqualSemantic(*tmpl, prev.Spec.Template) {
		gen++
	}
	metav1.SetMetaDataAnnotation(&ds.ObjectMeta, TemplateGenerationAnnotation, strconv.FormatInt(gen, 10))
}

// Default is Kubernetes' apps/v1 DaemonSet defaulting.
func (daemonSetStrategy) Default(o runtime.Object) {
	ds := o.(*appsv1.DaemonSet)
	us := &ds.Spec.UpdateStrategy
	if us.Type == "" {
		us.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	if us.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if us.RollingUpdate == nil {
			us.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
		}
		if us.RollingUpdate.MaxUnavailable == nil {
			us.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromInt32(1))
		}
		if us.RollingUpdate.MaxSurge == nil {
			us.RollingUpdate.MaxSurge = ptr.To(intstr.FromInt32(0))
		}
	}
	if ds.Spec.RevisionHistoryLimit == nil {
		ds.Spec.RevisionHistoryLimit = ptr.To(int32(10))
	}
	core.DefaultPodSpec(&ds.Spec.Template.Spec)
}

func (daemonSetStrategy) Validate(o runtime.Object) field.ErrorList {
	ds := o.(*appsv1.DaemonSet)
	sp := field.NewPath("spec")
	errs := ValidateSelector(ds.Spec.Selector, &ds.Spec.Template, "daemonset", sp)
	errs = append(errs, ValidatePodTemplate(&ds.Spec.Template, sp, corev1.RestartPolicyAlways)...)
	if ds.Spec.Template.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Forbidden(sp.Child("template", "spec", "activeDeadlineSeconds"), "activeDeadlineSeconds in DaemonSet is not Supported"))
	}
	if ds.Spec.MinReadySeconds < 0 {
		errs = append(errs, field.Invalid(sp.Child("minReadySeconds"), ds.Spec.MinReadySeconds, "must be greater than or equal to 0"))
	}
	if l := ds.Spec.RevisionHistoryLimit; l != nil && *l < 0 {
		errs = append(errs, field.Invalid(sp.Child("revisionHistoryLimit"), *l, "must be greater than or equal to 0"))
	}
	usp := sp.Child("updateStrategy")
	switch us := ds.Spec.UpdateStrategy; us.Type {
	case appsv1.OnDeleteDaemonSetStrategyType:
	case appsv1.RollingUpdateDaemonSetStrategyType:
		if us.RollingUpdate == nil {
			errs = append(errs, field.Required(usp.Child("rollingUpdate"), ""))
			break
		}
		rp := usp.Child("rollingUpdate")
		errs = append(errs, ValidateIntOrPercent(us.RollingUpdate.MaxUnavailable, rp.Child("maxUnavailable"))...)
		errs = append(errs, ValidateIntOrPercent(us.RollingUpdate.MaxSurge, rp.Child("maxSurge"))...)
		if intOrPercentIsZero(us.RollingUpdate.MaxUnavailable) && intOrPercentIsZero(us.RollingUpdate.MaxSurge) {
			errs = append(errs, field.Required(rp.Child("maxUnavailable"), "cannot be 0 when maxSurge is 0"))
		}
	default:
		errs = append(errs, field.NotSupported(usp.Child("type"), us.Type, []string{string(appsv1.RollingUpdateDaemonSetStrategyType), string(appsv1.OnDeleteDaemonSetStrategyType)}))
	}
	return errs
}

func (st daemonSetStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	return append(st.Validate(o), validateSelectorUpdate(o.(*appsv1.DaemonSet).Spec.Selector, old.(*appsv1.DaemonSet).Spec.Selector)...)
}

// ValidateIntOrPercent checks a maxSurge or maxUnavailable: a non-negative
// integer or a percentage of at most 100%.
func ValidateIntOrPercent(v *intstr.IntOrString, p *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, 100, false)
	switch {
	case err != nil || (v.Type == intstr.String && !isPercent(v.StrVal)):
		return field.ErrorList{field.Invalid(p, v.String(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")}
	case n < 0:
		return field.ErrorList{field.Invalid(p, v.String(), "must be greater than or equal to 0")}
	case v.Type == intstr.String && n > 100:
		return field.ErrorList{field.Invalid(p, v.String(), "must not be greater than 100%")}
	}
	return nil
}

func isPercent(s string) bool {
	if len(s) < 2 || s[len(s)-1] != '%' {
		return false
	}
	for _, c := range s[:len(s)-1] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func intOrPercentIsZero(v *intstr.IntOrString) bool {
	n, err := intstr.GetScaledValueFromIntOrPercent(v, 100, false)
	return v == nil || (err == nil && n == 0)
}

func daemonSetRow(o runtime.Object) []interface{} {
	ds := o.(*appsv1.DaemonSet)
	s := ds.Status
	return append([]interface{}{int64(s.DesiredNumberScheduled), int64(s.CurrentNumberScheduled), int64(s.NumberReady),
		int64(s.UpdatedNumberScheduled), int64(s.NumberAvailable), labels.FormatLabels(ds.Spec.Template.Spec.NodeSelector)},
		TemplateCells(&ds.Spec.Template, ds.Spec.Selector)...)
}
