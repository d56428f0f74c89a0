// Package discovery is the registry of the discovery.k8s.io/v1 API group:
// EndpointSlices, which the service proxy programs its data path from.
package discovery

import (
	"fmt"
	"strconv"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Resources returns the rows of the discovery group.
func Resources() []*registry.Resource {
	return []*registry.Resource{{
		GVK: discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), Plural: "endpointslices",
		Namespaced: true,
		New:        func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		Strategy:   endpointSliceStrategy{},
		Columns: []registry.Column{
			{Name: "AddressType", Type: "string", Description: "The address type of the slice."},
			{Name: "Ports", Type: "string", Description: "The ports of the slice."},
			{Name: "Endpoints", Type: "string", Description: "The endpoints of the slice."},
		},
		Row: endpointSliceRow,
	}}
}

// endpointSliceStrategy: a slice has no spec, yet counts its changes in
// metadata.generation as Kubernetes' does (anything but metadata, or its
// labels), which the EndpointSlice controller's tracker relies on to tell
// a stale cache from its own writes.
type endpointSliceStrategy struct{ registry.DefaultStrategy }

func (endpointSliceStrategy) PrepareForCreate(o runtime.Object) {
	o.(*discoveryv1.EndpointSlice).Generation = 1
}

func (endpointSliceStrategy) PrepareForUpdate(o, old runtime.Object) {
	s, os := o.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	if !registry.EqualSemantic(s.Endpoints, os.Endpoints) || !registry.EqualSemantic(s.Ports, os.Ports) ||
		s.AddressType != os.AddressType || !registry.EqualSemantic(s.Labels, os.Labels) {
		s.Generation = os.Generation + 1
	}
}

func (endpointSliceStrategy) Validate(o runtime.Object) field.ErrorList {
	s := o.(*discoveryv1.EndpointSlice)
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
		return nil
	case "":
		return field.ErrorList{field.Required(field.NewPath("addressType"), "")}
	}
	return field.ErrorList{field.NotSupported(field.NewPath("addressType"), s.AddressType, []string{"IPv4", "IPv6", "FQDN"})}
}

func (st endpointSliceStrategy) ValidateUpdate(o, _ runtime.Object) field.ErrorList {
	return st.Validate(o)
}

func endpointSliceRow(o runtime.Object) []interface{} {
	s := o.(*discoveryv1.EndpointSlice)
	var ports, addrs []string
	for _, p := range s.Ports {
		if p.Port != nil {
			ports = append(ports, strconv.Itoa(int(*p.Port)))
		}
	}
	for _, e := range s.Endpoints {
		addrs = append(addrs, e.Addresses...)
	}
	ps, as := "<unset>", "<unset>"
	if len(ports) > 0 {
		ps = strings.Join(ports, ",")
	}
	if len(addrs) > 3 {
		as = strings.Join(addrs[:3], ",") + fmt.Sprintf(" + %d more...", len(addrs)-3)
	} else if len(addrs) > 0 {
		as = strings.Join(addrs, ",")
	}
	return []interface{}{string(s.AddressType), ps, as}
}
