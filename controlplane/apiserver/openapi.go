package apiserver

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The OpenAPI v3 documents skep serves are deliberately small: they carry
// no schemas, only one PATCH operation per kind with the
// x-kubernetes-group-version-kind extension and the fieldValidation query
// parameter. That is exactly what kubectl (1.27+) reads to learn that the
// server validates fields itself; it then skips client-side schema
// validation and sends fieldValidation=Strict, which the handler honours.
// `kubectl explain` needs real schemas and is not supported.

func gvPath(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "api/" + gv.Version
	}
	return "apis/" + gv.Group + "/" + gv.Version
}

// openAPIDoc builds the v3 document of one group/version.
func (s *Server) openAPIDoc(gv schema.GroupVersion) []byte {
	paths := map[string]interface{}{}
	param := func(name string) map[string]interface{} {
		return map[string]interface{}{"name": name, "in": "query", "schema": map[string]interface{}{"type": "string", "uniqueItems": true}}
	}
	for _, r := range s.reg.All {
		if r.GVK.GroupVersion() != gv {
			continue
		}
		base := "/" + gvPath(gv) + "/"
		if r.Namespaced {
			base += "namespaces/{namespace}/"
		}
		gvk := map[string]string{"group": r.GVK.Group, "version": r.GVK.Version, "kind": r.GVK.Kind}
		op := func(verb string) map[string]interface{} {
			return map[string]interface{}{
				"operationId":                     verb + r.GVK.Kind,
				"x-kubernetes-action":             verb,
				"x-kubernetes-group-version-kind": gvk,
				"parameters":                      []interface{}{param("dryRun"), param("fieldManager"), param("fieldValidation")},
				"responses":                       map[string]interface{}{"200": map[string]interface{}{"description": "OK"}},
			}
		}
		paths[base+r.Plural+"/{name}"] = map[string]interface{}{"patch": op("patch"), "put": op("put")}
		paths[base+r.Plural] = map[string]interface{}{"post": op("post")}
	}
	doc := map[string]interface{}{
		"openapi": "3.0.0",
		"info":    map[string]interface{}{"title": "Kubernetes", "version": Version.GitVersion},
		"paths":   paths,
		"components": map[string]interface{}{
			"schemas": map[string]interface{}{},
		},
	}
	js, _ := json.Marshal(doc)
	return js
}

// serveOpenAPI answers /openapi/v3 (the index) and /openapi/v3/<gv>.
// /openapi/v2 answers 404, which kubectl treats as "no schema".
func (s *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "/openapi/v3" {
		idx := map[string]interface{}{}
		for _, gv := range s.reg.GroupVersions() {
			sum := sha512.Sum512(s.openAPIDoc(gv))
			idx[gvPath(gv)] = map[string]string{"serverRelativeURL": "/openapi/v3/" + gvPath(gv) + "?hash=" + strings.ToUpper(hex.EncodeToString(sum[:]))}
		}
		writeJSON(w, map[string]interface{}{"paths": idx})
		return
	}
	rest, ok := strings.CutPrefix(path, "/openapi/v3/")
	if ok {
		for _, gv := range s.reg.GroupVersions() {
			if gvPath(gv) == rest {
				w.Header().Set("Cache-Control", "public, immutable")
				writeRaw(w, http.StatusOK, s.openAPIDoc(gv), false)
				return
			}
		}
	}
	writeError(w, apierrors.NewNotFound(schema.GroupResource{}, ""))
}
