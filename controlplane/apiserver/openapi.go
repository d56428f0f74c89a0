package apiserver

import (
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/munnerz/goautoneg"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/skep-dev/skep/controlplane/apiserver/openapi"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// newSchemas describes every row of the table to the openapi package.
func newSchemas(t *registry.Table) *openapi.Schemas {
	var kinds []openapi.Kind
	for _, r := range t.All() {
		k := openapi.Kind{GVK: r.GVK, Plural: r.Plural, Namespaced: r.Namespaced, Type: reflect.TypeOf(r.New())}
		for _, sub := range r.Subresources {
			if sub.Update != nil {
				k.Subresources = append(k.Subresources, sub.Name)
			}
		}
		kinds = append(kinds, k)
	}
	return openapi.New(scheme.Scheme, kinds, Version.GitVersion)
}

// openAPIv3 is the v3 document of a group version: a built-in one's from
// package openapi, a custom resource one's from its CRDs.
func (s *Server) openAPIv3(gv schema.GroupVersion) ([]byte, error) {
	if slices.Contains(s.schemas.GroupVersions(), gv) {
		return s.schemas.V3(gv)
	}
	return s.crdOpenAPIv3(gv)
}

// serveOpenAPI answers /openapi/v3 (the index, each group version's URL
// carrying the hash of its document, as kube-apiserver's) and
// /openapi/v3/<gv>.
func (s *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	gvs := append(s.schemas.GroupVersions(), s.crdGroupVersions()...)
	if path == "/openapi/v3" {
		idx := map[string]interface{}{}
		for _, gv := range gvs {
			doc, err := s.openAPIv3(gv)
			if err != nil {
				writeError(w, apierrors.NewInternalError(err))
				return
			}
			sum := sha512.Sum512(doc)
			idx[openapi.Path(gv)] = map[string]string{"serverRelativeURL": "/openapi/v3/" + openapi.Path(gv) + "?hash=" + strings.ToUpper(hex.EncodeToString(sum[:]))}
		}
		writeJSON(w, map[string]interface{}{"paths": idx})
		return
	}
	if rest, ok := strings.CutPrefix(path, "/openapi/v3/"); ok {
		for _, gv := range gvs {
			if openapi.Path(gv) == rest {
				doc, err := s.openAPIv3(gv)
				if err != nil {
					writeError(w, apierrors.NewInternalError(err))
					return
				}
				if r.URL.Query().Get("hash") != "" {
					w.Header().Set("Cache-Control", "public, immutable")
				}
				writeRaw(w, http.StatusOK, doc, false)
				return
			}
		}
	}
	writeError(w, errNoRoute())
}

// The v2 document's media types: kubectl asks for protobuf by the first
// name; the answer is labelled with the second, which Go's mime parser
// accepts (the '@' is not a token character), as kube-openapi's handler
// does. curl and other clients get JSON.
const (
	openAPIv2Protobuf       = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
	openAPIv2ProtobufLegacy = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
)

func (s *Server) serveOpenAPIv2(w http.ResponseWriter, r *http.Request) {
	accept := r.Header.Get("Accept")
	best := goautoneg.Negotiate(accept, []string{"application/json", openAPIv2Protobuf, openAPIv2ProtobufLegacy, "application/vnd.kubernetes.protobuf"})
	var doc []byte
	var err error
	if accept == "" || best == "" || best == "application/json" {
		best = "application/json"
		doc, err = s.schemas.V2JSON()
	} else {
		best = openAPIv2ProtobufLegacy
		doc, err = s.schemas.V2()
	}
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	w.Header().Set("Content-Type", best)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(doc)
}
