package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// codecs answer what k8s.io/apiserver's filters (impersonation) write.
var codecs = serializer.NewCodecFactory(scheme.Scheme).WithoutConversion()

// protobufSerializer decodes request bodies sent as Kubernetes protobuf.
var protobufSerializer = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

func isProtobuf(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/vnd.kubernetes.protobuf"
}

// maxBodyBytes is the largest request body accepted, like the real API
// server's 3 MiB limit.
const maxBodyBytes = 3 << 20

// fieldValidation is the directive of the fieldValidation query parameter.
type fieldValidation string

const (
	validationIgnore fieldValidation = "Ignore"
	validationWarn   fieldValidation = "Warn"
	validationStrict fieldValidation = "Strict"
)

func parseFieldValidation(r *http.Request) (fieldValidation, error) {
	switch v := r.URL.Query().Get("fieldValidation"); v {
	case "", "Warn":
		return validationWarn, nil
	case "Ignore":
		return validationIgnore, nil
	case "Strict":
		return validationStrict, nil
	default:
		return "", apierrors.NewBadRequest(fmt.Sprintf("fieldValidation must be one of Ignore, Warn, Strict; got %q", v))
	}
}

// readBody reads a request body up to maxBodyBytes.
func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > maxBodyBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBodyBytes))
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("read request body: %v", err))
	}
	if len(data) > maxBodyBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBodyBytes))
	}
	return data, nil
}

func unsupportedMediaType(ct string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got %q)", ct),
	}}
}

// bodyJSON returns the request body as JSON, converting YAML. Duplicate keys
// in YAML are reported as strict errors.
func bodyJSON(r *http.Request, data []byte) (js []byte, strictErrs []error, err error) {
	ct := r.Header.Get("Content-Type")
	mt := "application/json"
	if ct != "" {
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, nil, unsupportedMediaType(ct)
		}
	}
	switch mt {
	case "application/json", "*/*":
		return data, nil, nil
	case "application/vnd.kubernetes.protobuf":
		// Typed clientsets (kubectl create secret, …) send protobuf; it is
		// decoded into the upstream type and handled as JSON from here on.
		obj, gvk, err := protobufSerializer.Decode(data, nil, nil)
		if err != nil {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("decode protobuf body: %v", err))
		}
		if gvk != nil {
			obj.GetObjectKind().SetGroupVersionKind(*gvk)
		}
		js, err := json.Marshal(obj)
		if err != nil {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("decode protobuf body: %v", err))
		}
		return js, nil, nil
	case "application/yaml", "application/x-yaml", "text/yaml":
		js, err := yaml.YAMLToJSONStrict(data)
		if err == nil {
			return js, nil, nil
		}
		js, err2 := yaml.YAMLToJSON(data)
		if err2 != nil {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("error converting YAML to JSON: %v", err2))
		}
		return js, []error{err}, nil
	}
	return nil, nil, unsupportedMediaType(ct)
}

// decodeInto decodes JSON into a typed object, applying the fieldValidation
// directive: Strict fails on unknown or duplicate fields, Warn returns them as
// warnings, Ignore drops them.
func decodeInto(js []byte, obj runtime.Object, kind, version string, fv fieldValidation, prevStrict []error, check ...func(runtime.Object) error) (warnings []string, err error) {
	if len(bytes.TrimSpace(js)) == 0 {
		return nil, apierrors.NewBadRequest("the request body is empty")
	}
	strictErrs, err := k8sjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: %v", kind, version, kind, cleanJSONError(err)))
	}
	for _, c := range check {
		if err := c(obj); err != nil {
			return nil, err
		}
	}
	strictErrs = append(prevStrict, strictErrs...)
	if len(strictErrs) == 0 || fv == validationIgnore {
		return nil, nil
	}
	var msgs []string
	for _, e := range strictErrs {
		msgs = append(msgs, e.Error())
	}
	if fv == validationStrict {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: strict decoding error: %s", kind, version, kind, strings.Join(msgs, ", ")))
	}
	return msgs, nil
}

func cleanJSONError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid character in JSON at offset %d: %v", se.Offset, se)
	}
	return err.Error()
}

// outputFormat is what the client asked the response to be.
type outputFormat struct {
	yaml  bool
	table bool
	// partial answers PartialObjectMetadata(List) instead of the objects.
	partial bool
	// protobuf answers Kubernetes protobuf (single objects only).
	protobuf bool
}

// negotiate picks the response format of a list or watch from the Accept
// header; ok is false when the client accepts nothing skep serves (406).
// Lists and watches are JSON only: the stored JSON is spliced into them.
func negotiate(accept string) (outputFormat, bool) { return negotiateFormat(accept, false) }

