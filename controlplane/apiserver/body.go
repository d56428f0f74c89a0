package apiserver

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// decodeBody reads and decodes a request body into into, an object of kind
// gvk, checking a given apiVersion and kind against it.
func decodeBody(r *http.Request, into runtime.Object, gvk schema.GroupVersionKind) ([]string, error) {
	fv, err := parseFieldValidation(r)
	if err != nil {
		return nil, err
	}
	data, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if isProtobuf(r.Header.Get("Content-Type")) {
		// Typed clientsets send protobuf: decoded straight into the type.
		obj, got, err := protobufSerializer.Decode(data, &gvk, into)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err))
		}
		if got != nil && *got != gvk {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the object of the request body (%s) does not match the %s of the URL", got, gvk))
		}
		if obj != into {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the request body is not a %s", gvk.Kind))
		}
		into.GetObjectKind().SetGroupVersionKind(gvk)
		return nil, nil
	}
	js, strictErrs, err := bodyJSON(r, data)
	if err != nil {
		return nil, err
	}
	// apiVersion and kind, when given, must match the URL.
	checkType := func(o runtime.Object) error {
		tm := o.GetObjectKind().GroupVersionKind()
		if tm.Kind != "" && tm.Kind != gvk.Kind {
			return apierrors.NewBadRequest(fmt.Sprintf("the kind %q of the request body does not match the kind %q of the URL", tm.Kind, gvk.Kind))
		}
		if av := tm.GroupVersion().String(); av != "" && av != gvk.GroupVersion().String() {
			return apierrors.NewBadRequest(fmt.Sprintf("the apiVersion %q of the request body does not match the apiVersion %q of the URL", av, gvk.GroupVersion().String()))
		}
		return nil
	}
	warnings, err := decodeInto(js, into, gvk.Kind, gvk.Version, fv, strictErrs, checkType)
	if err != nil {
		return nil, err
	}
	into.GetObjectKind().SetGroupVersionKind(gvk)
	return warnings, nil
}

// patchBody applies the request's patch to cur and decodes the result into
// into, an object of kind gvk (which the patch may not change).
func patchBody(r *http.Request, patch []byte, cur, into runtime.Object, gvk schema.GroupVersionKind) ([]string, error) {
	pt, err := patchType(r)
	if err != nil {
		return nil, err
	}
	fv, err := parseFieldValidation(r)
	if err != nil {
		return nil, err
	}
	out, err := applyPatch(pt, patch, cur, into)
	if err != nil {
		return nil, err
	}
	warnings, err := decodeInto(out, into, gvk.Kind, gvk.Version, fv, nil)
	if err != nil {
		return nil, err
	}
	if tm := into.GetObjectKind().GroupVersionKind(); (tm.Kind != "" && tm.Kind != gvk.Kind) || (tm.Version != "" && tm.GroupVersion() != gvk.GroupVersion()) {
		return nil, apierrors.NewBadRequest("a patch may not change apiVersion or kind")
	}
	into.GetObjectKind().SetGroupVersionKind(gvk)
	return warnings, nil
}

// requestBody is the registry.Body of one request; it keeps the warnings
// to send with the answer.
type requestBody struct {
	r        *http.Request
	patch    []byte // read once: a patch is applied again on every retry
	warnings []string
}

func (b *requestBody) Decode(into runtime.Object, gvk schema.GroupVersionKind) error {
	w, err := decodeBody(b.r, into, gvk)
	b.warnings = w
	return err
}

func (b *requestBody) Patch(cur, into runtime.Object, gvk schema.GroupVersionKind) error {
	if b.patch == nil {
		if _, err := patchType(b.r); err != nil {
			return err
		}
		p, err := readBody(b.r)
		if err != nil {
			return err
		}
		b.patch = p
	}
	w, err := patchBody(b.r, b.patch, cur, into, gvk)
	b.warnings = w
	return err
}

func isDryRun(r *http.Request) (bool, error) {
	for _, v := range r.URL.Query()["dryRun"] {
		if v != "All" {
			return false, apierrors.NewBadRequest(fmt.Sprintf("unsupported dryRun value %q: only All is supported", v))
		}
		return true, nil
	}
	return false, nil
}

// patchType returns the patch media type of a PATCH request.
func patchType(r *http.Request) (types.PatchType, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = ct
	}
	switch types.PatchType(mt) {
	case types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType:
		return types.PatchType(mt), nil
	case types.ApplyYAMLPatchType, types.ApplyCBORPatchType:
		return "", &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason:  metav1.StatusReasonUnsupportedMediaType,
			Message: "server-side apply is not supported by skep: use client-side kubectl apply (without --server-side)"}}
	}
	return "", &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got %q)", ct)}}
}

// deleteOptions reads DeleteOptions from the body (if any) and query.
func deleteOptions(r *http.Request) (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	data, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(data))) > 0 {
		js, _, err := bodyJSON(r, data)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(js, opts); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("decode DeleteOptions: %v", cleanJSONError(err)))
		}
	}
	q := r.URL.Query()
	if v := q.Get("gracePeriodSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid gracePeriodSeconds %q", v))
		}
		opts.GracePeriodSeconds = &n
	}
	if v := q.Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		opts.PropagationPolicy = &p
	}
	if b, ok := queryBool(q, "orphanDependents"); ok {
		opts.OrphanDependents = &b
	}
	opts.DryRun = append(opts.DryRun, q["dryRun"]...)
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return nil, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "DeleteOptions"}, "",
				field.ErrorList{field.NotSupported(field.NewPath("propagationPolicy"), *opts.PropagationPolicy, []string{"Foreground", "Background", "Orphan", "nil"})})
		}
	}
	for _, d := range opts.DryRun {
		if d != "All" {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("unsupported dryRun value %q: only All is supported", d))
		}
	}
	return opts, nil
}
