package auth

import (
	"context"
	"slices"
	"strconv"
	"sync"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	rbacvalidation "k8s.io/component-helpers/auth/rbac/validation"
)

// RBAC authorizes by Roles, ClusterRoles and their bindings, held in
// memory and kept current by the server as they are stored (Set, Delete).
// Bindings are indexed by subject (a user's name, each of its groups, its
// ServiceAccount), so a decision looks only at the bindings that name the
// caller, whatever the number of bindings in the cluster.
type RBAC struct {
	mu           sync.RWMutex
	roles        map[string]*rbacv1.Role        // namespace/name
	clusterRoles map[string]*rbacv1.ClusterRole // name
	crbs         map[string]*rbacv1.ClusterRoleBinding
	rbs          map[string]*rbacv1.RoleBinding // namespace/name
	// clusterBySubject and nsBySubject index the bindings by subject key.
	clusterBySubject map[string][]*rbacv1.ClusterRoleBinding
	nsBySubject      map[string]map[string][]*rbacv1.RoleBinding // namespace → key → bindings
}

// NewRBAC returns an authorizer with no roles or bindings yet.
func NewRBAC() *RBAC {
	return &RBAC{roles: map[string]*rbacv1.Role{}, clusterRoles: map[string]*rbacv1.ClusterRole{},
		crbs: map[string]*rbacv1.ClusterRoleBinding{}, rbs: map[string]*rbacv1.RoleBinding{},
		clusterBySubject: map[string][]*rbacv1.ClusterRoleBinding{}, nsBySubject: map[string]map[string][]*rbacv1.RoleBinding{}}
}

// Set records a stored Role, ClusterRole or binding (a create or update).
func (r *RBAC) Set(obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch o := obj.(type) {
	case *rbacv1.Role:
		r.roles[o.Namespace+"/"+o.Name] = o
	case *rbacv1.ClusterRole:
		r.clusterRoles[o.Name] = o
	case *rbacv1.ClusterRoleBinding:
		r.unindexCluster(o.Name)
		r.crbs[o.Name] = o
		for _, s := range o.Subjects {
			if k := subjectKey(s, ""); k != "" {
				r.clusterBySubject[k] = append(r.clusterBySubject[k], o)
			}
		}
	case *rbacv1.RoleBinding:
		r.unindexNamespaced(o.Namespace, o.Name)
		r.rbs[o.Namespace+"/"+o.Name] = o
		byKey := r.nsBySubject[o.Namespace]
		if byKey == nil {
			byKey = map[string][]*rbacv1.RoleBinding{}
			r.nsBySubject[o.Namespace] = byKey
		}
		for _, s := range o.Subjects {
			if k := subjectKey(s, o.Namespace); k != "" {
				byKey[k] = append(byKey[k], o)
			}
		}
	}
}

// Delete forgets a deleted Role, ClusterRole or binding.
func (r *RBAC) Delete(obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch o := obj.(type) {
	case *rbacv1.Role:
		delete(r.roles, o.Namespace+"/"+o.Name)
	case *rbacv1.ClusterRole:
		delete(r.clusterRoles, o.Name)
	case *rbacv1.ClusterRoleBinding:
		r.unindexCluster(o.Name)
		delete(r.crbs, o.Name)
	case *rbacv1.RoleBinding:
		r.unindexNamespaced(o.Namespace, o.Name)
		delete(r.rbs, o.Namespace+"/"+o.Name)
	}
}

func (r *RBAC) unindexCluster(name string) {
	old := r.crbs[name]
	if old == nil {
		return
	}
	for _, s := range old.Subjects {
		k := subjectKey(s, "")
		r.clusterBySubject[k] = slices.DeleteFunc(r.clusterBySubject[k], func(b *rbacv1.ClusterRoleBinding) bool { return b == old })
		if len(r.clusterBySubject[k]) == 0 {
			delete(r.clusterBySubject, k)
		}
	}
}

