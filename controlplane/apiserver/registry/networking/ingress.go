// Package networking is the registry of the networking.k8s.io/v1 API group.
package networking

import (
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Resources returns the rows of the networking group.
func Resources() []*registry.Resource {
	st := ingressStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return []*registry.Resource{{
		GVK: networkingv1.SchemeGroupVersion.WithKind("Ingress"), Plural: "ingresses", ShortNames: []string{"ing"},
		Namespaced: true,
		New:        func() runtime.Object { return &networkingv1.Ingress{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
		},
		Columns: []registry.Column{
			{Name: "Class", Type: "string", Description: "The name of the IngressClass resource."},
			{Name: "Hosts", Type: "string", Description: "Hosts that incoming requests are matched against."},
			{Name: "Address", Type: "string", Description: "Address is a list containing ingress points for the load-balancer."},
			{Name: "Ports", Type: "string", Description: "Ports of TLS configurations that open."},
		},
		Row: ingressRow,
	}}
}

type ingressStrategy struct{ registry.SpecStatus }

func (ingressStrategy) Default(o runtime.Object) {
	ing := o.(*networkingv1.Ingress)
	for i := range ing.Spec.Rules {
		if h := ing.Spec.Rules[i].HTTP; h != nil {
			for j := range h.Paths {
				if h.Paths[j].PathType == nil {
					pt := networkingv1.PathTypeImplementationSpecific
					h.Paths[j].PathType = &pt
				}
			}
		}
	}
}

func ingressRow(o runtime.Object) []interface{} {
	ing := o.(*networkingv1.Ingress)
	class := "<none>"
	if ing.Spec.IngressClassName != nil {
		class = *ing.Spec.IngressClassName
	}
	var hosts []string
	for _, r := range ing.Spec.Rules {
		if r.Host != "" {
			hosts = append(hosts, r.Host)
		}
	}
	hostStr := "*"
	if len(hosts) > 0 {
		hostStr = strings.Join(hosts, ",")
	}
	var addrs []string
	for _, i := range ing.Status.LoadBalancer.Ingress {
		if i.IP != "" {
			addrs = append(addrs, i.IP)
		} else if i.Hostname != "" {
			addrs = append(addrs, i.Hostname)
		}
	}
	ports := "80"
	if len(ing.Spec.TLS) > 0 {
		ports = "80, 443"
	}
	return []interface{}{class, hostStr, strings.Join(addrs, ","), ports}
}
