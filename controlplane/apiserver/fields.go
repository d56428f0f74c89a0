package apiserver

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/yaml"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// This file is field management, as kube-apiserver's: every write through
// the API records which manager set which fields (metadata.managedFields),
// and server-side apply merges a manager's intent by those records, on
// apimachinery's managedfields (structured-merge-diff) with the schemas of
// package openapi.

// fieldManagers holds one FieldManager per resource and subresource.
type fieldManagers struct {
	mu sync.Mutex
	m  map[fieldManagerKey]*managedfields.FieldManager
}

type fieldManagerKey struct {
	res *registry.Resource
	sub string
}

// fieldManager returns the FieldManager of res (sub "" for the object
// itself, "status" for its status subresource).
func (s *Server) fieldManager(res *registry.Resource, sub string) (*managedfields.FieldManager, error) {
	s.fields.mu.Lock()
	defer s.fields.mu.Unlock()
	key := fieldManagerKey{res, sub}
	if fm := s.fields.m[key]; fm != nil {
		return fm, nil
	}
	var fm *managedfields.FieldManager
	if crd := s.customResourceCRD(res); crd != nil {
		// A custom resource: its CRD's schema, and an unstructured
		// converter (custom resources have no Go type).
		tc, err := s.crdTypeConverter(crd)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		conv := unstructuredConverter{}
		fm, err = managedfields.NewDefaultCRDFieldManager(tc, conv, defaulter{res.Strategy}, conv,
			res.GVK, res.GVK.GroupVersion(), sub, resetFields(res, sub))
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
	} else {
		tc, err := s.schemas.TypeConverter()
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		fm, err = managedfields.NewDefaultFieldManager(tc, scheme.Scheme, defaulter{res.Strategy}, scheme.Scheme,
			res.GVK, res.GVK.GroupVersion(), sub, resetFields(res, sub))
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
	}
	if s.fields.m == nil {
		s.fields.m = map[fieldManagerKey]*managedfields.FieldManager{}
	}
	s.fields.m[key] = fm
	return fm, nil
}

// forgetFieldManagers drops the field managers of rows no longer served.
func (s *Server) forgetFieldManagers(rows []*registry.Resource) {
	s.fields.mu.Lock()
	defer s.fields.mu.Unlock()
	for k := range s.fields.m {
		if slices.Contains(rows, k.res) {
			delete(s.fields.m, k)
		}
	}
}

// resetFields are the fields a write through sub cannot set, so no manager
// owns them by that write: a resource with a status subresource ignores
// status in writes of the object, and its status subresource ignores spec
// (the strategies' PrepareForCreate/PrepareForUpdate reset them), as
// Kubernetes' strategies' GetResetFields say.
func resetFields(res *registry.Resource, sub string) map[fieldpath.APIVersion]fieldpath.Filter {
	hasStatus := false
	for _, s := range res.Subresources {
		if s.Name == "status" && s.Update != nil {
			hasStatus = true
		}
	}
	if !hasStatus {
		return nil
	}
	field := "status"
	if sub == "status" {
		field = "spec"
	}
	return map[fieldpath.APIVersion]fieldpath.Filter{
		fieldpath.APIVersion(res.GVK.GroupVersion().String()): fieldpath.NewExcludeSetFilter(fieldpath.NewSet(fieldpath.MakePathOrDie(field))),
	}
}

// defaulter applies a strategy's defaults to what an apply produced, as the
// decoder's defaulting does for other writes.
type defaulter struct{ st registry.Strategy }

func (d defaulter) Default(obj runtime.Object) { d.st.Default(obj) }

// writeParams are a write's query parameters (CreateOptions,
// UpdateOptions, PatchOptions), decoded and validated as kube-apiserver
// does: a bad fieldManager, dryRun or fieldValidation, or force on a patch
// that is not an apply, is 422 Invalid naming the option.
type writeParams struct {
	manager string
	force   bool
}

