package registry

import (
	"fmt"
	"slices"
	"strings"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Resource is one row of the table that drives the generic REST handler:
// adding a kind is adding a row and its strategy, not a handler.
type Resource struct {
	GVK        schema.GroupVersionKind
	Plural     string
	Singular   string // default: the kind in lower case
	ShortNames []string
	Categories []string
	Namespaced bool

	// New returns an empty object of the kind.
	New func() runtime.Object
	// NameFn validates metadata.name (default: a DNS-1123 subdomain).
	NameFn apivalidation.ValidateNameFunc
	// Verbs the resource serves (default: AllVerbs); a request for another
	// answers 405, as kube-apiserver does for a route it did not register.
	Verbs []string
	// Strategy says what the kind adds to the generic create, update and
	// delete (default: DefaultStrategy, nothing).
	Strategy Strategy
	// Subresources served besides the object itself.
	Subresources []*Subresource

	// Fields returns the field-selector attributes beyond metadata.name and
	// metadata.namespace, which every resource has.
	Fields func(obj runtime.Object) fields.Set
	// Columns and Row define the Table kubectl get prints; NAME and AGE are
	// added around them.
	Columns []Column
	Row     func(obj runtime.Object) []interface{}
	// NoAge leaves out the AGE column (kubectl shows CREATED AT for RBAC
	// kinds instead).
	NoAge bool
}

// Column is a Table column; Priority 1 columns show with -o wide.
type Column = metav1.TableColumnDefinition

// GVR is the resource's group, version and plural name.
func (r *Resource) GVR() schema.GroupVersionResource {
	return r.GVK.GroupVersion().WithResource(r.Plural)
}

// GroupResource names the resource in errors (pods, deployments.apps).
func (r *Resource) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.GVK.Group, Resource: r.Plural}
}

// AllVerbs are the verbs of a resource with the whole REST surface.
var AllVerbs = []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

// Serves reports whether the resource serves the verb.
func (r *Resource) Serves(verb string) bool { return slices.Contains(r.Verbs, verb) }

// Subresource returns the named subresource, or nil.
func (r *Resource) Subresource(name string) *Subresource {
	for _, s := range r.Subresources {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// KeyPrefix is where the objects of this resource live in the store, like
// kube-apiserver's etcd layout: /registry/[<group>/]<plural>/.
func (r *Resource) KeyPrefix() string {
	if r.GVK.Group == "" {
		return "/registry/" + r.Plural + "/"
	}
	return "/registry/" + r.GVK.Group + "/" + r.Plural + "/"
}

// PrefixFor is the key prefix of one namespace (or of all objects when ns
// is empty or the resource is cluster-scoped).
func (r *Resource) PrefixFor(ns string) string {
	if !r.Namespaced || ns == "" {
		return r.KeyPrefix()
	}
	return r.KeyPrefix() + ns + "/"
}

// Key is the store key of one object.
func (r *Resource) Key(ns, name string) string {
	if !r.Namespaced {
		return r.KeyPrefix() + name
	}
	return r.KeyPrefix() + ns + "/" + name
}

// FieldSet is every field-selector attribute of obj.
func (r *Resource) FieldSet(obj runtime.Object) fields.Set {
	m := Meta(obj)
	set := fields.Set{"metadata.name": m.GetName()}
	if r.Namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if r.Fields != nil {
		for k, v := range r.Fields(obj) {
			set[k] = v
		}
	}
	return set
}

// FieldLabels lists the field-selector attributes this resource supports.
func (r *Resource) FieldLabels() map[string]bool {
	set := r.FieldSet(r.New())
	out := make(map[string]bool, len(set))
	for k := range set {
		out[k] = true
	}
	return out
}

// Table is the resource table indexed the ways requests need.
type Table struct {
	All   []*Resource
	byGVR map[schema.GroupVersionResource]*Resource
}

// NewTable indexes the rows, filling in defaults; two rows for one
// group/version/resource are a programming error.
func NewTable(groups ...[]*Resource) (*Table, error) {
	t := &Table{byGVR: map[schema.GroupVersionResource]*Resource{}}
	for _, rs := range groups {
		for _, r := range rs {
			if r.NameFn == nil {
				r.NameFn = apivalidation.NameIsDNSSubdomain
			}
			if r.Singular == "" {
				r.Singular = strings.ToLower(r.GVK.Kind)
			}
			if r.Verbs == nil {
				r.Verbs = AllVerbs
			}
			if r.Strategy == nil {
				r.Strategy = DefaultStrategy{}
			}
			for _, s := range r.Subresources {
				if (s.Update == nil) == (s.Handler == nil) {
					return nil, fmt.Errorf("%s/%s: a subresource has either an update strategy or a handler", r.Plural, s.Name)
				}
			}
			if _, dup := t.byGVR[r.GVR()]; dup {
				return nil, fmt.Errorf("resource %s is in the table twice", r.GVR())
			}
			t.byGVR[r.GVR()] = r
			t.All = append(t.All, r)
		}
	}
	return t, nil
}

// Lookup returns the resource of a group/version/plural, or nil.
func (t *Table) Lookup(gvr schema.GroupVersionResource) *Resource { return t.byGVR[gvr] }

// GroupVersions lists the served group/versions in table order (the core
// group first when its rows come first).
func (t *Table) GroupVersions() []schema.GroupVersion {
	var out []schema.GroupVersion
	for _, r := range t.All {
		if gv := r.GVK.GroupVersion(); !slices.Contains(out, gv) {
			out = append(out, gv)
		}
	}
	return out
}
