// Package openapi holds the schemas of every kind the API server serves and
// what is built from them: the OpenAPI v2 and v3 documents (kubectl explain,
// kubectl's strategic merge patches and its field-validation check) and the
// structured-merge-diff type converter behind server-side apply and
// managedFields. The schemas come from the same generator and the same
// markers kube-apiserver's come from (openapi-gen over k8s.io/api), so list
// types, map keys and descriptions are Kubernetes' own.
package openapi

// The generated definitions: `make openapi` (go generate) reruns the
// generator; `make openapi-check` fails when they are stale.
//go:generate go tool openapi-gen --output-dir . --output-pkg github.com/skep-dev/skep/controlplane/apiserver/openapi --output-file zz_generated.openapi.go --go-header-file /dev/null --report-filename /dev/null k8s.io/api/core/v1 k8s.io/api/apps/v1 k8s.io/api/batch/v1 k8s.io/api/autoscaling/v1 k8s.io/api/autoscaling/v2 k8s.io/api/policy/v1 k8s.io/api/networking/v1 k8s.io/api/storage/v1 k8s.io/api/scheduling/v1 k8s.io/api/events/v1 k8s.io/api/coordination/v1 k8s.io/api/discovery/v1 k8s.io/api/rbac/v1 k8s.io/api/certificates/v1 k8s.io/api/authentication/v1 k8s.io/api/authorization/v1 k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1 k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/util/intstr k8s.io/apimachinery/pkg/api/resource k8s.io/apimachinery/pkg/version
