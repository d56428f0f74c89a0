package core

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func endpointsResource() *registry.Resource {
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Endpoints"), Plural: "endpoints", Singular: "endpoints", ShortNames: []string{"ep"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Endpoints{} },
		Columns:    []registry.Column{{Name: "Endpoints", Type: "string", Description: "Endpoints of the service."}},
		Row:        func(o runtime.Object) []interface{} { return []interface{}{endpointsString(o.(*corev1.Endpoints))} },
	}
}

func endpointsString(e *corev1.Endpoints) string {
	var out []string
	for _, ss := range e.Subsets {
		for _, a := range ss.Addresses {
			if len(ss.Ports) == 0 {
				out = append(out, a.IP)
			}
			for _, p := range ss.Ports {
				out = append(out, fmt.Sprintf("%s:%d", a.IP, p.Port))
			}
		}
	}
	if len(out) == 0 {
		return "<none>"
	}
	if len(out) > 3 {
		return strings.Join(out[:3], ",") + fmt.Sprintf(" + %d more...", len(out)-3)
	}
	return strings.Join(out, ",")
}
