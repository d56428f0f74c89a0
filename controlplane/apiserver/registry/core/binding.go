package core

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// bindingKind is pods/binding's body.
var bindingKind = corev1.SchemeGroupVersion.WithKind("Binding")

// bindPod serves POST pods/<name>/binding, the scheduler's call: it sets
// the pod's node once, as kube-apiserver's BindingREST does.
func bindPod(pods registry.Strategy) registry.Handler {
	bs := bindingStrategy{pods}
	return func(ctx context.Context, req *registry.Request) (runtime.Object, int, error) {
		return bind(ctx, req, bs)
	}
}

// bindingStrategy writes what a binding sets (spec.nodeName, the
// PodScheduled condition, annotations) and validates as the pod's own.
type bindingStrategy struct{ pods registry.Strategy }

func (bindingStrategy) PrepareForUpdate(_, _ runtime.Object) {}

func (b bindingStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	return b.pods.ValidateUpdate(o, old)
}

func bind(ctx context.Context, req *registry.Request, bs bindingStrategy) (runtime.Object, int, error) {
	b := &corev1.Binding{}
	if err := req.Body.Decode(b, bindingKind); err != nil {
		return nil, 0, err
	}
	if b.Name != "" && b.Name != req.Name {
		return nil, 0, apierrors.NewBadRequest(fmt.Sprintf("the name of the binding (%s) does not match the pod (%s)", b.Name, req.Name))
	}
	if b.Target.Kind != "" && b.Target.Kind != "Node" {
		return nil, 0, apierrors.NewInvalid(bindingKind.GroupKind(), req.Name,
			field.ErrorList{field.NotSupported(field.NewPath("target", "kind"), b.Target.Kind, []string{"Node", "<empty>"})})
	}
	if b.Target.Name == "" {
		return nil, 0, apierrors.NewInvalid(bindingKind.GroupKind(), req.Name, field.ErrorList{field.Required(field.NewPath("target", "name"), "")})
	}
	gr := schema.GroupResource{Resource: "pods/binding"}
	_, err := req.Objects.Update(ctx, req.Namespace, req.Name, bs, req.DryRun, func(cur runtime.Object) (runtime.Object, error) {
		p := cur.(*corev1.Pod)
		if p.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(gr, req.Name, errors.New("pod is being deleted, cannot be assigned to a host"))
		}
		if p.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(gr, req.Name, fmt.Errorf("pod %s is already assigned to node %q", req.Name, p.Spec.NodeName))
		}
		if b.UID != "" && b.UID != p.UID {
			return nil, apierrors.NewConflict(gr, req.Name, fmt.Errorf("precondition failed: UID in precondition: %v, UID in object meta: %v", b.UID, p.UID))
		}
		for k, v := range b.Annotations {
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			p.Annotations[k] = v
		}
		p.Spec.NodeName = b.Target.Name
		setPodCondition(p, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
		p.ResourceVersion = "" // no precondition: the checks above are the binding's
		return p, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated}, http.StatusCreated, nil
}

func setPodCondition(p *corev1.Pod, c corev1.PodCondition) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == c.Type {
			p.Status.Conditions[i] = c
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, c)
}

// podLog serves GET pods/<name>/log; the logs live on the pod's node, and
// no node agent serves them yet.
func podLog(_ context.Context, req *registry.Request) (runtime.Object, int, error) {
	return nil, 0, apierrors.NewBadRequest(fmt.Sprintf("pods/log is not served by skep yet: read the logs of pod %q on its node", req.Name))
}
