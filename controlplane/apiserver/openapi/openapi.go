package openapi

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	endpointsopenapi "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/spec3"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// Kind is one served resource, as the documents need to know it.
type Kind struct {
	GVK        schema.GroupVersionKind
	Plural     string
	Namespaced bool
	// Type is the Go type of the kind's objects (a pointer to a struct of
	// k8s.io/api), whose generated definition is the kind's schema.
	Type reflect.Type
	// Subresources with an update (status), served with PATCH and PUT.
	Subresources []string
}

// typeName is openapi-gen's name of a Go type: "k8s.io/api/core/v1.Pod".
func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() + "." + t.Name()
}

// Schemas builds, once each, the documents and type converter of a fixed
// set of kinds. It is safe for concurrent use.
type Schemas struct {
	kinds   []Kind
	namer   *endpointsopenapi.DefinitionNamer
	version string

	tcOnce sync.Once
	tc     managedfields.TypeConverter
	tcErr  error

	v2Once sync.Once
	v2JSON []byte
	v2PB   []byte
	v2Err  error

	mu sync.Mutex
	v3 map[schema.GroupVersion][]byte
}

// New returns the schemas of kinds; scheme names each Go type's kinds (the
// x-kubernetes-group-version-kind of its definition); version is the
// server's, for the documents' info.
func New(scheme *runtime.Scheme, kinds []Kind, version string) *Schemas {
	return &Schemas{kinds: kinds, namer: endpointsopenapi.NewDefinitionNamer(scheme), version: version, v3: map[schema.GroupVersion][]byte{}}
}

func (s *Schemas) v3Config() *common.OpenAPIV3Config {
	return &common.OpenAPIV3Config{
		Info:              &spec.Info{InfoProps: spec.InfoProps{Title: "Kubernetes", Version: s.version}},
		GetDefinitions:    GetOpenAPIDefinitions,
		GetDefinitionName: s.namer.GetDefinitionName,
	}
}

// generated is the set of type names with a generated definition.
var generated = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	for n := range GetOpenAPIDefinitions(func(string) spec.Ref { return spec.Ref{} }) {
		out[n] = true
	}
	return out
})

// names are the definition names of kinds (and their lists, which the
// documents describe too).
func names(kinds []Kind) []string {
	var out []string
	for _, k := range kinds {
		n := typeName(k.Type)
		out = append(out, n)
		if generated()[n+"List"] {
			out = append(out, n+"List")
		}
	}
	return out
}

// TypeConverter is the structured-merge-diff view of every kind, for
// server-side apply and managedFields.
func (s *Schemas) TypeConverter() (managedfields.TypeConverter, error) {
	s.tcOnce.Do(func() {
		defs, err := builder3.BuildOpenAPIDefinitionsForResources(s.v3Config(), names(s.kinds)...)
		if err != nil {
			s.tcErr = fmt.Errorf("openapi definitions: %w", err)
			return
		}
		s.tc, s.tcErr = managedfields.NewTypeConverter(defs, false)
	})
	return s.tc, s.tcErr
}

// GroupVersions are the group versions with a v3 document, sorted.
func (s *Schemas) GroupVersions() []schema.GroupVersion {
	seen := map[schema.GroupVersion]bool{}
	var out []schema.GroupVersion
	for _, k := range s.kinds {
		if gv := k.GVK.GroupVersion(); !seen[gv] {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return Path(out[i]) < Path(out[j]) })
	return out
}

// Path is a group version's URL path without the leading slash
// ("api/v1", "apis/apps/v1").
func Path(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "api/" + gv.Version
	}
	return "apis/" + gv.Group + "/" + gv.Version
}

// V3 is the OpenAPI v3 document (JSON) of one group version: the schemas
// of its kinds with everything they refer to, and a path per operation.
func (s *Schemas) V3(gv schema.GroupVersion) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if doc, ok := s.v3[gv]; ok {
		return doc, nil
	}
	var kinds []Kind
	for _, k := range s.kinds {
		if k.GVK.GroupVersion() == gv {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		return nil, nil
	}
	defs, err := builder3.BuildOpenAPIDefinitionsForResources(s.v3Config(), names(kinds)...)
	if err != nil {
		return nil, fmt.Errorf("openapi v3 %s: %w", gv, err)
	}
	doc := &spec3.OpenAPI{
		Version:    "3.0.0",
		Info:       &spec.Info{InfoProps: spec.InfoProps{Title: "Kubernetes", Version: s.version}},
		Paths:      &spec3.Paths{Paths: map[string]*spec3.Path{}},
		Components: &spec3.Components{Schemas: defs},
	}
	for _, k := range kinds {
		s.addV3Paths(doc, k)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi v3 %s: %w", gv, err)
	}
	s.v3[gv] = js
	return js, nil
}

