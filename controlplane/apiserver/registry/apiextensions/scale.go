package apiextensions

import (
	"context"
	"net/http"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

var scaleKind = autoscalingv1.SchemeGroupVersion.WithKind("Scale")

// scaleSubresource is <plural>/scale of a custom resource: the
// autoscaling/v1 Scale view of the fields its CRD names (kubectl scale,
// autoscalers).
func scaleSubresource(paths *apiextensionsinternal.CustomResourceSubresourceScale) *registry.Subresource {
	sc := crScale{paths}
	return &registry.Subresource{Name: "scale", Kind: scaleKind, Verbs: []string{"get", "patch", "update"}, Handler: sc.serve}
}

type crScale struct {
	paths *apiextensionsinternal.CustomResourceSubresourceScale
}

func (s crScale) serve(ctx context.Context, req *registry.Request) (runtime.Object, int, error) {
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
			want.ResourceVersion = "" // the patch asked for no precondition
		}
		return s.write(ctx, req, want)
	}
	return nil, 0, apierrors.NewMethodNotSupported(autoscalingv1.Resource("scale"), req.Verb)
}

func (s crScale) view(obj runtime.Object) *autoscalingv1.Scale {
	u := obj.(*unstructured.Unstructured)
	spec, _, _ := unstructured.NestedInt64(u.Object, splitPath(s.paths.SpecReplicasPath)...)
	status, _, _ := unstructured.NestedInt64(u.Object, splitPath(s.paths.StatusReplicasPath)...)
	sc := &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace(), UID: u.GetUID(),
			ResourceVersion: u.GetResourceVersion(), CreationTimestamp: u.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: int32(spec)},
		Status: autoscalingv1.ScaleStatus{Replicas: int32(status)},
	}
	if p := s.paths.LabelSelectorPath; p != nil {
		sc.Status.Selector, _, _ = unstructured.NestedString(u.Object, splitPath(*p)...)
	}
	return sc
}

func (s crScale) write(ctx context.Context, req *registry.Request, want *autoscalingv1.Scale) (runtime.Object, int, error) {
	if want.Spec.Replicas < 0 {
		return nil, 0, apierrors.NewInvalid(scaleKind.GroupKind(), req.Name,
			field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), want.Spec.Replicas, "must be greater than or equal to 0")})
	}
	obj, err := req.Objects.Update(ctx, req.Namespace, req.Name, nil, req.DryRun, func(cur runtime.Object) (runtime.Object, error) {
		u := cur.(*unstructured.Unstructured)
		if err := unstructured.SetNestedField(u.Object, int64(want.Spec.Replicas), splitPath(s.paths.SpecReplicasPath)...); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		u.SetResourceVersion(want.ResourceVersion)
		return u, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return s.view(obj), http.StatusOK, nil
}
