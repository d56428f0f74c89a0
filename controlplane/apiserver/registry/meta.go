package registry

import (
	"fmt"
	"reflect"
	"sync"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Meta returns an API object's metadata. Every kind in the table has
// ObjectMeta, so a failure is a programming error.
func Meta(obj runtime.Object) metav1.Object {
	m, err := meta.Accessor(obj)
	if err != nil {
		panic(fmt.Sprintf("object %T has no metadata: %v", obj, err))
	}
	return m
}

// EqualSemantic compares API values as Kubernetes does (quantities by
// value, nil and empty alike where the API says so).
func EqualSemantic(a, b interface{}) bool { return apiequality.Semantic.DeepEqual(a, b) }

// Field returns the named top-level field of a typed object (Spec,
// Status), or nil when the type has none.
func Field(obj runtime.Object, name string) interface{} {
	if v := fieldValue(obj, name); v.IsValid() {
		return v.Interface()
	}
	return nil
}

func fieldValue(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName(name)
}

// CopyField sets dst.<name> = src.<name> when both have it.
func CopyField(dst, src runtime.Object, name string) {
	d, s := fieldValue(dst, name), fieldValue(src, name)
	if d.IsValid() && s.IsValid() && d.CanSet() && d.Type() == s.Type() {
		d.Set(s)
	}
}

// ResetField sets obj.<name> to its zero value when obj has it.
func ResetField(obj runtime.Object, name string) {
	if f := fieldValue(obj, name); f.IsValid() && f.CanSet() {
		f.Set(reflect.Zero(f.Type()))
	}
}

// typeFields caches each type's top-level field names: HasField runs on
// every create.
var typeFields sync.Map // reflect.Type → map[string]bool

// HasField reports whether obj's type has the named top-level field.
func HasField(obj runtime.Object, name string) bool {
	t := reflect.TypeOf(obj)
	if c, ok := typeFields.Load(t); ok {
		return c.(map[string]bool)[name]
	}
	names := map[string]bool{}
	if t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		for i := 0; i < t.Elem().NumField(); i++ {
			names[t.Elem().Field(i).Name] = true
		}
	}
	typeFields.Store(t, names)
	return names[name]
}

// Age is how kubectl prints a time since (5m, 3d).
func Age(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t))
}

// maxReportedErrors bounds the field errors one answer carries. Building
// the Status message is quadratic in their number (apimachinery's
// aggregate joins them one by one), so 200,000 invalid label keys would
// keep a core busy for minutes; the first hundred say what is wrong.
const maxReportedErrors = 100

// Invalid is apierrors.NewInvalid with at most maxReportedErrors errors
// (and one saying how many more there were). Strategies use it for every
// 422 they answer.
func Invalid(gk schema.GroupKind, name string, errs field.ErrorList) *apierrors.StatusError {
	if len(errs) > maxReportedErrors {
		more := len(errs) - maxReportedErrors
		errs = append(errs[:maxReportedErrors:maxReportedErrors],
			&field.Error{Type: field.ErrorTypeTooMany, Field: "<truncated>", BadValue: more,
				Detail: fmt.Sprintf("and %d more errors not listed", more)})
	}
	return apierrors.NewInvalid(gk, name, errs)
}
