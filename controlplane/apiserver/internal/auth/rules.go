package auth

import (
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// RuleAllows reports whether rule allows what a asks, with Kubernetes'
// matching: "*" for verbs, groups, resources and URLs; "*/sub" for a
// subresource of any resource; a "/prefix*" URL; resourceNames only
// narrowing a rule.
func RuleAllows(a authorizer.Attributes, rule *rbacv1.PolicyRule) bool {
	if !verbMatches(rule, a.GetVerb()) {
		return false
	}
	if !a.IsResourceRequest() {
		return nonResourceURLMatches(rule, a.GetPath())
	}
	resource := a.GetResource()
	if sub := a.GetSubresource(); sub != "" {
		resource += "/" + sub
	}
	return apiGroupMatches(rule, a.GetAPIGroup()) &&
		resourceMatches(rule, resource, a.GetSubresource()) &&
		(len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, a.GetName()))
}

func verbMatches(rule *rbacv1.PolicyRule, verb string) bool {
	return slices.Contains(rule.Verbs, rbacv1.VerbAll) || slices.Contains(rule.Verbs, verb)
}

func apiGroupMatches(rule *rbacv1.PolicyRule, group string) bool {
	return slices.Contains(rule.APIGroups, rbacv1.APIGroupAll) || slices.Contains(rule.APIGroups, group)
}

func resourceMatches(rule *rbacv1.PolicyRule, resource, sub string) bool {
	for _, r := range rule.Resources {
		if r == rbacv1.ResourceAll || r == resource {
			return true
		}
		if sub != "" && r == "*/"+sub {
			return true
		}
	}
	return false
}

func nonResourceURLMatches(rule *rbacv1.PolicyRule, path string) bool {
	for _, u := range rule.NonResourceURLs {
		if u == rbacv1.NonResourceAll || u == path {
			return true
		}
		if strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimSuffix(u, "*")) {
			return true
		}
	}
	return false
}

// subjectKeys are the index keys a user is found under: its name, each
// group, and, for a ServiceAccount, its account.
func subjectKeys(u user.Info) []string {
	keys := make([]string, 0, 2+len(u.GetGroups()))
	keys = append(keys, "u:"+u.GetName())
	for _, g := range u.GetGroups() {
		keys = append(keys, "g:"+g)
	}
	if ns, name, err := serviceaccount.SplitUsername(u.GetName()); err == nil {
		keys = append(keys, "sa:"+ns+"/"+name)
	}
	return keys
}

// subjectKey is the index key of a binding's subject; ns is the binding's
// namespace, which a ServiceAccount subject without one defaults to.
func subjectKey(s rbacv1.Subject, ns string) string {
	switch s.Kind {
	case rbacv1.UserKind:
		return "u:" + s.Name
	case rbacv1.GroupKind:
		return "g:" + s.Name
	case rbacv1.ServiceAccountKind:
		if s.Namespace != "" {
			ns = s.Namespace
		}
		if ns == "" {
			return ""
		}
		return "sa:" + ns + "/" + s.Name
	}
	return ""
}
