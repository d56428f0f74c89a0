package apiextensions

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource/tableconvertor"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// CustomResourceRows are the rows of the served versions of crd: one per
// version, all stored under the same keys (/registry/<group>/<plural>/),
// as kube-apiserver stores every version of a custom resource alike when
// its conversion strategy is None. A CRD whose schema cannot be served
// (not structural) is an error.
func CustomResourceRows(crd *apiextensionsv1.CustomResourceDefinition) ([]*registry.Resource, error) {
	internal, err := Internal(crd)
	if err != nil {
		return nil, err
	}
	var rows []*registry.Resource
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		row, err := customResourceRow(crd, internal, v)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", crd.Name, v.Name, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func customResourceRow(crd *apiextensionsv1.CustomResourceDefinition, internal *apiextensionsinternal.CustomResourceDefinition, v apiextensionsv1.CustomResourceDefinitionVersion) (*registry.Resource, error) {
	gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Status.AcceptedNames.Kind}
	if gvk.Kind == "" {
		gvk.Kind = crd.Spec.Names.Kind
	}
	val, err := apiextensionsinternal.GetSchemaForVersion(internal, v.Name)
	if err != nil {
		return nil, err
	}
	st := &crStrategy{gvk: gvk, namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped, preserveUnknown: crd.Spec.PreserveUnknownFields}
	if val != nil && val.OpenAPIV3Schema != nil {
		if st.structural, err = structuralschema.NewStructural(val.OpenAPIV3Schema); err != nil {
			return nil, fmt.Errorf("the schema is not structural: %w", err)
		}
		if st.validator, _, err = apiservervalidation.NewSchemaValidator(val.OpenAPIV3Schema); err != nil {
			return nil, err
		}
		if s, ok := val.OpenAPIV3Schema.Properties["status"]; ok {
			if st.statusValidator, _, err = apiservervalidation.NewSchemaValidator(&s); err != nil {
				return nil, err
			}
		}
		st.cel = cel.NewValidator(st.structural, true, celconfig.PerCallLimit)
	}
	subs, err := apiextensionsinternal.GetSubresourcesForVersion(internal, v.Name)
	if err != nil {
		return nil, err
	}
	row := &registry.Resource{
		GVK: gvk, Plural: crd.Status.AcceptedNames.Plural, Singular: crd.Status.AcceptedNames.Singular,
		ShortNames: crd.Status.AcceptedNames.ShortNames, Categories: crd.Status.AcceptedNames.Categories,
		Namespaced: st.namespaced,
		New: func() runtime.Object {
			u := &unstructured.Unstructured{Object: map[string]interface{}{}}
			u.SetGroupVersionKind(gvk)
			return u
		},
		Strategy: st,
		NoAge:    true,
	}
	if row.Plural == "" {
		row.Plural, row.Singular = crd.Spec.Names.Plural, crd.Spec.Names.Singular
		row.ShortNames, row.Categories = crd.Spec.Names.ShortNames, crd.Spec.Names.Categories
	}
	st.plural = row.Plural
	if subs != nil && subs.Status != nil {
		st.status = true
		row.Subresources = append(row.Subresources, &registry.Subresource{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: crStatusStrategy{st}})
	}
	if subs != nil && subs.Scale != nil {
		st.scale = subs.Scale
		row.Subresources = append(row.Subresources, scaleSubresource(subs.Scale))
	}
	// Printer columns: the CRD's (defaulting adds Age when it has none),
	// printed by apiextensions' own convertor.
	cols := v.AdditionalPrinterColumns
	tc, err := tableconvertor.New(cols)
	if err != nil {
		return nil, fmt.Errorf("printer columns: %w", err)
	}
	for _, c := range cols {
		row.Columns = append(row.Columns, registry.Column{Name: c.Name, Type: c.Type, Format: c.Format, Description: c.Description, Priority: c.Priority})
	}
	row.Row = func(obj runtime.Object) []interface{} {
		t, err := tc.ConvertToTable(context.Background(), obj, nil)
		if err != nil || len(t.Rows) == 0 {
			return make([]interface{}, len(cols))
		}
		return t.Rows[0].Cells[1:] // without NAME, which the generic Table adds
	}
	return row, nil
}

