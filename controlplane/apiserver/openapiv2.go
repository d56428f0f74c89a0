package apiserver

import (
	"fmt"
	"net/http"
	"sync"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
)

// kubectl before 1.30 or so reads /openapi/v2 (protobuf) rather than v3 to
// learn whether the server supports fieldValidation. As with v3, the
// document holds only what that check reads: a PATCH operation per kind
// carrying x-kubernetes-group-version-kind and the fieldValidation query
// parameter. With no definitions, kubectl falls back to its compiled-in
// types for strategic merge patches.

var (
	openAPIv2Once sync.Once
	openAPIv2PB   []byte
)

func (s *Server) openAPIv2() []byte {
	openAPIv2Once.Do(func() {
		query := func(name string) *openapi_v2.ParametersItem {
			return &openapi_v2.ParametersItem{Oneof: &openapi_v2.ParametersItem_Parameter{Parameter: &openapi_v2.Parameter{
				Oneof: &openapi_v2.Parameter_NonBodyParameter{NonBodyParameter: &openapi_v2.NonBodyParameter{
					Oneof: &openapi_v2.NonBodyParameter_QueryParameterSubSchema{QueryParameterSubSchema: &openapi_v2.QueryParameterSubSchema{
						Name: name, In: "query", Type: "string", UniqueItems: true}}}}}}}
		}
		doc := &openapi_v2.Document{
			Swagger:  "2.0",
			Info:     &openapi_v2.Info{Title: "Kubernetes", Version: Version.GitVersion},
			Paths:    &openapi_v2.Paths{},
			Consumes: []string{"application/json", "application/yaml"},
			Produces: []string{"application/json", "application/yaml"},
		}
		for _, r := range s.reg.All {
			base := "/" + gvPath(r.GVK.GroupVersion()) + "/"
			if r.Namespaced {
				base += "namespaces/{namespace}/"
			}
			gvk := fmt.Sprintf("group: %q\nkind: %s\nversion: %s\n", r.GVK.Group, r.GVK.Kind, r.GVK.Version)
			op := &openapi_v2.Operation{
				OperationId: "patch" + r.GVK.Kind,
				Parameters:  []*openapi_v2.ParametersItem{query("dryRun"), query("fieldManager"), query("fieldValidation")},
				Responses: &openapi_v2.Responses{ResponseCode: []*openapi_v2.NamedResponseValue{{Name: "200",
					Value: &openapi_v2.ResponseValue{Oneof: &openapi_v2.ResponseValue_Response{Response: &openapi_v2.Response{Description: "OK"}}}}}},
				VendorExtension: []*openapi_v2.NamedAny{
					{Name: "x-kubernetes-action", Value: &openapi_v2.Any{Yaml: "patch\n"}},
					{Name: "x-kubernetes-group-version-kind", Value: &openapi_v2.Any{Yaml: gvk}},
				},
			}
			doc.Paths.Path = append(doc.Paths.Path, &openapi_v2.NamedPathItem{Name: base + r.Plural + "/{name}", Value: &openapi_v2.PathItem{Patch: op}})
		}
		openAPIv2PB, _ = proto.Marshal(doc)
	})
	return openAPIv2PB
}

func (s *Server) serveOpenAPIv2(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.openAPIv2())
}
