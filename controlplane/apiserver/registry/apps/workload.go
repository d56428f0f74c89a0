package apps

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
)

// validateWorkload checks the replicas, selector and template the
// replicated workloads (Deployment, ReplicaSet) share.
func validateWorkload(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, replicas *int32) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if replicas != nil && *replicas < 0 {
		errs = append(errs, field.Invalid(sp.Child("replicas"), *replicas, "must be greater than or equal to 0"))
	}
	errs = append(errs, ValidateSelector(sel, tmpl, "deployment", sp)...)
	return append(errs, ValidatePodTemplate(tmpl, sp, corev1.RestartPolicyAlways)...)
}

// ValidateSelector checks what every controller of pods checks of its
// selector: set, not empty (kind names the kind in that message, as
// Kubernetes words it) and matching the template's labels. sp is the path
// of the spec holding selector and template.
func ValidateSelector(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, kind string, sp *field.Path) field.ErrorList {
	if sel == nil {
		return field.ErrorList{field.Required(sp.Child("selector"), "")}
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	switch {
	case err != nil:
		return field.ErrorList{field.Invalid(sp.Child("selector"), sel, err.Error())}
	case s.Empty():
		return field.ErrorList{field.Invalid(sp.Child("selector"), sel, "empty selector is invalid for "+kind)}
	case !s.Matches(labels.Set(tmpl.Labels)):
		return field.ErrorList{field.Invalid(sp.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`")}
	}
	return nil
}

// ValidatePodTemplate checks a workload's pod template: a valid pod spec
// whose restartPolicy is among restart. sp is the path of the spec holding
// the template.
func ValidatePodTemplate(tmpl *corev1.PodTemplateSpec, sp *field.Path, restart ...corev1.RestartPolicy) field.ErrorList {
	errs := core.ValidatePodSpec(&tmpl.Spec, sp.Child("template", "spec"))
	allowed := make([]string, len(restart))
	ok := false
	for i, r := range restart {
		allowed[i] = string(r)
		ok = ok || tmpl.Spec.RestartPolicy == r
	}
	if !ok {
		errs = append(errs, field.NotSupported(sp.Child("template", "spec", "restartPolicy"), tmpl.Spec.RestartPolicy, allowed))
	}
	return errs
}

// validateSelectorUpdate: a workload's selector is immutable in apps/v1.
func validateSelectorUpdate(sel, old *metav1.LabelSelector) field.ErrorList {
	if !registry.EqualSemantic(sel, old) {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "selector"), sel, "field is immutable")}
	}
	return nil
}

// TemplateColumns are the wide columns of a workload's Table, as kubectl
// prints them: its template's containers and images, and its selector
// (described by selector).
func TemplateColumns(selector string) []registry.Column {
	return []registry.Column{
		{Name: "Containers", Type: "string", Description: "Names of each container in the template.", Priority: 1},
		{Name: "Images", Type: "string", Description: "Images referenced by each container in the template.", Priority: 1},
		{Name: "Selector", Type: "string", Description: selector, Priority: 1},
	}
}

// TemplateCells are the cells of TemplateColumns.
func TemplateCells(tmpl *corev1.PodTemplateSpec, sel *metav1.LabelSelector) []interface{} {
	var n, i []string
	for _, c := range tmpl.Spec.Containers {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return []interface{}{strings.Join(n, ","), strings.Join(i, ","), metav1.FormatLabelSelector(sel)}
}
