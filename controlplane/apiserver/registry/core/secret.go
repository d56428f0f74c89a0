package core

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func secretResource() *registry.Resource {
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Secret"), Plural: "secrets",
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Secret{} },
		Strategy:   secretStrategy{},
		Fields: func(o runtime.Object) fields.Set {
			return fields.Set{"type": string(o.(*corev1.Secret).Type)}
		},
		Columns: []registry.Column{
			{Name: "Type", Type: "string", Description: "The type of the secret"},
			{Name: "Data", Type: "string", Description: "The number of entries in data"},
		},
		Row: func(o runtime.Object) []interface{} {
			s := o.(*corev1.Secret)
			return []interface{}{string(s.Type), int64(len(s.Data))}
		},
	}
}

type secretStrategy struct{ registry.DefaultStrategy }

func (secretStrategy) Default(o runtime.Object) {
	s := o.(*corev1.Secret)
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	// stringData is write-only: it is merged into data.
	for k, v := range s.StringData {
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

func (secretStrategy) Validate(o runtime.Object) field.ErrorList {
	s := o.(*corev1.Secret)
	errs := validateDataKeys(keysOf(nil, s.Data), field.NewPath("data"))
	size := 0
	for _, v := range s.Data {
		size += len(v)
	}
	if size > maxDataBytes {
		errs = append(errs, field.TooLong(field.NewPath("data"), "", maxDataBytes))
	}
	return errs
}

func (st secretStrategy) ValidateUpdate(o, _ runtime.Object) field.ErrorList { return st.Validate(o) }
