package apps

import (
	"context"
	"net/http"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

var scaleKind = autoscalingv1.SchemeGroupVersion.WithKind("Scale")

// replicas is what the scale subresource reads and writes of a workload.
type replicas struct {
	spec     **int32 // spec.replicas
	status   int32   // status.replicas
	selector *metav1.LabelSelector
}

// scaleSubresource is <workload>/scale, the autoscaling/v1 Scale view of a
// workload's replicas (kubectl scale, autoscalers); of returns the
// workload's replica fields.
func scaleSubresource(of func(runtime.Object) *replicas) *registry.Subresource {
	sc := scale{of}
	return &registry.Subresource{Name: "scale", Kind: scaleKind, Verbs: []string{"get", "patch", "update"}, Handler: sc.serve}
}

type scale struct {
	of func(runtime.Object) *replicas
}

func (s scale) serve(ctx context.Context, req *registry.Request) (runtime.Object, int, error) {
	switch req.Verb {
	case "get":
		obj, err := req.Objects.Get(ctx, req.Namespace, req.Name)
		if err != nil {
			return nil, 0, err
		}
		return s.view(obj), http.StatusOK, nil
	case "update":
		want := &autoscalingv1.Scale{}
		if err := req.Body.Decode(want, scaleKind); err != nil {
			return nil, 0, err
		}
		return s.write(ctx, req, want)
	case "patch":
		obj, err := req.Objects.Get(ctx, req.Namespace, req.Name)
		if err != nil {
			return nil, 0, err
		}
		cur := s.view(obj)
		want := &autoscalingv1.Scale{}
		if err := req.Body.Patch(cur, want, scaleKind); err != nil {
			return nil, 0, err
		}
		if want.ResourceVersion == cur.ResourceVersion {
			want.ResourceVersion = "" // the patch did not ask for a precondition
		}
		return s.write(ctx, req, want)
	}
	return nil, 0, apierrors.NewMethodNotSupported(autoscalingv1.Resource("scale"), req.Verb)
}

// view is the Scale of a workload.
func (s scale) view(obj runtime.Object) *autoscalingv1.Scale {
	m := registry.Meta(obj)
	r := s.of(obj)
	sc := &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
		Status: autoscalingv1.ScaleStatus{Replicas: r.status},
	}
	if *r.spec != nil {
		sc.Spec.Replicas = **r.spec
	}
	if sel, err := metav1.LabelSelectorAsSelector(r.selector); err == nil {
		sc.Status.Selector = sel.String()
	}
	return sc
}

// write sets the workload's replicas to what want asks, through the
// workload's own update path (its strategy and generation).
func (s scale) write(ctx context.Context, req *registry.Request, want *autoscalingv1.Scale) (runtime.Object, int, error) {
	if want.Spec.Replicas < 0 {
		return nil, 0, apierrors.NewInvalid(scaleKind.GroupKind(), req.Name,
			field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), want.Spec.Replicas, "must be greater than or equal to 0")})
	}
	obj, err := req.Objects.Update(ctx, req.Namespace, req.Name, nil, req.DryRun, func(cur runtime.Object) (runtime.Object, error) {
		n := want.Spec.Replicas
		*s.of(cur).spec = &n
		registry.Meta(cur).SetResourceVersion(want.ResourceVersion)
		return cur, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return s.view(obj), http.StatusOK, nil
}
