// Package apiextensions is the registry of the apiextensions.k8s.io/v1 API
// group: CustomResourceDefinitions, and the rows of the custom resources
// they define, served by the same generic handler as every built-in kind.
// Validation, pruning, defaulting and the OpenAPI of custom resources are
// Kubernetes' own (k8s.io/apiextensions-apiserver's schema packages), so
// a CRD behaves here as it does on kube-apiserver.
package apiextensions

import (
	"context"
	"fmt"
	"slices"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// CleanupFinalizer holds a deleted CRD until its custom resources are gone,
// as kube-apiserver's.
const CleanupFinalizer = "customresourcecleanup.apiextensions.k8s.io"

// GVK is the kind of a CustomResourceDefinition.
var GVK = apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition")

// Resources returns the rows of the apiextensions group.
func Resources() []*registry.Resource {
	st := crdStrategy{}
	return []*registry.Resource{{
		GVK: GVK, Plural: "customresourcedefinitions", ShortNames: []string{"crd", "crds"},
		Categories: []string{"api-extensions"},
		New:        func() runtime.Object { return &apiextensionsv1.CustomResourceDefinition{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: crdStatusStrategy{}},
		},
		// kubectl get crd prints NAME and CREATED AT.
		NoAge:   true,
		Columns: []registry.Column{{Name: "Created At", Type: "date", Description: "The time the definition was created."}},
		Row: func(o runtime.Object) []interface{} {
			return []interface{}{registry.Meta(o).GetCreationTimestamp().UTC().Format("2006-01-02T15:04:05Z")}
		},
	}}
}

// Internal converts a served CRD to apiextensions' internal type, which its
// validation and schema packages take.
func Internal(crd *apiextensionsv1.CustomResourceDefinition) (*apiextensionsinternal.CustomResourceDefinition, error) {
	out := &apiextensionsinternal.CustomResourceDefinition{}
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd.DeepCopy(), out, nil); err != nil {
		return nil, fmt.Errorf("convert %s: %w", crd.Name, err)
	}
	return out, nil
}

// validateWith converts and runs one of apiextensions' validations.
func validateWith(obj, old runtime.Object, fn func(n, o *apiextensionsinternal.CustomResourceDefinition) field.ErrorList) field.ErrorList {
	n, err := Internal(obj.(*apiextensionsv1.CustomResourceDefinition))
	if err != nil {
		return field.ErrorList{field.InternalError(nil, err)}
	}
	var o *apiextensionsinternal.CustomResourceDefinition
	if old != nil {
		if o, err = Internal(old.(*apiextensionsv1.CustomResourceDefinition)); err != nil {
			return field.ErrorList{field.InternalError(nil, err)}
		}
	}
	return fn(n, o)
}

// crdStrategy is kube-apiserver's CRD strategy: status only through
// status, the storage version recorded in status.storedVersions, and the
// whole of apiextensions' validation (names, versions, structural
// schemas, CEL rules, subresources, printer columns).
type crdStrategy struct{ registry.DefaultStrategy }

func (crdStrategy) PrepareForCreate(obj runtime.Object) {
	crd := obj.(*apiextensionsv1.CustomResourceDefinition)
	crd.Status = apiextensionsv1.CustomResourceDefinitionStatus{}
	crd.Generation = 1
	recordStorageVersion(crd)
}

func (crdStrategy) PrepareForUpdate(obj, old runtime.Object) {
	crd, oc := obj.(*apiextensionsv1.CustomResourceDefinition), old.(*apiextensionsv1.CustomResourceDefinition)
	crd.Status = *oc.Status.DeepCopy()
	if !registry.EqualSemantic(crd.Spec, oc.Spec) {
		crd.Generation = oc.Generation + 1
	}
	recordStorageVersion(crd)
}

// recordStorageVersion adds the storage version to status.storedVersions.
func recordStorageVersion(crd *apiextensionsv1.CustomResourceDefinition) {
	for _, v := range crd.Spec.Versions {
		if v.Storage && !slices.Contains(crd.Status.StoredVersions, v.Name) {
			crd.Status.StoredVersions = append(crd.Status.StoredVersions, v.Name)
		}
	}
}

func (crdStrategy) Default(obj runtime.Object) {
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(obj.(*apiextensionsv1.CustomResourceDefinition))
}

func (crdStrategy) Validate(obj runtime.Object) field.ErrorList {
	return validateWith(obj, nil, func(n, _ *apiextensionsinternal.CustomResourceDefinition) field.ErrorList {
		return crdvalidation.ValidateCustomResourceDefinition(context.Background(), n)
	})
}

func (crdStrategy) ValidateUpdate(obj, old runtime.Object) field.ErrorList {
	return validateWith(obj, old, func(n, o *apiextensionsinternal.CustomResourceDefinition) field.ErrorList {
		return crdvalidation.ValidateCustomResourceDefinitionUpdate(context.Background(), n, o)
	})
}

// BeginDelete adds the cleanup finalizer on the first delete, so the CRD
// stays (Terminating) until the server has deleted its custom resources.
func (crdStrategy) BeginDelete(obj runtime.Object, _ *metav1.DeleteOptions) (int64, bool, error) {
	m := registry.Meta(obj)
	if m.GetDeletionTimestamp() == nil && !slices.Contains(m.GetFinalizers(), CleanupFinalizer) {
		m.SetFinalizers(append(m.GetFinalizers(), CleanupFinalizer))
	}
	return 0, false, nil
}

// crdStatusStrategy writes only status, validated as kube-apiserver's.
type crdStatusStrategy struct{}

func (crdStatusStrategy) PrepareForUpdate(obj, old runtime.Object) {
	crd, oc := obj.(*apiextensionsv1.CustomResourceDefinition), old.(*apiextensionsv1.CustomResourceDefinition)
	crd.Spec = *oc.Spec.DeepCopy()
	crd.Labels, crd.Annotations = oc.Labels, oc.Annotations
	crd.Finalizers, crd.OwnerReferences = oc.Finalizers, oc.OwnerReferences
}

func (crdStatusStrategy) ValidateUpdate(obj, old runtime.Object) field.ErrorList {
	return validateWith(obj, old, func(n, o *apiextensionsinternal.CustomResourceDefinition) field.ErrorList {
		return crdvalidation.ValidateUpdateCustomResourceDefinitionStatus(n, o)
	})
}