func (r *RBAC) unindexNamespaced(ns, name string) {
	old := r.rbs[ns+"/"+name]
	if old == nil {
		return
	}
	byKey := r.nsBySubject[ns]
	for _, s := range old.Subjects {
		k := subjectKey(s, ns)
		byKey[k] = slices.DeleteFunc(byKey[k], func(b *rbacv1.RoleBinding) bool { return b == old })
		if len(byKey[k]) == 0 {
			delete(byKey, k)
		}
	}
	if len(byKey) == 0 {
		delete(r.nsBySubject, ns)
	}
}

// roleRules resolves a binding's roleRef (a RoleBinding may name a Role of
// its namespace or a ClusterRole). mu held.
func (r *RBAC) roleRules(ns string, ref rbacv1.RoleRef) []rbacv1.PolicyRule {
	switch ref.Kind {
	case "ClusterRole":
		if cr := r.clusterRoles[ref.Name]; cr != nil {
			return cr.Rules
		}
	case "Role":
		if ro := r.roles[ns+"/"+ref.Name]; ro != nil {
			return ro.Rules
		}
	}
	return nil
}

// Authorize allows what a binding naming the caller grants; otherwise it
// has no opinion (the next authorizer, or a 403).
func (r *RBAC) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	u := a.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "", nil
	}
	keys := subjectKeys(u)
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, k := range keys {
		for _, b := range r.clusterBySubject[k] {
			if rulesAllow(a, r.roleRules("", b.RoleRef)) {
				return authorizer.DecisionAllow, allowedBy("ClusterRoleBinding", b.Name, b.RoleRef, u), nil
			}
		}
	}
	if ns := a.GetNamespace(); ns != "" {
		byKey := r.nsBySubject[ns]
		for _, k := range keys {
			for _, b := range byKey[k] {
				if rulesAllow(a, r.roleRules(ns, b.RoleRef)) {
					return authorizer.DecisionAllow, allowedBy("RoleBinding", b.Namespace+"/"+b.Name, b.RoleRef, u), nil
				}
			}
		}
	}
	return authorizer.DecisionNoOpinion, "", nil
}

func rulesAllow(a authorizer.Attributes, rules []rbacv1.PolicyRule) bool {
	for i := range rules {
		if RuleAllows(a, &rules[i]) {
			return true
		}
	}
	return false
}

// allowedBy is the reason of an allow, in kube-apiserver's words. It is
// built by concatenation (one allocation) rather than fmt: it is made on
// every allowed request and fmt doubled the cost of a decision.
func allowedBy(kind, name string, ref rbacv1.RoleRef, u user.Info) string {
	return "RBAC: allowed by " + kind + " " + strconv.Quote(name) + " of " + ref.Kind + " " + strconv.Quote(ref.Name) + " to User " + strconv.Quote(u.GetName())
}

// RulesFor returns every rule that applies to u in namespace ns (cluster
// bindings always; the namespace's bindings when ns is set), for
// SelfSubjectRulesReview and escalation checks.
func (r *RBAC) RulesFor(u user.Info, ns string) []rbacv1.PolicyRule {
	keys := subjectKeys(u)
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []rbacv1.PolicyRule
	seen := map[any]bool{}
	for _, k := range keys {
		for _, b := range r.clusterBySubject[k] {
			if !seen[b] {
				seen[b] = true
				out = append(out, r.roleRules("", b.RoleRef)...)
			}
		}
		if ns != "" {
			for _, b := range r.nsBySubject[ns][k] {
				if !seen[b] {
					seen[b] = true
					out = append(out, r.roleRules(ns, b.RoleRef)...)
				}
			}
		}
	}
	return out
}

// Covers reports whether u holds every one of rules in ns (a user may only
// grant what it has: RBAC's escalation prevention), and the rules it lacks.
func (r *RBAC) Covers(u user.Info, ns string, rules []rbacv1.PolicyRule) (bool, []rbacv1.PolicyRule) {
	if slices.Contains(u.GetGroups(), user.SystemPrivilegedGroup) {
		return true, nil
	}
	return rbacvalidation.Covers(r.RulesFor(u, ns), rules)
}

// ClusterRole returns the stored ClusterRole of that name, or nil.
func (r *RBAC) ClusterRole(name string) *rbacv1.ClusterRole {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.clusterRoles[name]
}

// Role returns the stored Role, or nil.
func (r *RBAC) Role(ns, name string) *rbacv1.Role {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.roles[ns+"/"+name]
}
