package apiserver

import (
	"net/http"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skep-dev/skep/controlplane/apiserver/internal/auth"
)

// The review APIs are create-only and store nothing: they ask the server
// about the caller (kubectl auth can-i, kubectl auth whoami).
type reviewAPI struct {
	gv        schema.GroupVersion
	resources []metav1.APIResource
}

var reviewAPIs = []reviewAPI{
	{authorizationv1.SchemeGroupVersion, []metav1.APIResource{
		{Name: "selfsubjectaccessreviews", SingularName: "selfsubjectaccessreview", Kind: "SelfSubjectAccessReview", Verbs: metav1.Verbs{"create"}},
		{Name: "selfsubjectrulesreviews", SingularName: "selfsubjectrulesreview", Kind: "SelfSubjectRulesReview", Verbs: metav1.Verbs{"create"}},
	}},
	{authenticationv1.SchemeGroupVersion, []metav1.APIResource{
		{Name: "selfsubjectreviews", SingularName: "selfsubjectreview", Kind: "SelfSubjectReview", Verbs: metav1.Verbs{"create"}},
	}},
}

func reviewAPIFor(group, version string) *reviewAPI {
	for i := range reviewAPIs {
		if reviewAPIs[i].gv.Group == group && reviewAPIs[i].gv.Version == version {
			return &reviewAPIs[i]
		}
	}
	return nil
}

func (a *reviewAPI) resourceList() *metav1.APIResourceList {
	return &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: a.gv.String(), APIResources: a.resources}
}

// serveReview answers POST /apis/<review group>/v1/<review resource>; it
// returns false for any other path.
func (s *Server) serveReview(w http.ResponseWriter, r *http.Request, user *auth.User) bool {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) != 4 || segs[0] != "apis" || r.Method != http.MethodPost {
		return false
	}
	api := reviewAPIFor(segs[1], segs[2])
	if api == nil {
		return false
	}
	var newObj func() runtime.Object
	var answer func(runtime.Object)
	switch segs[3] {
	case "selfsubjectaccessreviews":
		newObj = func() runtime.Object { return &authorizationv1.SelfSubjectAccessReview{} }
		answer = func(o runtime.Object) {
			rv := o.(*authorizationv1.SelfSubjectAccessReview)
			attrs := auth.Attributes{User: user}
			if ra := rv.Spec.ResourceAttributes; ra != nil {
				attrs.ResourceRequest = true
				attrs.Verb, attrs.APIGroup, attrs.Resource, attrs.Subresource = ra.Verb, ra.Group, ra.Resource, ra.Subresource
				attrs.Namespace, attrs.Name = ra.Namespace, ra.Name
			} else if nra := rv.Spec.NonResourceAttributes; nra != nil {
				attrs.Verb, attrs.Path = nra.Verb, nra.Path
			}
			ok, reason := s.authz.Authorize(attrs)
			rv.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: ok, Denied: !ok, Reason: reason}
		}
	case "selfsubjectrulesreviews":
		newObj = func() runtime.Object { return &authorizationv1.SelfSubjectRulesReview{} }
		answer = func(o runtime.Object) {
			rv := o.(*authorizationv1.SelfSubjectRulesReview)
			rv.Status = authorizationv1.SubjectRulesReviewStatus{ResourceRules: []authorizationv1.ResourceRule{}, NonResourceRules: []authorizationv1.NonResourceRule{}}
			// The authorizers allow all or nothing per user: probe with wildcards.
			if ok, _ := s.authz.Authorize(auth.Attributes{User: user, Verb: "*", APIGroup: "*", Resource: "*", Namespace: rv.Spec.Namespace, ResourceRequest: true}); ok {
				rv.Status.ResourceRules = append(rv.Status.ResourceRules, authorizationv1.ResourceRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}})
			}
			if ok, _ := s.authz.Authorize(auth.Attributes{User: user, Verb: "*", Path: "*"}); ok {
				rv.Status.NonResourceRules = append(rv.Status.NonResourceRules, authorizationv1.NonResourceRule{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}})
			}
		}
	case "selfsubjectreviews":
		newObj = func() runtime.Object { return &authenticationv1.SelfSubjectReview{} }
		answer = func(o runtime.Object) {
			o.(*authenticationv1.SelfSubjectReview).Status.UserInfo = authenticationv1.UserInfo{Username: user.Name, Groups: user.Groups}
		}
	default:
		return false
	}
	var kind string
	for _, res := range api.resources {
		if res.Name == segs[3] {
			kind = res.Kind
		}
	}
	obj := newObj()
	warnings, err := decodeBody(r, obj, api.gv.WithKind(kind))
	if err != nil {
		writeError(w, err)
		return true
	}
	answer(obj)
	obj.GetObjectKind().SetGroupVersionKind(api.gv.WithKind(kind))
	addWarnings(w, warnings)
	if err := s.respond(w, r, http.StatusCreated, nil, obj); err != nil {
		writeError(w, err)
	}
	return true
}
