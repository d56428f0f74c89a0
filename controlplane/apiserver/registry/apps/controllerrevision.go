package apps

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// controllerRevisionResource: the immutable snapshots of a DaemonSet's (or
// StatefulSet's) template that `kubectl rollout history` and `undo` read.
func controllerRevisionResource() *registry.Resource {
	return &registry.Resource{
		GVK: appsv1.SchemeGroupVersion.WithKind("ControllerRevision"), Plural: "controllerrevisions",
		Namespaced: true,
		New:        func() runtime.Object { return &appsv1.ControllerRevision{} },
		Strategy:   controllerRevisionStrategy{},
		Columns: []registry.Column{
			{Name: "Controller", Type: "string", Description: "Controller of the object"},
			{Name: "Revision", Type: "integer", Description: "Revision indicates the revision of the state represented by Data."},
		},
		Row: controllerRevisionRow,
	}
}

type controllerRevisionStrategy struct{ registry.DefaultStrategy }

func (controllerRevisionStrategy) Validate(o runtime.Object) field.ErrorList {
	r := o.(*appsv1.ControllerRevision)
	var errs field.ErrorList
	if r.Data.Raw == nil && r.Data.Object == nil {
		errs = append(errs, field.Required(field.NewPath("data"), "data is mandatory"))
	}
	if r.Revision < 0 {
		errs = append(errs, field.Invalid(field.NewPath("revision"), r.Revision, "must be greater than or equal to 0"))
	}
	return errs
}

// ValidateUpdate: a revision's data never changes; its number may (a
// rollback to it makes it the newest).
func (st controllerRevisionStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	errs := st.Validate(o)
	if !registry.EqualSemantic(o.(*appsv1.ControllerRevision).Data, old.(*appsv1.ControllerRevision).Data) {
		errs = append(errs, field.Invalid(field.NewPath("data"), "", "field is immutable"))
	}
	return errs
}

// controllerRevisionRow prints the controller as kubectl does:
// daemonset.apps/name.
func controllerRevisionRow(o runtime.Object) []interface{} {
	r := o.(*appsv1.ControllerRevision)
	controller := "<none>"
	if ref := metav1.GetControllerOf(r); ref != nil {
		gv, _ := schema.ParseGroupVersion(ref.APIVersion)
		controller = strings.ToLower(gv.WithKind(ref.Kind).GroupKind().String()) + "/" + ref.Name
	}
	return []interface{}{controller, r.Revision}
}
