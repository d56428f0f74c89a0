package apiserver

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	pathvalidation "k8s.io/apimachinery/pkg/api/validation/path"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// requestInfo is what the URL and method of a resource request name.
type requestInfo struct {
	res       *registry.Resource
	namespace string
	name      string
	sub       *registry.Subresource // nil: the object itself
	watch     bool                  // the legacy /watch/ prefix
	verb      string
}

func (ri *requestInfo) subName() string {
	if ri.sub == nil {
		return ""
	}
	return ri.sub.Name
}

// queryBool reads a boolean query parameter as kube-apiserver's conversion
// does: absent is false; present, it is true unless "0" or "false" in any
// case (so watch=True, watch=t and a bare watch= all start a watch).
func queryBool(q url.Values, name string) (value, present bool) {
	vs, ok := q[name]
	if !ok || len(vs) == 0 {
		return false, false
	}
	return vs[0] != "0" && !strings.EqualFold(vs[0], "false"), true
}

var subresourceVerbs = map[string]string{http.MethodGet: "get", http.MethodHead: "get", http.MethodPost: "create",
	http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}

// parseResourcePath resolves /api/v1/... and /apis/<g>/<v>/... paths.
func (s *Server) parseResourcePath(path string) (*requestInfo, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var gv schema.GroupVersion
	switch {
	case len(segs) >= 3 && segs[0] == "api":
		gv = schema.GroupVersion{Version: segs[1]}
		segs = segs[2:]
	case len(segs) >= 4 && segs[0] == "apis":
		gv = schema.GroupVersion{Group: segs[1], Version: segs[2]}
		segs = segs[3:]
	default:
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	ri := &requestInfo{}
	if segs[0] == "watch" {
		ri.watch = true
		segs = segs[1:]
	}
	// namespaces/<ns>/<resource>…, but namespaces/<name>/<subresource> is
	// the namespace's own subresource.
	if len(segs) >= 3 && segs[0] == "namespaces" {
		if nsRes := s.reg.Lookup(gv.WithResource("namespaces")); nsRes == nil || nsRes.Subresource(segs[2]) == nil {
			ri.namespace = segs[1]
			segs = segs[2:]
		}
	}
	if len(segs) == 0 || len(segs) > 3 {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	res := s.reg.Lookup(gv.WithResource(segs[0]))
	if res == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	ri.res = res
	if len(segs) > 1 {
		ri.name = segs[1]
	}
	if len(segs) > 2 {
		if ri.sub = res.Subresource(segs[2]); ri.sub == nil {
			return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
		}
	}
	if res.Namespaced && ri.name != "" && ri.namespace == "" {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	if !res.Namespaced && ri.namespace != "" {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	if ri.name != "" {
		if msgs := pathvalidation.IsValidPathSegmentName(ri.name); len(msgs) > 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid resource name %q: %s", ri.name, strings.Join(msgs, "; ")))
		}
	}
	return ri, nil
}

// verbFor maps the HTTP method and URL shape to the Kubernetes verb, and
// refuses (405) what the resource does not serve there: a namespaced
// resource's cluster-wide path (/api/v1/configmaps, or an empty namespace,
// /api/v1/namespaces//configmaps) serves list and watch only, so that no
// request there can touch every namespace at once.
func verbFor(r *http.Request, ri *requestInfo) (string, error) {
	verb, err := methodVerb(r, ri)
	if err != nil {
		return "", err
	}
	allowed := ri.res.Serves(verb)
	if ri.sub != nil {
		allowed = ri.sub.Serves(verb)
	}
	if ri.res.Namespaced && ri.namespace == "" && verb != "list" && verb != "watch" {
		allowed = false
	}
	if !allowed {
		return "", apierrors.NewMethodNotSupported(ri.res.GroupResource(), r.Method)
	}
	return verb, nil
}

// methodVerb is the verb an HTTP method means on the URL's shape.
func methodVerb(r *http.Request, ri *requestInfo) (string, error) {
	q := r.URL.Query()
	isWatch, _ := queryBool(q, "watch")
	isWatch = isWatch || ri.watch
	if ri.sub != nil {
		if verb, ok := subresourceVerbs[r.Method]; ok {
			return verb, nil
		}
		return "", apierrors.NewMethodNotSupported(ri.res.GroupResource(), r.Method)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case isWatch:
			return "watch", nil
		case ri.name == "":
			return "list", nil
		}
		return "get", nil
	case http.MethodPost:
		if ri.name == "" {
			return "create", nil
		}
	case http.MethodPut:
		if ri.name != "" {
			return "update", nil
		}
	case http.MethodPatch:
		if ri.name != "" {
			return "patch", nil
		}
	case http.MethodDelete:
		if ri.name == "" {
			return "deletecollection", nil
		}
		return "delete", nil
	}
	return "", apierrors.NewMethodNotSupported(ri.res.GroupResource(), r.Method)
}