// refName is the definition name of a Go type in the documents.
func (s *Schemas) refName(t reflect.Type) string {
	n, _ := s.namer.GetDefinitionName(typeName(t))
	return n
}

// queryParams are the query parameters of a write, as kube-apiserver
// documents them; kubectl reads fieldValidation's presence to learn that
// the server validates fields itself.
var queryParams = []string{"dryRun", "fieldManager", "fieldValidation"}

// operation is one HTTP operation of a kind, for either document.
type operation struct {
	path, method, id, action string
	params                   []string
	body                     bool
}

// operations are the operations a kind serves, as kube-apiserver names
// them (operationId verb + kind, x-kubernetes-action).
func operations(k Kind) []operation {
	base := "/" + Path(k.GVK.GroupVersion()) + "/"
	if k.Namespaced {
		base += "namespaces/{namespace}/"
	}
	patchParams := append(append([]string{}, queryParams...), "force")
	ops := []operation{
		{base + k.Plural, "get", "list", "list", nil, false},
		{base + k.Plural, "post", "create", "post", queryParams, true},
		{base + k.Plural + "/{name}", "get", "read", "get", nil, false},
		{base + k.Plural + "/{name}", "put", "replace", "put", queryParams, true},
		{base + k.Plural + "/{name}", "patch", "patch", "patch", patchParams, false},
		{base + k.Plural + "/{name}", "delete", "delete", "delete", []string{"dryRun"}, false},
	}
	for _, sub := range k.Subresources {
		title := strings.ToUpper(sub[:1]) + sub[1:]
		p := base + k.Plural + "/{name}/" + sub
		ops = append(ops,
			operation{p, "get", "read" + title, "get", nil, false},
			operation{p, "put", "replace" + title, "put", queryParams, true},
			operation{p, "patch", "patch" + title, "patch", patchParams, false})
	}
	return ops
}

func gvkExtension(gvk schema.GroupVersionKind) map[string]interface{} {
	return map[string]interface{}{"group": gvk.Group, "version": gvk.Version, "kind": gvk.Kind}
}

func (s *Schemas) addV3Paths(doc *spec3.OpenAPI, k Kind) {
	ref := &spec.Schema{SchemaProps: spec.SchemaProps{Ref: spec.MustCreateRef("#/components/schemas/" + s.refName(k.Type))}}
	for _, op := range operations(k) {
		o := &spec3.Operation{OperationProps: spec3.OperationProps{
			OperationId: op.id + k.GVK.Kind,
			Responses: &spec3.Responses{ResponsesProps: spec3.ResponsesProps{StatusCodeResponses: map[int]*spec3.Response{
				200: {ResponseProps: spec3.ResponseProps{Description: "OK", Content: map[string]*spec3.MediaType{
					"application/json": {MediaTypeProps: spec3.MediaTypeProps{Schema: ref}}}}},
			}}},
		}}
		o.VendorExtensible.AddExtension("x-kubernetes-action", op.action)
		o.VendorExtensible.AddExtension("x-kubernetes-group-version-kind", gvkExtension(k.GVK))
		for _, p := range op.params {
			o.Parameters = append(o.Parameters, &spec3.Parameter{ParameterProps: spec3.ParameterProps{
				Name: p, In: "query", Schema: &spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"string"}}}}})
		}
		if op.body {
			o.RequestBody = &spec3.RequestBody{RequestBodyProps: spec3.RequestBodyProps{Required: true,
				Content: map[string]*spec3.MediaType{"*/*": {MediaTypeProps: spec3.MediaTypeProps{Schema: ref}}}}}
		}
		path := doc.Paths.Paths[op.path]
		if path == nil {
			path = &spec3.Path{}
			doc.Paths.Paths[op.path] = path
		}
		switch op.method {
		case "get":
			path.Get = o
		case "post":
			path.Post = o
		case "put":
			path.Put = o
		case "patch":
			path.Patch = o
		case "delete":
			path.Delete = o
		}
	}
}