// negotiateObject picks the response format of a single object, which may
// be protobuf: typed client-go clients ask for it first, and decoding it
// costs them a fraction of JSON's CPU.
func negotiateObject(accept string) (outputFormat, bool) { return negotiateFormat(accept, true) }

// negotiateWatch picks the format of a watch: JSON, or Kubernetes protobuf
// for metadata-only watches (client-go's metadata informers, the garbage
// collector's among them, ask for it first; decoding protobuf events costs
// them a fraction of decoding JSON ones).
func negotiateWatch(accept string) (outputFormat, bool) {
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				continue
			}
		}
		if mt == "application/vnd.kubernetes.protobuf" && params["as"] == "PartialObjectMetadata" && params["g"] == "meta.k8s.io" && params["v"] == "v1" {
			return outputFormat{partial: true, protobuf: true}, true
		}
		// The first acceptable entry of another kind decides as for lists.
		if of, ok := negotiate(part); ok {
			return of, true
		}
	}
	return negotiate(accept)
}

func negotiateFormat(accept string, allowProtobuf bool) (outputFormat, bool) {
	if strings.TrimSpace(accept) == "" {
		return outputFormat{}, true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				continue
			}
		}
		as := params["as"]
		if as != "" {
			if params["g"] != "meta.k8s.io" || params["v"] != "v1" {
				continue
			}
			if mt != "application/json" && mt != "application/yaml" {
				continue
			}
			switch as {
			case "Table":
				return outputFormat{table: true, yaml: mt == "application/yaml"}, true
			case "PartialObjectMetadata", "PartialObjectMetadataList":
				return outputFormat{partial: true, yaml: mt == "application/yaml"}, true
			}
			continue
		}
		switch mt {
		case "application/json", "application/*", "*/*":
			return outputFormat{}, true
		case "application/yaml":
			return outputFormat{yaml: true}, true
		case "application/vnd.kubernetes.protobuf":
			if allowProtobuf {
				return outputFormat{protobuf: true}, true
			}
		}
	}
	return outputFormat{}, false
}

func notAcceptable(accept string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusNotAcceptable,
		Reason:  metav1.StatusReasonNotAcceptable,
		Message: fmt.Sprintf("only the following media types are accepted: application/json, application/yaml (got %q)", accept),
	}}
}

// encodeJSON marshals an API object (with apiVersion/kind already set).
func encodeJSON(obj interface{}) ([]byte, error) {
	return json.Marshal(obj)
}

// writeProtobuf writes obj as Kubernetes protobuf; false when the object
// has no protobuf form (the caller then answers JSON).
func writeProtobuf(w http.ResponseWriter, code int, obj runtime.Object) bool {
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	if obj.GetObjectKind().GroupVersionKind().Empty() {
		// The protobuf envelope names the type; clients need it to decode.
		gvks, _, err := scheme.Scheme.ObjectKinds(obj)
		if err != nil || len(gvks) == 0 {
			return false
		}
		obj.GetObjectKind().SetGroupVersionKind(gvks[0])
	}
	if err := protobufSerializer.Encode(obj, buf); err != nil {
		return false
	}
	w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
	return true
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeRaw writes an already-encoded JSON document, converting to YAML when asked.
func writeRaw(w http.ResponseWriter, code int, js []byte, asYAML bool) {
	if asYAML {
		y, err := yaml.JSONToYAML(js)
		if err == nil {
			w.Header().Set("Content-Type", "application/yaml")
			w.WriteHeader(code)
			_, _ = w.Write(y)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(js)
	_, _ = w.Write([]byte("\n"))
}

// statusFor turns any error into the metav1.Status the API answers.
func statusFor(err error) metav1.Status {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		st.Kind, st.APIVersion = "Status", "v1"
		if st.Status == "" {
			st.Status = metav1.StatusFailure
		}
		return st
	}
	st := apierrors.NewInternalError(err).Status()
	st.Kind, st.APIVersion = "Status", "v1"
	return st
}

func writeError(w http.ResponseWriter, err error) int {
	st := statusFor(err)
	js, _ := json.Marshal(st)
	code := int(st.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(js)
	_, _ = w.Write([]byte("\n"))
	return code
}

// addWarnings sets Warning headers the way the real API server does.
func addWarnings(w http.ResponseWriter, msgs []string) {
	for _, m := range msgs {
		w.Header().Add("Warning", "299 - "+strconv.Quote(m))
	}
}
