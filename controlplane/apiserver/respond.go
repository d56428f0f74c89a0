package apiserver

import (
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// respond writes one object in the negotiated format: JSON, YAML,
// protobuf, a Table row or its metadata. res, when set, is the resource
// obj belongs to (subresource answers such as a Scale or a Status have none).
func (s *Server) respond(w http.ResponseWriter, r *http.Request, code int, res *registry.Resource, obj runtime.Object) error {
	of, ok := negotiateObject(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	if of.protobuf && writeProtobuf(w, code, obj) {
		return nil
	}
	var out interface{} = obj
	switch {
	case of.table && res != nil && registry.Meta(obj).GetName() != "" && obj.GetObjectKind().GroupVersionKind() == res.GVK:
		t, err := s.toTable(r, res, []runtime.Object{obj}, metav1.ListMeta{}, true)
		if err != nil {
			return err
		}
		out = t
	case of.partial && res != nil && obj.GetObjectKind().GroupVersionKind() == res.GVK:
		out = partialMeta(obj)
	}
	js, err := encodeJSON(out)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	writeRaw(w, code, js, of.yaml)
	return nil
}

func partialMeta(obj runtime.Object) *metav1.PartialObjectMetadata {
	m := registry.Meta(obj)
	om := metav1.ObjectMeta{}
	// Typed objects reach their embedded ObjectMeta through
	// GetObjectMeta, so the whole metadata (managedFields too) is
	// answered, as the real API server and the stored-bytes path do.
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m = a.GetObjectMeta()
	}
	if o, ok := m.(*metav1.ObjectMeta); ok {
		om = *o
	} else {
		om.Name, om.Namespace, om.UID, om.ResourceVersion = m.GetName(), m.GetNamespace(), m.GetUID(), m.GetResourceVersion()
		om.Labels, om.Annotations, om.CreationTimestamp = m.GetLabels(), m.GetAnnotations(), m.GetCreationTimestamp()
		om.OwnerReferences, om.Finalizers, om.DeletionTimestamp = m.GetOwnerReferences(), m.GetFinalizers(), m.GetDeletionTimestamp()
		om.Generation, om.GenerateName = m.GetGeneration(), m.GetGenerateName()
	}
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: om}
}
