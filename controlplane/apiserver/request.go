package apiserver

import (
	"fmt"
	"net/http"
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

// verbFor maps the HTTP method and URL shape to the Kubernetes verb.
func verbFor(r *http.Request, ri *requestInfo) (string, error) {
	q := r.URL.Query()
	isWatch := ri.watch || q.Get("watch") == "true" || q.Get("watch") == "1"
	if ri.sub != nil {
		verb := map[string]string{http.MethodGet: "get", http.MethodHead: "get", http.MethodPost: "create",
			http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
		if !ri.sub.Serves(verb) {
			return "", apierrors.NewMethodNotSupported(ri.res.GroupResource(), r.Method)
		}
		return verb, nil
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
