package registry

import (
	"context"
	"net/http"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Subresource is served at <object>/<name>. It is either a view of the
// whole object written with its own UpdateStrategy (status, finalize), or
// anything else through a Handler (scale, binding, log, exec, token).
type Subresource struct {
	Name string
	// Kind is the kind of the subresource's body when it is not the
	// resource's own (autoscaling/v1 Scale, v1 Binding); discovery reports it.
	Kind schema.GroupVersionKind
	// Verbs are the Kubernetes verbs it serves (get, create, update,
	// patch, delete); a request for another answers 405.
	Verbs []string
	// Update makes the subresource a view of the object: GET answers the
	// object, PUT and PATCH write it with this strategy in place of the
	// resource's UpdateStrategy.
	Update UpdateStrategy
	// Handler serves a subresource that is not such a view.
	Handler Handler
}

// Serves reports whether the subresource serves the verb.
func (s *Subresource) Serves(verb string) bool { return slices.Contains(s.Verbs, verb) }

// Handler serves one request for a subresource. It returns the object to
// answer with and its HTTP code, or a nil object when it wrote the answer
// itself (a stream); an error is answered as a metav1.Status.
type Handler func(ctx context.Context, req *Request) (runtime.Object, int, error)

// Request is what a subresource Handler gets.
type Request struct {
	Verb      string // get, create, update, patch or delete
	Namespace string
	Name      string
	DryRun    bool
	// Objects reads and writes the objects of the resource the
	// subresource belongs to.
	Objects Objects
	// Body reads the request body the way the generic handler does.
	Body Body
	// Others reads objects of other resources (a token request checks the
	// pod it binds to).
	Others Getter
	// HTTP and Writer are for handlers that stream or proxy.
	HTTP   *http.Request
	Writer http.ResponseWriter
}

// Objects reads and writes one resource's objects through the generic
// paths (strategy, admission, reservations, compare-and-swap).
type Objects interface {
	// Get returns the stored object with its resourceVersion.
	Get(ctx context.Context, namespace, name string) (runtime.Object, error)
	// Update rewrites an object: fn gets a copy of the stored object and
	// returns the object to store; a resourceVersion left on it is a
	// precondition (409 when it is not the stored one's), none means any.
	// us replaces the resource's UpdateStrategy when not nil. Conflicts
	// with other writers are retried with a fresh copy.
	Update(ctx context.Context, namespace, name string, us UpdateStrategy, dryRun bool, fn func(cur runtime.Object) (runtime.Object, error)) (runtime.Object, error)
}

// Getter reads any served object.
type Getter interface {
	Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (runtime.Object, error)
}

// Body decodes the request body as the generic handler does (JSON, YAML or
// protobuf; the fieldValidation directive; size limits). Warnings about
// unknown fields go out with the answer.
type Body interface {
	// Decode decodes the body into into, an object of kind gvk.
	Decode(into runtime.Object, gvk schema.GroupVersionKind) error
	// Patch applies the body, a patch of the request's patch type, to
	// cur and decodes the result into into, an object of kind gvk.
	Patch(cur, into runtime.Object, gvk schema.GroupVersionKind) error
}
