// Package rbac is the registry of the rbac.authorization.k8s.io/v1 API
// group: Roles, ClusterRoles and their bindings, validated as Kubernetes
// validates them, with its escalation prevention: a user may create or
// change a role only with rules it holds itself (or the escalate verb), and
// bind a role only when it holds the role's rules (or the bind verb).
package rbac

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	pathvalidation "k8s.io/apimachinery/pkg/api/validation/path"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/request"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Checker is what escalation prevention asks of the server's authorizers.
type Checker interface {
	// Covers reports whether u holds every one of rules in namespace ns,
	// and the rules it lacks.
	Covers(u user.Info, ns string, rules []rbacv1.PolicyRule) (bool, []rbacv1.PolicyRule)
	// Allowed asks the authorizers.
	Allowed(ctx context.Context, a authorizer.Attributes) bool
	// RoleRules resolves a roleRef in namespace ns (Role or ClusterRole).
	RoleRules(ns string, ref rbacv1.RoleRef) ([]rbacv1.PolicyRule, bool)
}

// Resources returns the rows of the rbac group.
func Resources(c Checker) []*registry.Resource {
	nameFn := func(name string, prefix bool) []string { return pathvalidation.IsValidPathSegmentName(name) }
	return []*registry.Resource{
		{
			GVK: rbacv1.SchemeGroupVersion.WithKind("ClusterRole"), Plural: "clusterroles",
			New:      func() runtime.Object { return &rbacv1.ClusterRole{} },
			NameFn:   nameFn,
			Strategy: roleStrategy{c: c, cluster: true},
			NoAge:    true,
			Columns:  []registry.Column{{Name: "Created At", Type: "date", Description: "Time when the role was created."}},
			Row:      func(o runtime.Object) []interface{} { return []interface{}{createdAt(o)} },
		},
		{
			GVK: rbacv1.SchemeGroupVersion.WithKind("ClusterRoleBinding"), Plural: "clusterrolebindings",
			New:      func() runtime.Object { return &rbacv1.ClusterRoleBinding{} },
			NameFn:   nameFn,
			Strategy: bindingStrategy{c: c, cluster: true},
			Columns: []registry.Column{
				{Name: "Role", Type: "string", Description: "The role the binding grants."},
				{Name: "Users", Type: "string", Description: "Users the binding grants it to.", Priority: 1},
				{Name: "Groups", Type: "string", Description: "Groups the binding grants it to.", Priority: 1},
				{Name: "ServiceAccounts", Type: "string", Description: "ServiceAccounts the binding grants it to.", Priority: 1},
			},
			Row: func(o runtime.Object) []interface{} {
				b := o.(*rbacv1.ClusterRoleBinding)
				return bindingRow(b.RoleRef, b.Subjects)
			},
		},
		{
			GVK: rbacv1.SchemeGroupVersion.WithKind("Role"), Plural: "roles", Namespaced: true,
			New:      func() runtime.Object { return &rbacv1.Role{} },
			NameFn:   nameFn,
			Strategy: roleStrategy{c: c},
			NoAge:    true,
			Columns:  []registry.Column{{Name: "Created At", Type: "date", Description: "Time when the role was created."}},
			Row:      func(o runtime.Object) []interface{} { return []interface{}{createdAt(o)} },
		},
		{
			GVK: rbacv1.SchemeGroupVersion.WithKind("RoleBinding"), Plural: "rolebindings", Namespaced: true,
			New:      func() runtime.Object { return &rbacv1.RoleBinding{} },
			NameFn:   nameFn,
			Strategy: bindingStrategy{c: c},
			Columns: []registry.Column{
				{Name: "Role", Type: "string", Description: "The role the binding grants."},
				{Name: "Users", Type: "string", Description: "Users the binding grants it to.", Priority: 1},
				{Name: "Groups", Type: "string", Description: "Groups the binding grants it to.", Priority: 1},
				{Name: "ServiceAccounts", Type: "string", Description: "ServiceAccounts the binding grants it to.", Priority: 1},
			},
			Row: func(o runtime.Object) []interface{} {
				b := o.(*rbacv1.RoleBinding)
				return bindingRow(b.RoleRef, b.Subjects)
			},
		},
	}
}

func createdAt(o runtime.Object) string {
	return registry.Meta(o).GetCreationTimestamp().UTC().Format("2006-01-02T15:04:05Z")
}

func bindingRow(ref rbacv1.RoleRef, subjects []rbacv1.Subject) []interface{} {
	var users, groups, sas []string
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			users = append(users, s.Name)
		case rbacv1.GroupKind:
			groups = append(groups, s.Name)
		case rbacv1.ServiceAccountKind:
			sas = append(sas, s.Namespace+"/"+s.Name)
		}
	}
	return []interface{}{ref.Kind + "/" + ref.Name, strings.Join(users, ", "), strings.Join(groups, ", "), strings.Join(sas, ", ")}
}