// crStrategy is kube-apiserver's custom resource strategy, on the CRD's
// structural schema: pruning of unknown fields, defaults, metadata
// coercion, OpenAPI and CEL validation, list-type invariants, scale paths.
type crStrategy struct {
	registry.DefaultStrategy
	gvk             schema.GroupVersionKind
	namespaced      bool
	preserveUnknown bool
	structural      *structuralschema.Structural
	validator       apiservervalidation.SchemaValidator
	statusValidator apiservervalidation.SchemaValidator
	cel             *cel.Validator
	status          bool
	scale           *apiextensionsinternal.CustomResourceSubresourceScale
	plural          string
	terminating     atomic.Bool
}

func content(obj runtime.Object) map[string]interface{} {
	return obj.(*unstructured.Unstructured).Object
}

func (s *crStrategy) PrepareForCreate(obj runtime.Object) {
	if s.status {
		delete(content(obj), "status") // create cannot set status
	}
	registry.Meta(obj).SetGeneration(1)
}

func (s *crStrategy) PrepareForUpdate(obj, old runtime.Object) {
	n, o := content(obj), content(old)
	if s.status {
		if st, ok := o["status"]; ok {
			n["status"] = st
		} else {
			delete(n, "status")
		}
	}
	// Any change but metadata's counts as a generation, as upstream.
	if !registry.EqualSemantic(withoutMetadata(n), withoutMetadata(o)) {
		registry.Meta(obj).SetGeneration(registry.Meta(old).GetGeneration() + 1)
	}
}

func withoutMetadata(m map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(m))
	for k, v := range m {
		if k != "metadata" {
			out[k] = v
		}
	}
	return out
}

// Prune drops what the schema does not declare and returns the paths it
// dropped, for fieldValidation (registry.Pruner); it also coerces
// embedded metadata as upstream's decoder does.
func (s *crStrategy) Prune(obj runtime.Object) []string {
	if s.structural == nil || s.preserveUnknown {
		return nil
	}
	u := content(obj)
	var unknown []string
	unknown = append(unknown, structuralpruning.PruneWithOptions(u, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(u, s.structural)
	if _, paths := schemaobjectmeta.CoerceWithOptions(nil, u, s.structural, false, schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true}); len(paths) > 0 {
		unknown = append(unknown, paths...)
	}
	return unknown
}

func (s *crStrategy) Default(obj runtime.Object) {
	if s.structural != nil {
		structuraldefaulting.Default(content(obj), s.structural)
	}
}

func (s *crStrategy) Validate(obj runtime.Object) field.ErrorList {
	u := obj.(*unstructured.Unstructured)
	errs := s.validateTypeMeta(u)
	if len(errs) > 0 {
		return errs
	}
	if s.validator != nil {
		errs = append(errs, apiservervalidation.ValidateCustomResource(nil, u.Object, s.validator)...)
	}
	errs = append(errs, s.validateScale(u, true)...)
	return append(errs, s.validateSchema(u, nil, errs)...)
}

func (s *crStrategy) ValidateUpdate(obj, old runtime.Object) field.ErrorList {
	u, ou := obj.(*unstructured.Unstructured), old.(*unstructured.Unstructured)
	errs := s.validateTypeMeta(u)
	if len(errs) > 0 {
		return errs
	}
	if s.validator != nil {
		errs = append(errs, apiservervalidation.ValidateCustomResourceUpdate(nil, u.Object, ou.Object, s.validator)...)
	}
	errs = append(errs, s.validateScale(u, true)...)
	return append(errs, s.validateSchema(u, ou, errs)...)
}

// validateSchema checks what the OpenAPI validator does not: embedded
// objects' metadata, list-type invariants and the CEL rules (skipped, as
// upstream, when earlier errors would make them meaningless).
func (s *crStrategy) validateSchema(u, old *unstructured.Unstructured, prior field.ErrorList) field.ErrorList {
	if s.structural == nil {
		return nil
	}
	var errs field.ErrorList
	errs = append(errs, schemaobjectmeta.Validate(nil, u.Object, s.structural, false)...)
	if old == nil || len(structurallisttype.ValidateListSetsAndMaps(nil, s.structural, old.Object)) == 0 {
		errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, s.structural, u.Object)...)
	}
	if s.cel != nil {
		if blocking(append(prior, errs...)) {
			return append(errs, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"))
		}
		var oldObj interface{}
		if old != nil {
			oldObj = old.Object
		}
		celErrs, _ := s.cel.Validate(context.Background(), nil, s.structural, u.Object, oldObj, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	return errs
}

func blocking(errs field.ErrorList) bool {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true
		}
	}
	return false
}

