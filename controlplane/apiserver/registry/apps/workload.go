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

// validateWorkload checks the selector/template pair the workloads share.
func validateWorkload(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, replicas *int32) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if replicas != nil && *replicas < 0 {
		errs = append(errs, field.Invalid(sp.Child("replicas"), *replicas, "must be greater than or equal to 0"))
	}
	if sel == nil {
		errs = append(errs, field.Required(sp.Child("selector"), ""))
	} else {
		s, err := metav1.LabelSelectorAsSelector(sel)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(sp.Child("selector"), sel, err.Error()))
		case s.Empty():
			errs = append(errs, field.Invalid(sp.Child("selector"), sel, "empty selector is invalid for deployment"))
		case !s.Matches(labels.Set(tmpl.Labels)):
			errs = append(errs, field.Invalid(sp.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, core.ValidatePodSpec(&tmpl.Spec, sp.Child("template", "spec"))...)
	if tmpl.Spec.RestartPolicy != corev1.RestartPolicyAlways && tmpl.Spec.RestartPolicy != "" {
		errs = append(errs, field.NotSupported(sp.Child("template", "spec", "restartPolicy"), tmpl.Spec.RestartPolicy, []string{"Always"}))
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

func containersAndImages(cs []corev1.Container) (string, string) {
	var n, i []string
	for _, c := range cs {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func selectorString(sel *metav1.LabelSelector) string {
	s, _ := metav1.LabelSelectorAsSelector(sel)
	if s == nil {
		return "<none>"
	}
	return s.String()
}
