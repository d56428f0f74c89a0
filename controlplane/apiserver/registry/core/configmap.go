package core

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func configMapResource() *registry.Resource {
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("ConfigMap"), Plural: "configmaps", ShortNames: []string{"cm"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.ConfigMap{} },
		Strategy:   configMapStrategy{},
		Columns:    []registry.Column{{Name: "Data", Type: "string", Description: "Number of data entries."}},
		Row: func(o runtime.Object) []interface{} {
			c := o.(*corev1.ConfigMap)
			return []interface{}{int64(len(c.Data) + len(c.BinaryData))}
		},
	}
}

// configMapStrategy validates as Kubernetes' ValidateConfigMap(Update).
type configMapStrategy struct{ registry.DefaultStrategy }

func (configMapStrategy) Validate(o runtime.Object) field.ErrorList {
	c := o.(*corev1.ConfigMap)
	var errs field.ErrorList
	total := 0
	dp, bp := field.NewPath("data"), field.NewPath("binaryData")
	for _, k := range sortedKeys(c.Data) {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(dp.Key(k), k, msg))
		}
		if _, dup := c.BinaryData[k]; dup {
			errs = append(errs, field.Invalid(dp.Key(k), k, "duplicate of key present in binaryData"))
		}
		total += len(c.Data[k])
	}
	for _, k := range sortedKeys(c.BinaryData) {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(bp.Key(k), k, msg))
		}
		total += len(c.BinaryData[k])
	}
	if total > maxDataBytes {
		// The whole object, as upstream (an empty path).
		errs = append(errs, field.TooLong(field.NewPath(""), "", maxDataBytes))
	}
	return errs
}

func (st configMapStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	c, oc := o.(*corev1.ConfigMap), old.(*corev1.ConfigMap)
	var errs field.ErrorList
	if oc.Immutable != nil && *oc.Immutable {
		errs = append(errs, immutableWhenSet(c.Immutable, field.NewPath("immutable"))...)
		if !registry.EqualSemantic(c.Data, oc.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), immutableMsg))
		}
		if !registry.EqualSemantic(c.BinaryData, oc.BinaryData) {
			errs = append(errs, field.Forbidden(field.NewPath("binaryData"), immutableMsg))
		}
	}
	return append(errs, st.Validate(o)...)
}

const immutableMsg = "field is immutable when `immutable` is set"

// immutableWhenSet: an immutable ConfigMap or Secret stays immutable.
func immutableWhenSet(immutable *bool, p *field.Path) field.ErrorList {
	if immutable == nil || !*immutable {
		return field.ErrorList{field.Forbidden(p, immutableMsg)}
	}
	return nil
}

// maxDataBytes bounds the total data of a configmap or secret, as upstream
// (core.MaxSecretSize): such objects are mounted into pods whole.
const maxDataBytes = 1 << 20

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
