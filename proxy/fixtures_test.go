package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/proxy/datapath"
)

// Builders for Services and EndpointSlices, shared by the unit tests.

const testNode = "node-a"

func svcPort(name string, proto corev1.Protocol, port, nodePort int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: port, NodePort: nodePort}
}

func clusterIPService(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			Ports:      ports,
		},
	}
}

// ep is one endpoint of a test slice: "10.244.1.5 node-a ready", with
// conditions ready, serving, terminating listed by word.
type ep struct {
	ip    string
	node  string
	conds string
}

func slice(ns, svc, name string, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	for _, e := range eps {
		c := discoveryv1.EndpointConditions{
			Ready:       ptr.To(strings.Contains(e.conds, "ready")),
			Serving:     ptr.To(strings.Contains(e.conds, "serving") || strings.Contains(e.conds, "ready")),
			Terminating: ptr.To(strings.Contains(e.conds, "terminating")),
		}
		end := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: c}
		if e.node != "" {
			end.NodeName = ptr.To(e.node)
		}
		s.Endpoints = append(s.Endpoints, end)
	}
	return s
}

func epPort(name string, proto corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(proto), Port: ptr.To(port)}
}

func node(ips ...string) Node {
	n := Node{Name: testNode}
	for _, s := range ips {
		n.IPs = append(n.IPs, netip.MustParseAddr(s))
	}
	return n
}

// backends renders a backend list as "ip:port/A ip:port/T" for compact asserts.
func backends(bs []datapath.Backend) string {
	var out []string
	for _, b := range bs {
		st := "A"
		if b.State == datapath.BackendTerminating {
			st = "T"
		}
		out = append(out, fmt.Sprintf("%s/%s", b.AddrPort(), st))
	}
	return strings.Join(out, " ")
}

// byFrontend indexes desired services by their frontend's string form.
func byFrontend(t *testing.T, svcs []datapath.Service) map[string]datapath.Service {
	t.Helper()
	m := map[string]datapath.Service{}
	for _, s := range svcs {
		k := s.Frontend.String()
		if _, dup := m[k]; dup {
			t.Fatalf("frontend %s desired twice", k)
		}
		m[k] = s
	}
	return m
}

func frontendKeys(svcs []datapath.Service) []string {
	var ks []string
	for _, s := range svcs {
		ks = append(ks, s.Frontend.String())
	}
	sort.Strings(ks)
	return ks
}

func wantFrontends(t *testing.T, svcs []datapath.Service, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := frontendKeys(svcs); !slices.Equal(got, want) {
		t.Fatalf("frontends:\n got %v\nwant %v", got, want)
	}
}

func wantBackends(t *testing.T, m map[string]datapath.Service, frontend, want string) {
	t.Helper()
	s, ok := m[frontend]
	if !ok {
		t.Fatalf("frontend %s not desired", frontend)
	}
	if got := backends(s.Backends); got != want {
		t.Fatalf("%s backends:\n got %q\nwant %q", frontend, got, want)
	}
}
