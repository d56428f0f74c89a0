package core

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func serviceResource(alloc *serviceAllocator) *registry.Resource {
	st := &serviceStrategy{SpecStatus: registry.SpecStatus{Status: true, Generation: true}, alloc: alloc}
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Service"), Plural: "services", ShortNames: []string{"svc"}, Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Service{} },
		NameFn:     apivalidation.NameIsDNS1035Label,
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
		},
		Fields: func(o runtime.Object) fields.Set {
			s := o.(*corev1.Service)
			return fields.Set{"spec.clusterIP": s.Spec.ClusterIP, "spec.type": string(s.Spec.Type)}
		},
		Columns: []registry.Column{
			{Name: "Type", Type: "string", Description: "The type of the service."},
			{Name: "Cluster-IP", Type: "string", Description: "The cluster IP of the service."},
			{Name: "External-IP", Type: "string", Description: "The external IPs of the service."},
			{Name: "Port(s)", Type: "string", Description: "The ports of the service."},
			{Name: "Selector", Type: "string", Description: "The label selector of the service.", Priority: 1},
		},
		Row: serviceRow,
	}
}

// serviceStrategy allocates cluster IPs and node ports as its writes'
// reservations, and rebuilds the allocator from the stored services.
type serviceStrategy struct {
	registry.SpecStatus
	alloc *serviceAllocator
}

func (serviceStrategy) Default(o runtime.Object) {
	s := o.(*corev1.Service)
	if s.Spec.Type == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if s.Spec.SessionAffinity == "" {
		s.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if s.Spec.Type != corev1.ServiceTypeExternalName && s.Spec.InternalTrafficPolicy == nil {
		s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyCluster)
	}
	if (s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer) && s.Spec.ExternalTrafficPolicy == "" {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == (intstr.IntOrString{}) {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
}

func (serviceStrategy) Validate(o runtime.Object) field.ErrorList {
	s := o.(*corev1.Service)
	var errs field.ErrorList
	sp := field.NewPath("spec")
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		if len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, field.Required(sp.Child("ports"), ""))
		}
	case corev1.ServiceTypeExternalName:
		if s.Spec.ExternalName == "" {
			errs = append(errs, field.Required(sp.Child("externalName"), ""))
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("type"), s.Spec.Type, []string{"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"}))
	}
	seen := map[string]bool{}
	for i, p := range s.Spec.Ports {
		pp := sp.Child("ports").Index(i)
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		}
		if p.Name != "" && seen[p.Name] {
			errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
		}
		seen[p.Name] = true
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, "must be between 1 and 65535, inclusive"))
		}
		switch p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, []string{"SCTP", "TCP", "UDP"}))
		}
		if p.NodePort != 0 && s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
		}
	}
	return errs
}

func (st serviceStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	errs := st.Validate(o)
	s, os := o.(*corev1.Service), old.(*corev1.Service)
	// An empty clusterIP keeps the allocated one (filled in by Reserve).
	if os.Spec.ClusterIP != "" && s.Spec.ClusterIP != "" && s.Spec.ClusterIP != os.Spec.ClusterIP && s.Spec.Type != corev1.ServiceTypeExternalName && os.Spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(0), s.Spec.ClusterIP, "may not change once set"))
	}
	return errs
}

// Reserve takes the service's cluster IP and node ports (keeping those the
// stored service holds), or on a delete gives them back once it lands.
func (st serviceStrategy) Reserve(obj, old runtime.Object) (registry.Reservation, error) {
	var svc, prev *corev1.Service
	if old != nil {
		prev = old.(*corev1.Service)
	}
	if obj == nil {
		return &serviceReservation{a: st.alloc, old: prev}, nil
	}
	svc = obj.(*corev1.Service)
	errs, ips, ports := st.alloc.allocate(svc, prev)
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, errs)
	}
	return &serviceReservation{a: st.alloc, svc: svc, old: prev, ips: ips, ports: ports}, nil
}

// Restore marks a stored service's addresses and ports as taken.
func (st serviceStrategy) Restore(obj runtime.Object) { st.alloc.restore(obj.(*corev1.Service)) }

func serviceRow(o runtime.Object) []interface{} {
	s := o.(*corev1.Service)
	cip := s.Spec.ClusterIP
	if cip == "" {
		cip = "<none>"
	}
	var ext []string
	for _, i := range s.Status.LoadBalancer.Ingress {
		if i.IP != "" {
			ext = append(ext, i.IP)
		} else if i.Hostname != "" {
			ext = append(ext, i.Hostname)
		}
	}
	ext = append(ext, s.Spec.ExternalIPs...)
	extStr := "<none>"
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		extStr = s.Spec.ExternalName
	case len(ext) > 0:
		extStr = strings.Join(ext, ",")
	case s.Spec.Type == corev1.ServiceTypeLoadBalancer:
		extStr = "<pending>"
	}
	var ports []string
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			ports = append(ports, fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol))
		} else {
			ports = append(ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	portStr := "<none>"
	if len(ports) > 0 {
		portStr = strings.Join(ports, ",")
	}
	sel := "<none>"
	if len(s.Spec.Selector) > 0 {
		sel = labels.Set(s.Spec.Selector).String()
	}
	return []interface{}{string(s.Spec.Type), cip, extStr, portStr, sel}
}
