package apiserver

import (
	"net/http"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// The review APIs are create-only and store nothing: they ask the server
// about the caller or another user (kubectl auth can-i, whoami), answered
// by the same authorizers every request goes through.
type reviewAPI struct {
	gv        schema.GroupVersion
	resources []metav1.APIResource
}

var reviewAPIs = []reviewAPI{
	{authorizationv1.SchemeGroupVersion, []metav1.APIResource{
		{Name: "localsubjectaccessreviews", SingularName: "localsubjectaccessreview", Namespaced: true, Kind: "LocalSubjectAccessReview", Verbs: metav1.Verbs{"create"}},
		{Name: "selfsubjectaccessreviews", SingularName: "selfsubjectaccessreview", Kind: "SelfSubjectAccessReview", Verbs: metav1.Verbs{"create"}},
		{Name: "selfsubjectrulesreviews", SingularName: "selfsubjectrulesreview", Kind: "SelfSubjectRulesReview", Verbs: metav1.Verbs{"create"}},
		{Name: "subjectaccessreviews", SingularName: "subjectaccessreview", Kind: "SubjectAccessReview", Verbs: metav1.Verbs{"create"}},
	}},
	{authenticationv1.SchemeGroupVersion, []metav1.APIResource{
		{Name: "selfsubjectreviews", SingularName: "selfsubjectreview", Kind: "SelfSubjectReview", Verbs: metav1.Verbs{"create"}},
	}},
}

func (a *reviewAPI) resourceList() *metav1.APIResourceList {
	return &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: a.gv.String(), APIResources: a.resources}
}

// reviewTarget is one review request: what it is and where.
type reviewTarget struct {
	gv         schema.GroupVersion
	resource   string
	kind       string
	namespaced bool
	namespace  string
}

// reviewFor recognizes POST /apis/<review group>/v1/[namespaces/<ns>/]<review resource>.
func (s *Server) reviewFor(r *http.Request) *reviewTarget {
	if r.Method != http.MethodPost {
		return nil
	}
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) < 4 || segs[0] != "apis" {
		return nil
	}
	ns := ""
	if len(segs) == 6 && segs[3] == "namespaces" {
		ns = segs[4]
		segs = append(segs[:3], segs[5])
	}
	if len(segs) != 4 {
		return nil
	}
	for _, api := range reviewAPIs {
		if api.gv.Group != segs[1] || api.gv.Version != segs[2] {
			continue
		}
		for _, res := range api.resources {
			if res.Name == segs[3] && res.Namespaced == (ns != "") {
				return &reviewTarget{gv: api.gv, resource: res.Name, kind: res.Kind, namespaced: res.Namespaced, namespace: ns}
			}
		}
	}
	return nil
}

// accessAttributes turns a review's spec into authorizer attributes.
func accessAttributes(u user.Info, ra *authorizationv1.ResourceAttributes, nra *authorizationv1.NonResourceAttributes) authorizer.AttributesRecord {
	attrs := authorizer.AttributesRecord{User: u}
	if ra != nil {
		attrs.ResourceRequest = true
		attrs.Verb, attrs.APIGroup, attrs.APIVersion, attrs.Resource, attrs.Subresource = ra.Verb, ra.Group, ra.Version, ra.Resource, ra.Subresource
		attrs.Namespace, attrs.Name = ra.Namespace, ra.Name
	} else if nra != nil {
		attrs.Verb, attrs.Path = nra.Verb, nra.Path
	}
	return attrs
}

// reviewStatus asks the authorizers, as kube-apiserver's reviews do.
func (s *Server) reviewStatus(r *http.Request, attrs authorizer.Attributes) authorizationv1.SubjectAccessReviewStatus {
	d, reason, err := s.authz.Authorize(r.Context(), attrs)
	st := authorizationv1.SubjectAccessReviewStatus{Allowed: d == authorizer.DecisionAllow, Denied: d == authorizer.DecisionDeny, Reason: reason}
	if err != nil {
		st.EvaluationError = err.Error()
	}
	return st
}

