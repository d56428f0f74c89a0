package apps

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
)

func replicaSetResource() *registry.Resource {
	st := replicaSetStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return &registry.Resource{
		GVK: appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), Plural: "replicasets", ShortNames: []string{"rs"}, Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &appsv1.ReplicaSet{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
			scaleSubresource(func(o runtime.Object) *replicas {
				rs := o.(*appsv1.ReplicaSet)
				return &replicas{spec: &rs.Spec.Replicas, status: rs.Status.Replicas, selector: rs.Spec.Selector}
			}),
		},
		// Kubernetes' one field selector for ReplicaSets.
		Fields: func(o runtime.Object) fields.Set {
			return fields.Set{"status.replicas": strconv.Itoa(int(o.(*appsv1.ReplicaSet).Status.Replicas))}
		},
		Columns: append([]registry.Column{
			{Name: "Desired", Type: "integer", Description: "Number of desired pods."},
			{Name: "Current", Type: "integer", Description: "Number of actual replicas."},
			{Name: "Ready", Type: "integer", Description: "The number of ready replicas."},
		}, TemplateColumns("Label selector for pods.")...),
		Row: replicaSetRow,
	}
}

type replicaSetStrategy struct{ registry.SpecStatus }

func (replicaSetStrategy) Default(o runtime.Object) {
	rs := o.(*appsv1.ReplicaSet)
	if rs.Spec.Replicas == nil {
		rs.Spec.Replicas = ptr.To(int32(1))
	}
	core.DefaultPodSpec(&rs.Spec.Template.Spec)
}

func (replicaSetStrategy) Validate(o runtime.Object) field.ErrorList {
	rs := o.(*appsv1.ReplicaSet)
	return validateWorkload(rs.Spec.Selector, &rs.Spec.Template, rs.Spec.Replicas)
}

func (st replicaSetStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	return append(st.Validate(o), validateSelectorUpdate(o.(*appsv1.ReplicaSet).Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector)...)
}

func replicaSetRow(o runtime.Object) []interface{} {
	rs := o.(*appsv1.ReplicaSet)
	want := int32(0)
	if rs.Spec.Replicas != nil {
		want = *rs.Spec.Replicas
	}
	return append([]interface{}{int64(want), int64(rs.Status.Replicas), int64(rs.Status.ReadyReplicas)},
		TemplateCells(&rs.Spec.Template, rs.Spec.Selector)...)
}