// roleStrategy is a Role's or ClusterRole's.
type roleStrategy struct {
	registry.DefaultStrategy
	c       Checker
	cluster bool
}

func rolesOf(o runtime.Object) ([]rbacv1.PolicyRule, *rbacv1.AggregationRule) {
	switch r := o.(type) {
	case *rbacv1.Role:
		return r.Rules, nil
	case *rbacv1.ClusterRole:
		return r.Rules, r.AggregationRule
	}
	return nil, nil
}

func (st roleStrategy) Validate(o runtime.Object) field.ErrorList {
	rules, agg := rolesOf(o)
	var errs field.ErrorList
	for i, r := range rules {
		errs = append(errs, validateRule(r, !st.cluster, field.NewPath("rules").Index(i))...)
	}
	if agg != nil {
		p := field.NewPath("aggregationRule", "clusterRoleSelectors")
		if len(agg.ClusterRoleSelectors) == 0 {
			errs = append(errs, field.Required(p, "at least one clusterRoleSelector required if aggregationRule is non-nil"))
		}
		for i := range agg.ClusterRoleSelectors {
			errs = append(errs, metav1validation.ValidateLabelSelector(&agg.ClusterRoleSelectors[i], metav1validation.LabelSelectorValidationOptions{}, p.Index(i))...)
		}
	}
	return errs
}

func (st roleStrategy) ValidateUpdate(o, _ runtime.Object) field.ErrorList { return st.Validate(o) }

// validateRule is Kubernetes' ValidatePolicyRule.
func validateRule(r rbacv1.PolicyRule, namespaced bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(r.Verbs) == 0 {
		errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
	}
	if len(r.NonResourceURLs) > 0 {
		if namespaced {
			errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
		}
		if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
			errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
		}
		return errs
	}
	if len(r.APIGroups) == 0 {
		errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
	}
	if len(r.Resources) == 0 {
		errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
	}
	return errs
}

// Admit: a role's rules must be held by whoever writes it, unless it may
// escalate. An aggregated ClusterRole's rules are the aggregation
// controller's; on create and update the check is on the rules written.
func (st roleStrategy) Admit(ctx context.Context, obj, old runtime.Object) error {
	u, ok := request.UserFrom(ctx)
	if !ok {
		return nil // the server's own writes (bootstrap policy)
	}
	rules, _ := rolesOf(obj)
	m := registry.Meta(obj)
	if old != nil {
		if oldRules, _ := rolesOf(old); registry.EqualSemantic(oldRules, rules) {
			return nil // only metadata changed
		}
	}
	if covered, _ := st.c.Covers(u, m.GetNamespace(), rules); covered {
		return nil
	}
	gr := rbacv1.Resource("roles")
	if st.cluster {
		gr = rbacv1.Resource("clusterroles")
	}
	if st.c.Allowed(ctx, authorizer.AttributesRecord{User: u, Verb: "escalate", APIGroup: rbacv1.GroupName, Resource: gr.Resource,
		Namespace: m.GetNamespace(), Name: m.GetName(), ResourceRequest: true}) {
		return nil
	}
	_, missing := st.c.Covers(u, m.GetNamespace(), rules)
	return apierrors.NewForbidden(gr, m.GetName(), escalationError(u, missing))
}

// escalationError is Kubernetes' message for it.
func escalationError(u user.Info, missing []rbacv1.PolicyRule) error {
	var lines []string
	for _, r := range missing {
		lines = append(lines, compactRule(r))
	}
	return fmt.Errorf("user %q (groups=%q) is attempting to grant RBAC permissions not currently held:\n%s", u.GetName(), u.GetGroups(), strings.Join(lines, "\n"))
}

func compactRule(r rbacv1.PolicyRule) string {
	var parts []string
	add := func(name string, v []string) {
		if len(v) > 0 {
			parts = append(parts, fmt.Sprintf("%s:%q", name, v))
		}
	}
	add("APIGroups", r.APIGroups)
	add("Resources", r.Resources)
	add("ResourceNames", r.ResourceNames)
	add("NonResourceURLs", r.NonResourceURLs)
	add("Verbs", r.Verbs)
	return "{" + strings.Join(parts, ", ") + "}"
}

// bindingStrategy is a RoleBinding's or ClusterRoleBinding's.
type bindingStrategy struct {
	registry.DefaultStrategy
	c       Checker
	cluster bool
}