func (s *crStrategy) validateTypeMeta(u *unstructured.Unstructured) field.ErrorList {
	var errs field.ErrorList
	if u.GetKind() != s.gvk.Kind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), u.GetKind(), "must be "+s.gvk.Kind))
	}
	if u.GetAPIVersion() != s.gvk.GroupVersion().String() {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), u.GetAPIVersion(), "must be "+s.gvk.GroupVersion().String()))
	}
	return errs
}

// validateScale checks the replica paths of the scale subresource.
func (s *crStrategy) validateScale(u *unstructured.Unstructured, spec bool) field.ErrorList {
	if s.scale == nil {
		return nil
	}
	var errs field.ErrorList
	check := func(path string) {
		n, _, err := unstructured.NestedInt64(u.Object, splitPath(path)...)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(field.NewPath(path), n, err.Error()))
		case n < 0:
			errs = append(errs, field.Invalid(field.NewPath(path), n, "should be a non-negative integer"))
		case n > math.MaxInt32:
			errs = append(errs, field.Invalid(field.NewPath(path), n, fmt.Sprintf("should be less than or equal to %v", math.MaxInt32)))
		}
	}
	if spec {
		check(s.scale.SpecReplicasPath)
	}
	check(s.scale.StatusReplicasPath)
	if p := s.scale.LabelSelectorPath; p != nil {
		if sel, _, err := unstructured.NestedString(u.Object, splitPath(*p)...); err != nil {
			errs = append(errs, field.Invalid(field.NewPath(*p), sel, err.Error()))
		}
	}
	return errs
}

// splitPath turns ".spec.replicas" into its fields.
func splitPath(p string) []string { return strings.Split(strings.TrimPrefix(p, "."), ".") }

// crStatusStrategy writes only status, validated against the status
// schema.
type crStatusStrategy struct{ s *crStrategy }

// PrepareForUpdate keeps everything of the stored object but the status
// (and the managedFields that record this write), as upstream.
func (c crStatusStrategy) PrepareForUpdate(obj, old runtime.Object) {
	u := obj.(*unstructured.Unstructured)
	status, hasStatus := u.Object["status"]
	managed := u.GetManagedFields()
	u.Object = old.(*unstructured.Unstructured).DeepCopy().Object
	u.SetManagedFields(managed)
	if hasStatus {
		u.Object["status"] = status
	} else {
		delete(u.Object, "status")
	}
}

func (c crStatusStrategy) ValidateUpdate(obj, old runtime.Object) field.ErrorList {
	u, ou := obj.(*unstructured.Unstructured), old.(*unstructured.Unstructured)
	errs := c.s.validateTypeMeta(u)
	if len(errs) > 0 {
		return errs
	}
	if st, ok := u.Object["status"]; ok && c.s.statusValidator != nil {
		errs = append(errs, apiservervalidation.ValidateCustomResourceUpdate(field.NewPath("status"), st, ou.Object["status"], c.s.statusValidator)...)
	}
	errs = append(errs, c.s.validateScale(u, false)...)
	return append(errs, c.s.validateSchema(u, ou, errs)...)
}

// SetTerminating marks the CRD being deleted: its custom resources may
// still be read, changed and deleted, but no new one created.
func (s *crStrategy) SetTerminating(t bool) { s.terminating.Store(t) }

// Admit refuses creates while the CRD is terminating, as upstream.
func (s *crStrategy) Admit(_ context.Context, obj, old runtime.Object) error {
	if old == nil && s.terminating.Load() {
		return apierrors.NewForbidden(schema.GroupResource{Group: s.gvk.Group, Resource: s.plural}, registry.Meta(obj).GetName(),
			errors.New("create not allowed while custom resource definition is terminating"))
	}
	return nil
}
