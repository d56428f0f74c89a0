package apiserver

import (
	"reflect"
	"strings"
	"sync"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// resource is one row of the table that drives the generic REST handler:
// adding a resource is adding a row, not a handler.
type resource struct {
	gvk        schema.GroupVersionKind
	plural     string
	singular   string
	shortNames []string
	categories []string
	namespaced bool
	// subresources served besides the object itself: "status", "scale",
	// "binding", "log", "finalize".
	subresources []string

	newObj func() runtime.Object
	// typeFields holds the top-level field names of newObj's type (hasField).
	typeFieldsOnce sync.Once
	typeFields     map[string]bool
	newList        func() runtime.Object

	// nameFn validates metadata.name (DNS-1123 subdomain unless said otherwise).
	nameFn apivalidation.ValidateNameFunc
	// defaults fills in what the real API server's defaulting does.
	defaults func(obj runtime.Object)
	// onCreate runs before defaults on create only.
	onCreate func(obj runtime.Object)
	// validate checks required fields beyond metadata; old is nil on create.
	validate func(obj, old runtime.Object) field.ErrorList
	// fields returns the field-selector attributes beyond metadata.name and
	// metadata.namespace, which every resource has.
	fields func(obj runtime.Object) fields.Set
	// columns and row define the Table kubectl get prints; NAME and AGE are
	// added around them.
	columns []metav1.TableColumnDefinition
	row     func(obj runtime.Object) []interface{}
	// gracefulDelete, when set, decides whether a delete only marks the object
	// (returns true) with the given grace period instead of removing it.
	gracefulDelete func(obj runtime.Object, grace *int64) (int64, bool)
}

func (r *resource) gvr() schema.GroupVersionResource {
	return r.gvk.GroupVersion().WithResource(r.plural)
}

func (r *resource) groupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.gvk.Group, Resource: r.plural}
}

func (r *resource) hasSub(s string) bool {
	for _, x := range r.subresources {
		if x == s {
			return true
		}
	}
	return false
}

// keyPrefix is where the objects of this resource live in the store, like
// the real API server's etcd layout: /registry/[<group>/]<plural>/.
func (r *resource) keyPrefix() string {
	if r.gvk.Group == "" {
		return "/registry/" + r.plural + "/"
	}
	return "/registry/" + r.gvk.Group + "/" + r.plural + "/"
}

// prefixFor is the key prefix of one namespace (or of all objects when ns is
// empty or the resource is cluster-scoped).
func (r *resource) prefixFor(ns string) string {
	if !r.namespaced || ns == "" {
		return r.keyPrefix()
	}
	return r.keyPrefix() + ns + "/"
}

func (r *resource) key(ns, name string) string {
	if !r.namespaced {
		return r.keyPrefix() + name
	}
	return r.keyPrefix() + ns + "/" + name
}

// fieldSet is every field-selector attribute of obj.
func (r *resource) fieldSet(obj runtime.Object) fields.Set {
	m := mustMeta(obj)
	set := fields.Set{"metadata.name": m.GetName()}
	if r.namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if r.fields != nil {
		for k, v := range r.fields(obj) {
			set[k] = v
		}
	}
	return set
}

// fieldLabels lists the field-selector attributes this resource supports.
func (r *resource) fieldLabels() map[string]bool {
	set := r.fieldSet(r.newObj())
	out := make(map[string]bool, len(set))
	for k := range set {
		out[k] = true
	}
	return out
}

// structField returns the named top-level field of a typed object (Spec,
// Status), or an invalid value when the type has none.
func structField(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName(name)
}

// copyField sets dst.<name> = src.<name> when both have it.
func copyField(dst, src runtime.Object, name string) {
	d, s := structField(dst, name), structField(src, name)
	if d.IsValid() && s.IsValid() && d.CanSet() {
		d.Set(s)
	}
}

// hasField reports whether the resource's type has the named top-level
// field. The field names are read from the type once: this runs on every
// create and update.
func (r *resource) hasField(name string) bool {
	r.typeFieldsOnce.Do(func() {
		r.typeFields = map[string]bool{}
		t := reflect.TypeOf(r.newObj())
		if t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
			for i := 0; i < t.Elem().NumField(); i++ {
				r.typeFields[t.Elem().Field(i).Name] = true
			}
		}
	})
	return r.typeFields[name]
}

// registry is the resource table indexed the ways requests need.
type registry struct {
	all []*resource
	// byGVR maps group/version/plural to the resource.
	byGVR map[schema.GroupVersionResource]*resource
	byGVK map[schema.GroupVersionKind]*resource
}

func newRegistry(rs []*resource) *registry {
	reg := &registry{all: rs, byGVR: map[schema.GroupVersionResource]*resource{}, byGVK: map[schema.GroupVersionKind]*resource{}}
	for _, r := range rs {
		if r.nameFn == nil {
			r.nameFn = apivalidation.NameIsDNSSubdomain
		}
		if r.singular == "" {
			r.singular = strings.ToLower(r.gvk.Kind)
		}
		reg.byGVR[r.gvr()] = r
		reg.byGVK[r.gvk] = r
	}
	return reg
}

// groupVersions lists the served group/versions in a stable order, the core
// group first.
func (reg *registry) groupVersions() []schema.GroupVersion {
	var out []schema.GroupVersion
	seen := map[schema.GroupVersion]bool{}
	for _, r := range reg.all {
		gv := r.gvk.GroupVersion()
		if !seen[gv] {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	return out
}