// V2 is the OpenAPI v2 document of every kind, in the protobuf encoding
// kubectl asks for.
func (s *Schemas) V2() ([]byte, error) {
	s.v2Once.Do(s.buildV2)
	return s.v2PB, s.v2Err
}

// V2JSON is the same document as JSON.
func (s *Schemas) V2JSON() ([]byte, error) {
	s.v2Once.Do(s.buildV2)
	return s.v2JSON, s.v2Err
}

func (s *Schemas) buildV2() {
	s.v2JSON, s.v2PB, s.v2Err = s.v2Document()
}

func (s *Schemas) v2Document() ([]byte, []byte, error) {
	cfg := &common.Config{
		Info:              &spec.Info{InfoProps: spec.InfoProps{Title: "Kubernetes", Version: s.version}},
		GetDefinitions:    GetOpenAPIDefinitions,
		GetDefinitionName: s.namer.GetDefinitionName,
	}
	sw, err := builder.BuildOpenAPIDefinitionsForResources(cfg, names(s.kinds)...)
	if err != nil {
		return nil, nil, fmt.Errorf("openapi v2: %w", err)
	}
	sw.Swagger = "2.0"
	sw.Info = cfg.Info
	sw.Consumes = []string{"application/json", "application/yaml"}
	sw.Produces = []string{"application/json", "application/yaml"}
	sw.Paths = &spec.Paths{Paths: map[string]spec.PathItem{}}
	for _, k := range s.kinds {
		s.addV2Paths(sw, k)
	}
	js, err := json.Marshal(sw)
	if err != nil {
		return nil, nil, fmt.Errorf("openapi v2: %w", err)
	}
	doc, err := openapi_v2.ParseDocument(js)
	if err != nil {
		return nil, nil, fmt.Errorf("openapi v2 to protobuf: %w", err)
	}
	pb, err := proto.Marshal(doc)
	return js, pb, err
}

func (s *Schemas) addV2Paths(sw *spec.Swagger, k Kind) {
	ref := &spec.Schema{SchemaProps: spec.SchemaProps{Ref: spec.MustCreateRef("#/definitions/" + s.refName(k.Type))}}
	for _, op := range operations(k) {
		o := &spec.Operation{OperationProps: spec.OperationProps{
			ID: op.id + k.GVK.Kind,
			Responses: &spec.Responses{ResponsesProps: spec.ResponsesProps{StatusCodeResponses: map[int]spec.Response{
				200: {ResponseProps: spec.ResponseProps{Description: "OK", Schema: ref}},
			}}},
		}}
		o.AddExtension("x-kubernetes-action", op.action)
		o.AddExtension("x-kubernetes-group-version-kind", gvkExtension(k.GVK))
		for _, p := range op.params {
			o.Parameters = append(o.Parameters, spec.Parameter{ParamProps: spec.ParamProps{Name: p, In: "query"},
				SimpleSchema: spec.SimpleSchema{Type: "string"}})
		}
		if op.body {
			o.Parameters = append(o.Parameters, spec.Parameter{ParamProps: spec.ParamProps{Name: "body", In: "body", Required: true, Schema: ref}})
		}
		path := sw.Paths.Paths[op.path]
		switch op.method {
		case "get":
			path.Get = o
		case "post":
			path.Post = o
		case "put":
			path.Put = o
		case "patch":
			path.Patch = o
		case "delete":
			path.Delete = o
		}
		sw.Paths.Paths[op.path] = path
	}
}

// metaOnce builds the definitions a custom resource's schema refers to.
var metaDefs = sync.OnceValues(func() (map[string]*spec.Schema, error) {
	namer := endpointsopenapi.NewDefinitionNamer()
	cfg := &common.OpenAPIV3Config{GetDefinitions: GetOpenAPIDefinitions, GetDefinitionName: namer.GetDefinitionName}
	return builder3.BuildOpenAPIDefinitionsForResources(cfg,
		"k8s.io/apimachinery/pkg/apis/meta/v1.ObjectMeta", "k8s.io/apimachinery/pkg/apis/meta/v1.ListMeta", "k8s.io/apimachinery/pkg/apis/meta/v1.Status")
})

// MetaDefinitions are the schemas of object and list metadata (and what
// they refer to), the part of the built-in schemas a custom resource's
// OpenAPI refers to. Do not modify them.
func MetaDefinitions() (map[string]*spec.Schema, error) { return metaDefs() }