// serveReview answers one review request.
func (s *Server) serveReview(w http.ResponseWriter, r *http.Request, u user.Info, t *reviewTarget) {
	var obj runtime.Object
	var answer func()
	switch t.resource {
	case "selfsubjectaccessreviews":
		rv := &authorizationv1.SelfSubjectAccessReview{}
		obj = rv
		answer = func() {
			rv.Status = s.reviewStatus(r, accessAttributes(u, rv.Spec.ResourceAttributes, rv.Spec.NonResourceAttributes))
		}
	case "subjectaccessreviews", "localsubjectaccessreviews":
		var spec *authorizationv1.SubjectAccessReviewSpec
		var status *authorizationv1.SubjectAccessReviewStatus
		if t.namespaced {
			rv := &authorizationv1.LocalSubjectAccessReview{}
			obj, spec, status = rv, &rv.Spec, &rv.Status
		} else {
			rv := &authorizationv1.SubjectAccessReview{}
			obj, spec, status = rv, &rv.Spec, &rv.Status
		}
		answer = func() {
			subject := &user.DefaultInfo{Name: spec.User, UID: spec.UID, Groups: spec.Groups}
			if len(spec.Extra) > 0 {
				subject.Extra = map[string][]string{}
				for k, v := range spec.Extra {
					subject.Extra[k] = v
				}
			}
			if t.namespaced && spec.ResourceAttributes != nil {
				spec.ResourceAttributes.Namespace = t.namespace // a local review is about its namespace
			}
			*status = s.reviewStatus(r, accessAttributes(subject, spec.ResourceAttributes, spec.NonResourceAttributes))
		}
	case "selfsubjectrulesreviews":
		rv := &authorizationv1.SelfSubjectRulesReview{}
		obj = rv
		answer = func() { rv.Status = s.rulesReview(u, rv.Spec.Namespace) }
	case "selfsubjectreviews":
		rv := &authenticationv1.SelfSubjectReview{}
		obj = rv
		answer = func() {
			ui := authenticationv1.UserInfo{Username: u.GetName(), UID: u.GetUID(), Groups: u.GetGroups()}
			if ex := u.GetExtra(); len(ex) > 0 {
				ui.Extra = map[string]authenticationv1.ExtraValue{}
				for k, v := range ex {
					ui.Extra[k] = v
				}
			}
			rv.Status.UserInfo = ui
		}
	default:
		writeError(w, forbidden(authorizer.AttributesRecord{User: u, Verb: "create", Resource: t.resource, ResourceRequest: true}, "unknown review"))
		return
	}
	warnings, err := decodeBody(r, obj, t.gv.WithKind(t.kind))
	if err != nil {
		writeError(w, err)
		return
	}
	answer()
	obj.GetObjectKind().SetGroupVersionKind(t.gv.WithKind(t.kind))
	addWarnings(w, warnings)
	if err := s.respond(w, r, http.StatusCreated, nil, obj); err != nil {
		writeError(w, err)
	}
}

// rulesReview lists what u may do in ns, from RBAC (kubectl auth can-i
// --list), as kube-apiserver does: system:masters shows cluster-admin's
// rules through its bootstrap binding.
func (s *Server) rulesReview(u user.Info, ns string) authorizationv1.SubjectRulesReviewStatus {
	st := authorizationv1.SubjectRulesReviewStatus{ResourceRules: []authorizationv1.ResourceRule{}, NonResourceRules: []authorizationv1.NonResourceRule{}}
	for _, rule := range s.rbac.RulesFor(u, ns) {
		if len(rule.NonResourceURLs) > 0 {
			st.NonResourceRules = append(st.NonResourceRules, authorizationv1.NonResourceRule{Verbs: rule.Verbs, NonResourceURLs: rule.NonResourceURLs})
			continue
		}
		st.ResourceRules = append(st.ResourceRules, authorizationv1.ResourceRule{Verbs: rule.Verbs, APIGroups: rule.APIGroups, Resources: rule.Resources, ResourceNames: rule.ResourceNames})
	}
	return st
}