func parseWriteParams(r *http.Request, verb string, pt types.PatchType) (writeParams, error) {
	var (
		p    writeParams
		opts runtime.Object
		errs func() field.ErrorList
	)
	switch verb {
	case "create":
		o := &metav1.CreateOptions{}
		opts, errs = o, func() field.ErrorList { p.manager = o.FieldManager; return metav1validation.ValidateCreateOptions(o) }
	case "update":
		o := &metav1.UpdateOptions{}
		opts, errs = o, func() field.ErrorList { p.manager = o.FieldManager; return metav1validation.ValidateUpdateOptions(o) }
	case "patch":
		o := &metav1.PatchOptions{}
		opts, errs = o, func() field.ErrorList {
			p.manager, p.force = o.FieldManager, o.Force != nil && *o.Force
			return metav1validation.ValidatePatchOptions(o, pt)
		}
	default:
		return p, fmt.Errorf("no write options for verb %q", verb)
	}
	if err := scheme.ParameterCodec.DecodeParameters(r.URL.Query(), metav1.Unversioned, opts); err != nil {
		return p, apierrors.NewBadRequest(err.Error())
	}
	if fe := errs(); len(fe) > 0 {
		kind := strings.ToUpper(verb[:1]) + verb[1:] + "Options"
		return p, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: kind}, "", fe)
	}
	if p.manager == "" {
		p.manager = prefixFromUserAgent(r.UserAgent())
	}
	return p, nil
}

// prefixFromUserAgent is a manager's name when the client gives none: its
// User-Agent up to the first "/", printable characters only, at most 128
// bytes (kube-apiserver's rule, so "kubectl/v1.33 …" manages as "kubectl").
func prefixFromUserAgent(u string) string {
	m, _, _ := strings.Cut(u, "/")
	var buf bytes.Buffer
	for _, r := range m {
		if !unicode.IsPrint(r) {
			continue
		}
		if buf.Len()+utf8.RuneLen(r) > metav1validation.FieldManagerMaxLength {
			break
		}
		buf.WriteRune(r)
	}
	return buf.String()
}

// trackFields records a non-apply write of obj over live (an empty object
// for a create) in obj's managedFields.
func (s *Server) trackFields(res *registry.Resource, sub string, live, obj runtime.Object, manager string) (runtime.Object, error) {
	fm, err := s.fieldManager(res, sub)
	if err != nil {
		return nil, err
	}
	return fm.UpdateNoErrors(live, obj, manager), nil
}

// apply merges an apply configuration (YAML or JSON) into live, which
// is an empty object when the apply creates.
func (s *Server) apply(res *registry.Resource, sub string, live runtime.Object, patch []byte, p writeParams, fv fieldValidation) (runtime.Object, error) {
	fm, err := s.fieldManager(res, sub)
	if err != nil {
		return nil, err
	}
	cfg, err := decodeApplyConfiguration(patch)
	if err != nil {
		return nil, err
	}
	obj, err := fm.Apply(live, cfg, p.manager, p.force)
	if err != nil {
		if _, ok := err.(apierrors.APIStatus); ok {
			return nil, err
		}
		// A configuration the schema cannot hold (a field it does not
		// declare, a value of the wrong type) is the client's error; the
		// message names the field. kube-apiserver answers these with 500.
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if fv == validationStrict {
		if err := strictYAML(patch); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("error strict decoding YAML: %v", err))
		}
	}
	return obj, nil
}

// decodeApplyConfiguration reads an apply patch: a YAML (or JSON) object.
func decodeApplyConfiguration(patch []byte) (*unstructured.Unstructured, error) {
	if d := jsonDepth(patch); d > maxPatchDepth {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch is nested %d levels deep; at most %d are allowed", d, maxPatchDepth))
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(patch, &m); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("error decoding YAML: %v", err))
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// strictYAML fails on what a strict decode refuses (duplicate fields).
func strictYAML(patch []byte) error {
	return yaml.UnmarshalStrict(patch, &map[string]interface{}{})
}
