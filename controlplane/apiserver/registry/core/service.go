package core

import (
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
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

// Validate follows Kubernetes' ValidateService for what skep serves
// (single-stack IPv4): type, ports, target ports, node ports, selector,
// session affinity, external IPs and names; the allocator checks the
// cluster IP against the range when it reserves it.
func (serviceStrategy) Validate(o runtime.Object) field.ErrorList {
	s := o.(*corev1.Service)
	var errs field.ErrorList
	sp := field.NewPath("spec")
	headless := s.Spec.ClusterIP == corev1.ClusterIPNone
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		if len(s.Spec.Ports) == 0 && !headless {
			errs = append(errs, field.Required(sp.Child("ports"), ""))
		}
		if s.Spec.ClusterIP != "" && !headless {
			errs = append(errs, validation.IsValidIP(sp.Child("clusterIP"), s.Spec.ClusterIP)...)
		}
		if headless && s.Spec.Type != corev1.ServiceTypeClusterIP {
			errs = append(errs, field.Invalid(sp.Child("clusterIPs").Index(0), corev1.ClusterIPNone, "may not be set to 'None' for "+string(s.Spec.Type)+" services"))
		}
	case corev1.ServiceTypeExternalName:
		if s.Spec.ExternalName == "" {
			errs = append(errs, field.Required(sp.Child("externalName"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(strings.TrimSuffix(s.Spec.ExternalName, ".")) {
				errs = append(errs, field.Invalid(sp.Child("externalName"), s.Spec.ExternalName, msg))
			}
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("type"), s.Spec.Type, []string{"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"}))
	}
	names := map[string]bool{}
	ports := map[corev1.ServicePort]bool{}
	nodePorts := map[corev1.ServicePort]bool{}
	for i, p := range s.Spec.Ports {
		pp := sp.Child("ports").Index(i)
		switch {
		case p.Name == "" && len(s.Spec.Ports) > 1:
			errs = append(errs, field.Required(pp.Child("name"), ""))
		case p.Name != "":
			for _, msg := range validation.IsDNS1123Label(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if names[p.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names[p.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		switch p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, []string{"SCTP", "TCP", "UDP"}))
		}
		if p.TargetPort.Type == intstr.String {
			for _, msg := range validation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		} else {
			for _, msg := range validation.IsValidPortNum(int(p.TargetPort.IntVal)) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.IntVal, msg))
			}
		}
		// One port and protocol once; one node port and protocol once (so
		// DNS's 53/TCP and 53/UDP may share a node port).
		if key := (corev1.ServicePort{Port: p.Port, Protocol: p.Protocol}); ports[key] {
			errs = append(errs, field.Duplicate(pp, key))
		} else {
			ports[key] = true
		}
		if p.NodePort != 0 {
			if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
				errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is '"+string(s.Spec.Type)+"'"))
			}
			if key := (corev1.ServicePort{NodePort: p.NodePort, Protocol: p.Protocol}); nodePorts[key] {
				errs = append(errs, field.Duplicate(pp.Child("nodePort"), p.NodePort))
			} else {
				nodePorts[key] = true
			}
		}
	}
	if s.Spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, metav1validation.ValidateLabels(s.Spec.Selector, sp.Child("selector"))...)
	}
	switch s.Spec.SessionAffinity {
	case corev1.ServiceAffinityClientIP:
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			if t := *c.ClientIP.TimeoutSeconds; t <= 0 || t > maxClientIPAffinitySeconds {
				errs = append(errs, field.Invalid(sp.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds"), t,
					fmt.Sprintf("must be greater than 0 and less than %d", maxClientIPAffinitySeconds)))
			}
		}
	case corev1.ServiceAffinityNone:
		if s.Spec.SessionAffinityConfig != nil {
			errs = append(errs, field.Forbidden(sp.Child("sessionAffinityConfig"), fmt.Sprintf("must not be set when session affinity is %s", corev1.ServiceAffinityNone)))
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("sessionAffinity"), s.Spec.SessionAffinity, []string{"ClientIP", "None"}))
	}
	for i, ip := range s.Spec.ExternalIPs {
		p := sp.Child("externalIPs").Index(i)
		if ipErrs := validation.IsValidIP(p, ip); len(ipErrs) > 0 {
			errs = append(errs, ipErrs...)
		} else {
			errs = append(errs, validateNonSpecialIP(ip, p)...)
		}
	}
	if s.Spec.ExternalTrafficPolicy != "" {
		if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			errs = append(errs, field.Invalid(sp.Child("externalTrafficPolicy"), s.Spec.ExternalTrafficPolicy, "may only be set for NodePort and LoadBalancer services"))
		} else if p := s.Spec.ExternalTrafficPolicy; p != corev1.ServiceExternalTrafficPolicyCluster && p != corev1.ServiceExternalTrafficPolicyLocal {
			errs = append(errs, field.NotSupported(sp.Child("externalTrafficPolicy"), p, []string{"Cluster", "Local"}))
		}
	}
	if p := s.Spec.InternalTrafficPolicy; p != nil && *p != corev1.ServiceInternalTrafficPolicyCluster && *p != corev1.ServiceInternalTrafficPolicyLocal {
		errs = append(errs, field.NotSupported(sp.Child("internalTrafficPolicy"), *p, []string{"Cluster", "Local"}))
	}
	return errs
}

// validateNonSpecialIP refuses the addresses a service may not claim as
// external (Kubernetes' ValidateNonSpecialIP).
func validateNonSpecialIP(ip string, p *field.Path) field.ErrorList {
	a := net.ParseIP(ip)
	switch {
	case a.IsUnspecified():
		return field.ErrorList{field.Invalid(p, ip, "may not be unspecified (0.0.0.0)")}
	case a.IsLoopback():
		return field.ErrorList{field.Invalid(p, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)")}
	case a.IsLinkLocalMulticast():
		return field.ErrorList{field.Invalid(p, ip, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")}
	case a.IsLinkLocalUnicast():
		return field.ErrorList{field.Invalid(p, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")}
	}
	return nil
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
		return nil, registry.Invalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, errs)
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

// maxClientIPAffinitySeconds bounds sessionAffinityConfig.clientIP's
// timeout (a day), as Kubernetes' core.MaxClientIPServiceAffinitySeconds.
const maxClientIPAffinitySeconds = 86400
