package core

import (
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func namespaceResource() *registry.Resource {
	st := namespaceStrategy{SpecStatus: registry.SpecStatus{Status: true}}
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Namespace"), Plural: "namespaces", ShortNames: []string{"ns"},
		New:    func() runtime.Object { return &corev1.Namespace{} },
		NameFn: apivalidation.NameIsDNSLabel,
		// No deletecollection, as in Kubernetes: DELETE /api/v1/namespaces
		// is 405, never "every namespace but the immortal ones".
		Verbs:    []string{"create", "delete", "get", "list", "patch", "update", "watch"},
		Strategy: st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
			{Name: "finalize", Verbs: []string{"update"}, Update: finalizeStrategy{st}},
		},
		Fields: func(o runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
		},
		Columns: []registry.Column{{Name: "Status", Type: "string", Description: "The status of the namespace"}},
		Row:     func(o runtime.Object) []interface{} { return []interface{}{string(o.(*corev1.Namespace).Status.Phase)} },
	}
}

// immortalNamespaces may not be deleted, as upstream.
var immortalNamespaces = map[string]bool{"default": true, "kube-system": true, "kube-public": true}

// namespaceStrategy: a namespace is created with the kubernetes finalizer,
// which the namespace controller removes (PUT namespaces/<n>/finalize)
// once the namespace is empty; deleting it only marks it Terminating until
// then.
type namespaceStrategy struct{ registry.SpecStatus }

func (st namespaceStrategy) PrepareForCreate(o runtime.Object) {
	st.SpecStatus.PrepareForCreate(o)
	ns := o.(*corev1.Namespace)
	if len(ns.Spec.Finalizers) == 0 {
		ns.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
	}
}

func (namespaceStrategy) Default(o runtime.Object) {
	ns := o.(*corev1.Namespace)
	if ns.Status.Phase == "" {
		ns.Status.Phase = corev1.NamespaceActive
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[corev1.LabelMetadataName] = ns.Name
}

func (namespaceStrategy) BeginDelete(o runtime.Object, _ *metav1.DeleteOptions) (int64, bool, error) {
	n := o.(*corev1.Namespace)
	if immortalNamespaces[n.Name] {
		return 0, false, apierrors.NewForbidden(corev1.Resource("namespaces"), n.Name, errors.New("this namespace may not be deleted"))
	}
	if len(n.Spec.Finalizers) > 0 {
		if n.DeletionTimestamp == nil {
			now := metav1.Now()
			n.DeletionTimestamp = &now
			n.DeletionGracePeriodSeconds = ptr.To(int64(0))
		}
		n.Status.Phase = corev1.NamespaceTerminating
	}
	return 0, false, nil
}

// Removable: a namespace also waits for its spec.finalizers.
func (namespaceStrategy) Removable(o runtime.Object) bool {
	return len(o.(*corev1.Namespace).Spec.Finalizers) == 0
}

// finalizeStrategy is namespaces/finalize: it writes spec.finalizers only.
type finalizeStrategy struct{ main namespaceStrategy }

func (finalizeStrategy) PrepareForUpdate(o, old runtime.Object) {
	fin := o.(*corev1.Namespace).Spec.Finalizers
	n := old.DeepCopyObject().(*corev1.Namespace)
	n.Spec.Finalizers = fin
	*o.(*corev1.Namespace) = *n
}

func (f finalizeStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	return f.main.ValidateUpdate(o, old)
}