func bindingOf(o runtime.Object) (string, rbacv1.RoleRef, []rbacv1.Subject) {
	switch b := o.(type) {
	case *rbacv1.RoleBinding:
		return b.Namespace, b.RoleRef, b.Subjects
	case *rbacv1.ClusterRoleBinding:
		return "", b.RoleRef, b.Subjects
	}
	return "", rbacv1.RoleRef{}, nil
}

func (st bindingStrategy) Validate(o runtime.Object) field.ErrorList {
	_, ref, subjects := bindingOf(o)
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref.APIGroup != rbacv1.GroupName {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.APIGroup, []string{rbacv1.GroupName}))
	}
	kinds := []string{"ClusterRole"}
	if !st.cluster {
		kinds = []string{"Role", "ClusterRole"}
	}
	if ref.Kind != "ClusterRole" && (st.cluster || ref.Kind != "Role") {
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, kinds))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	} else {
		for _, msg := range pathvalidation.IsValidPathSegmentName(ref.Name) {
			errs = append(errs, field.Invalid(rp.Child("name"), ref.Name, msg))
		}
	}
	for i, s := range subjects {
		errs = append(errs, validateSubject(s, !st.cluster, field.NewPath("subjects").Index(i))...)
	}
	return errs
}

func (st bindingStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	errs := st.Validate(o)
	_, ref, _ := bindingOf(o)
	_, oldRef, _ := bindingOf(old)
	if ref != oldRef {
		errs = append(errs, field.Invalid(field.NewPath("roleRef"), ref, "cannot change roleRef"))
	}
	return errs
}

// validateSubject is Kubernetes' ValidateRoleBindingSubject.
func validateSubject(s rbacv1.Subject, namespaced bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	switch s.Kind {
	case rbacv1.ServiceAccountKind:
		if s.Name != "" {
			for _, msg := range pathvalidation.IsValidPathSegmentName(s.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), s.Name, msg))
			}
		}
		if s.APIGroup != "" {
			errs = append(errs, field.NotSupported(p.Child("apiGroup"), s.APIGroup, []string{""}))
		}
		if !namespaced && s.Namespace == "" {
			errs = append(errs, field.Required(p.Child("namespace"), ""))
		}
	case rbacv1.UserKind, rbacv1.GroupKind:
		if s.APIGroup != rbacv1.GroupName {
			errs = append(errs, field.NotSupported(p.Child("apiGroup"), s.APIGroup, []string{rbacv1.GroupName}))
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("kind"), s.Kind, []string{rbacv1.ServiceAccountKind, rbacv1.UserKind, rbacv1.GroupKind}))
	}
	return errs
}

// Default fills in a subject's apiGroup as Kubernetes' defaulting does.
func (bindingStrategy) Default(o runtime.Object) {
	var subjects []rbacv1.Subject
	switch b := o.(type) {
	case *rbacv1.RoleBinding:
		subjects = b.Subjects
	case *rbacv1.ClusterRoleBinding:
		subjects = b.Subjects
	}
	for i := range subjects {
		if subjects[i].APIGroup == "" && (subjects[i].Kind == rbacv1.UserKind || subjects[i].Kind == rbacv1.GroupKind) {
			subjects[i].APIGroup = rbacv1.GroupName
		}
	}
}

// Admit: binding a role needs the role's rules (in the binding's
// namespace), or the bind verb on that role.
func (st bindingStrategy) Admit(ctx context.Context, obj, old runtime.Object) error {
	u, ok := request.UserFrom(ctx)
	if !ok {
		return nil
	}
	ns, ref, subjects := bindingOf(obj)
	if old != nil {
		if _, _, oldSubjects := bindingOf(old); registry.EqualSemantic(oldSubjects, subjects) {
			return nil
		}
	}
	gr := rbacv1.Resource("rolebindings")
	if st.cluster {
		gr = rbacv1.Resource("clusterrolebindings")
	}
	refResource := "roles"
	if ref.Kind == "ClusterRole" {
		refResource = "clusterroles"
	}
	if st.c.Allowed(ctx, authorizer.AttributesRecord{User: u, Verb: "bind", APIGroup: rbacv1.GroupName, Resource: refResource,
		Namespace: ns, Name: ref.Name, ResourceRequest: true}) {
		return nil
	}
	rules, found := st.c.RoleRules(ns, ref)
	if !found {
		return apierrors.NewForbidden(gr, registry.Meta(obj).GetName(), fmt.Errorf("%s %q not found: a binding to it needs the bind verb on it", strings.ToLower(ref.Kind), ref.Name))
	}
	if covered, missing := st.c.Covers(u, ns, rules); !covered {
		return apierrors.NewForbidden(gr, registry.Meta(obj).GetName(), escalationError(u, missing))
	}
	return nil
}
