package core

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
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

type configMapStrategy struct{ registry.DefaultStrategy }

func (configMapStrategy) Validate(o runtime.Object) field.ErrorList {
	c := o.(*corev1.ConfigMap)
	errs := validateDataKeys(keysOf(c.Data, c.BinaryData), field.NewPath("data"))
	size := 0
	for _, v := range c.Data {
		size += len(v)
	}
	for _, v := range c.BinaryData {
		size += len(v)
	}
	if size > maxDataBytes {
		// The whole object, as upstream (an empty path).
		errs = append(errs, field.TooLong(field.NewPath(""), "", maxDataBytes))
	}
	return errs
}

func (st configMapStrategy) ValidateUpdate(o, _ runtime.Object) field.ErrorList {
	return st.Validate(o)
}

// maxDataBytes bounds the total data of a configmap or secret, as upstream
// (core.MaxSecretSize): such objects are mounted into pods whole.
const maxDataBytes = 1 << 20

func keysOf(a map[string]string, b map[string][]byte) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// validateDataKeys checks configmap and secret keys as the real API does.
func validateDataKeys(keys []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range keys {
		if msgs := isConfigMapKey(k); len(msgs) > 0 {
			errs = append(errs, field.Invalid(p, k, strings.Join(msgs, "; ")))
		}
	}
	return errs
}

func isConfigMapKey(k string) []string {
	if k == "" || len(k) > 253 {
		return []string{"a valid config key must be between 1 and 253 characters"}
	}
	if k == "." || k == ".." || strings.HasPrefix(k, "..") {
		return []string{"must not be '.' or '..' or start with '..'"}
	}
	for _, c := range k {
		if !(c == '-' || c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return []string{"a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"}
		}
	}
	return nil
}
