package apps

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
)

func deploymentResource() *registry.Resource {
	st := deploymentStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return &registry.Resource{
		GVK: appsv1.SchemeGroupVersion.WithKind("Deployment"), Plural: "deployments", ShortNames: []string{"deploy"}, Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &appsv1.Deployment{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
			scaleSubresource(func(o runtime.Object) *replicas {
				d := o.(*appsv1.Deployment)
				return &replicas{spec: &d.Spec.Replicas, status: d.Status.Replicas, selector: d.Spec.Selector}
			}),
		},
		Columns: append([]registry.Column{
			{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
			{Name: "Up-to-date", Type: "string", Description: "Total number of non-terminated pods targeted by this deployment that have the desired template spec."},
			{Name: "Available", Type: "string", Description: "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."},
		}, TemplateColumns("Label selector for pods.")...),
		Row: deploymentRow,
	}
}

type deploymentStrategy struct{ registry.SpecStatus }

func (deploymentStrategy) Default(o runtime.Object) {
	d := o.(*appsv1.Deployment)
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptr.To(int32(1))
	}
	if d.Spec.Strategy.Type == "" {
		d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if d.Spec.Strategy.RollingUpdate == nil {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("25%"))
		}
		if d.Spec.Strategy.RollingUpdate.MaxSurge == nil {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromString("25%"))
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptr.To(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptr.To(int32(600))
	}
	core.DefaultPodSpec(&d.Spec.Template.Spec)
}

func (deploymentStrategy) Validate(o runtime.Object) field.ErrorList {
	d := o.(*appsv1.Deployment)
	return validateWorkload(d.Spec.Selector, &d.Spec.Template, d.Spec.Replicas)
}

func (st deploymentStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	return append(st.Validate(o), validateSelectorUpdate(o.(*appsv1.Deployment).Spec.Selector, old.(*appsv1.Deployment).Spec.Selector)...)
}

func deploymentRow(o runtime.Object) []interface{} {
	d := o.(*appsv1.Deployment)
	want := int32(0)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return append([]interface{}{fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, want), int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas)},
		TemplateCells(&d.Spec.Template, d.Spec.Selector)...)
}
