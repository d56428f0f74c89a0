package proxy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

var httpPort = []discoveryv1.EndpointPort{epPort("http", corev1.ProtocolTCP, 8080)}

func webService() *corev1.Service {
	return clusterIPService("default", "web", "10.96.0.20", svcPort("http", corev1.ProtocolTCP, 80, 0))
}

func TestOnlyReadyEndpointsAreActive(t *testing.T) {
	s := slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"},
		ep{"10.244.1.2", "node-b", ""}, // starting: not ready, not terminating
		ep{"10.244.1.3", "node-b", "ready"},
		ep{"10.244.1.4", "node-b", "serving terminating"}, // has ready peers: no fallback
	)
	d := desiredState(webService(), []*discoveryv1.EndpointSlice{s}, node())
	wantFrontends(t, d.services, "10.96.0.20:80/TCP/int")
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int",
		"10.244.1.1:8080/A 10.244.1.3:8080/A 10.244.1.4:8080/T")
	if got := d.services[0].Name; got != "default/web:http" {
		t.Fatalf("name %q", got)
	}
}

func TestFallbackToServingTerminatingWhenNoneReady(t *testing.T) {
	s := slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "serving terminating"},
		ep{"10.244.1.2", "node-b", "terminating"}, // not serving: flows only
		ep{"10.244.1.3", "node-b", "serving terminating"},
	)
	d := desiredState(webService(), []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int",
		"10.244.1.1:8080/A 10.244.1.2:8080/T 10.244.1.3:8080/A")
}

func TestTerminatingEndpointsKeptAsTerminating(t *testing.T) {
	s := slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"},
		ep{"10.244.1.2", "node-b", "terminating"},
		ep{"10.244.1.3", "node-b", "serving terminating"},
	)
	d := desiredState(webService(), []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int",
		"10.244.1.1:8080/A 10.244.1.2:8080/T 10.244.1.3:8080/T")
}

func TestUnsetConditionsMeanReady(t *testing.T) {
	s := slice("default", "web", "web-1", httpPort)
	s.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.9"}}}
	d := desiredState(webService(), []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int", "10.244.1.9:8080/A")
}

func TestInternalTrafficPolicyLocal(t *testing.T) {
	svc := webService()
	svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	s := slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"},
		ep{"10.244.0.2", testNode, "ready"},
		ep{"10.244.0.3", testNode, "terminating"},
	)
	d := desiredState(svc, []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int", "10.244.0.2:8080/A 10.244.0.3:8080/T")

	// Only remote endpoints are ready: the local one that is serving and
	// terminating is the fallback, remote ones are never used.
	s = slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"},
		ep{"10.244.0.3", testNode, "serving terminating"},
	)
	d = desiredState(svc, []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int", "10.244.0.3:8080/A")

	// No local endpoint: the frontend stays, with nothing to pick (refused).
	s = slice("default", "web", "web-1", httpPort, ep{"10.244.1.1", "node-b", "ready"})
	d = desiredState(svc, []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int", "")
}

func TestExternalTrafficPolicyLocal(t *testing.T) {
	svc := webService()
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.Ports[0].NodePort = 30080
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = 32000
	svc.Spec.ExternalIPs = []string{"172.31.77.100"}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "172.31.77.200"}}
	s := slice("default", "web", "web-1", httpPort,
		ep{"10.244.1.1", "node-b", "ready"},
		ep{"10.244.0.2", testNode, "ready"},
		ep{"10.244.0.3", testNode, "ready"},
		ep{"10.244.0.4", testNode, "serving terminating"},
	)
	d := desiredState(svc, []*discoveryv1.EndpointSlice{s}, node("172.31.77.11"))
	m := byFrontend(t, d.services)
	wantFrontends(t, d.services, "10.96.0.20:80/TCP/int", "172.31.77.11:30080/TCP/ext",
		"172.31.77.100:80/TCP/ext", "172.31.77.200:80/TCP/ext",
		"172.31.77.11:30080/TCP/int", "172.31.77.100:80/TCP/int", "172.31.77.200:80/TCP/int")
	// ClusterIP traffic, and this node's pods reaching the external
	// addresses, keep the cluster-wide policy.
	for _, f := range []string{"10.96.0.20:80/TCP/int", "172.31.77.11:30080/TCP/int", "172.31.77.100:80/TCP/int", "172.31.77.200:80/TCP/int"} {
		wantBackends(t, m, f, "10.244.0.2:8080/A 10.244.0.3:8080/A 10.244.0.4:8080/T 10.244.1.1:8080/A")
	}
	for _, f := range []string{"172.31.77.11:30080/TCP/ext", "172.31.77.100:80/TCP/ext", "172.31.77.200:80/TCP/ext"} {
		wantBackends(t, m, f, "10.244.0.2:8080/A 10.244.0.3:8080/A 10.244.0.4:8080/T")
	}
	if d.healthCheckPort != 32000 || d.localReady != 2 {
		t.Fatalf("health check port %d local ready %d, want 32000 and 2", d.healthCheckPort, d.localReady)
	}

	// Cluster policy: no health check port, every endpoint.
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	d = desiredState(svc, []*discoveryv1.EndpointSlice{s}, node("172.31.77.11"))
	wantBackends(t, byFrontend(t, d.services), "172.31.77.11:30080/TCP/ext",
		"10.244.0.2:8080/A 10.244.0.3:8080/A 10.244.0.4:8080/T 10.244.1.1:8080/A")
	if d.healthCheckPort != 0 {
		t.Fatalf("health check port %d with cluster policy", d.healthCheckPort)
	}
}

func TestLoadBalancerProxyModeIngressIsNotCaptured(t *testing.T) {
	svc := webService()
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "172.31.77.200", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
		{Hostname: "lb.example"},
	}
	d := desiredState(svc, nil, node("172.31.77.11"))
	// nodePort 0 (allocateLoadBalancerNodePorts: false) gives no NodePort.
	wantFrontends(t, d.services, "10.96.0.20:80/TCP/int")
}

func TestSessionAffinityClientIP(t *testing.T) {
	svc := webService()
	d := desiredState(svc, nil, node())
	if d.services[0].AffinityTimeout != 0 {
		t.Fatalf("affinity without ClientIP: %v", d.services[0].AffinityTimeout)
	}
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	d = desiredState(svc, nil, node())
	if got := d.services[0].AffinityTimeout; got != 3*time.Hour {
		t.Fatalf("default affinity timeout %v, want 3h", got)
	}
	svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	d = desiredState(svc, nil, node())
	if got := d.services[0].AffinityTimeout; got != time.Minute {
		t.Fatalf("affinity timeout %v, want 1m", got)
	}
}

func TestMultiplePortsMatchedByName(t *testing.T) {
	svc := clusterIPService("default", "dns", "10.96.0.10",
		svcPort("dns", corev1.ProtocolUDP, 53, 0),
		svcPort("dns-tcp", corev1.ProtocolTCP, 53, 0),
		svcPort("metrics", corev1.ProtocolTCP, 9153, 0),
		svcPort("sctp", corev1.ProtocolSCTP, 9999, 0))
	ports := []discoveryv1.EndpointPort{
		epPort("metrics", corev1.ProtocolTCP, 9153),
		epPort("dns", corev1.ProtocolUDP, 5353),
		epPort("dns-tcp", corev1.ProtocolTCP, 5354),
		epPort("sctp", corev1.ProtocolSCTP, 9999),
	}
	// Two slices, one endpoint in both (deduplicated; the ready copy wins).
	a := slice("default", "dns", "dns-a", ports, ep{"10.244.1.1", "node-b", "ready"}, ep{"10.244.1.2", "node-b", ""})
	b := slice("default", "dns", "dns-b", ports, ep{"10.244.1.2", "node-b", "ready"}, ep{"10.244.1.3", "node-b", "ready"})
	d := desiredState(svc, []*discoveryv1.EndpointSlice{a, b}, node())
	m := byFrontend(t, d.services)
	wantFrontends(t, d.services, "10.96.0.10:53/UDP/int", "10.96.0.10:53/TCP/int", "10.96.0.10:9153/TCP/int")
	wantBackends(t, m, "10.96.0.10:53/UDP/int", "10.244.1.1:5353/A 10.244.1.2:5353/A 10.244.1.3:5353/A")
	wantBackends(t, m, "10.96.0.10:53/TCP/int", "10.244.1.1:5354/A 10.244.1.2:5354/A 10.244.1.3:5354/A")
	wantBackends(t, m, "10.96.0.10:9153/TCP/int", "10.244.1.1:9153/A 10.244.1.2:9153/A 10.244.1.3:9153/A")
	if n := m["10.96.0.10:53/UDP/int"].Name; n != "default/dns:dns" {
		t.Fatalf("name %q", n)
	}
}

func TestPortWithoutMatchingSlicePortHasNoBackends(t *testing.T) {
	svc := webService()
	s := slice("default", "web", "web-1", []discoveryv1.EndpointPort{epPort("other", corev1.ProtocolTCP, 8080)},
		ep{"10.244.1.1", "node-b", "ready"})
	d := desiredState(svc, []*discoveryv1.EndpointSlice{s}, node())
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int", "")
}

func TestHeadlessAndExternalNameGetNothing(t *testing.T) {
	headless := clusterIPService("default", "db", corev1.ClusterIPNone, svcPort("pg", corev1.ProtocolTCP, 5432, 0))
	s := slice("default", "db", "db-1", []discoveryv1.EndpointPort{epPort("pg", corev1.ProtocolTCP, 5432)}, ep{"10.244.1.1", "", "ready"})
	if d := desiredState(headless, []*discoveryv1.EndpointSlice{s}, node()); len(d.services) != 0 {
		t.Fatalf("headless service got %v", frontendKeys(d.services))
	}
	ext := clusterIPService("default", "ext", "", svcPort("http", corev1.ProtocolTCP, 80, 0))
	ext.Spec.Type = corev1.ServiceTypeExternalName
	ext.Spec.ExternalName = "example.org"
	ext.Spec.ExternalIPs = []string{"172.31.77.50"}
	if d := desiredState(ext, nil, node()); len(d.services) != 0 {
		t.Fatalf("ExternalName service got %v", frontendKeys(d.services))
	}
}

func TestNoEndpointsKeepsFrontendWithNoActiveBackend(t *testing.T) {
	svc := webService()
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = 30080
	d := desiredState(svc, nil, node("172.31.77.11"))
	m := byFrontend(t, d.services)
	wantFrontends(t, d.services, "10.96.0.20:80/TCP/int", "172.31.77.11:30080/TCP/ext")
	wantBackends(t, m, "10.96.0.20:80/TCP/int", "")
	wantBackends(t, m, "172.31.77.11:30080/TCP/ext", "")
}

func TestDualStackFrontendsGetTheirFamily(t *testing.T) {
	svc := webService()
	svc.Spec.ClusterIPs = []string{"10.96.0.20", "fd00:96::20"}
	v4 := slice("default", "web", "web-v4", httpPort, ep{"10.244.1.1", "node-b", "ready"})
	v6 := slice("default", "web", "web-v6", httpPort, ep{"fd00:244::1", "node-b", "ready"})
	v6.AddressType = discoveryv1.AddressTypeIPv6
	fq := slice("default", "web", "web-fqdn", httpPort, ep{"backend.example", "node-b", "ready"})
	fq.AddressType = discoveryv1.AddressTypeFQDN
	d := desiredState(svc, []*discoveryv1.EndpointSlice{v4, v6, fq}, node())
	m := byFrontend(t, d.services)
	wantBackends(t, m, "10.96.0.20:80/TCP/int", "10.244.1.1:8080/A")
	wantBackends(t, m, "[fd00:96::20]:80/TCP/int", "[fd00:244::1]:8080/A")
}

func TestPodCIDRDecidesLocalityWithoutNodeName(t *testing.T) {
	svc := webService()
	svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	s := slice("default", "web", "web-1", httpPort,
		ep{"10.244.0.7", "", "ready"}, ep{"10.244.1.7", "", "ready"})
	n := node()
	n.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}
	d := desiredState(svc, []*discoveryv1.EndpointSlice{s}, n)
	wantBackends(t, byFrontend(t, d.services), "10.96.0.20:80/TCP/int", "10.244.0.7:8080/A")
}

// A Node object fills in only what the configuration left empty; an
// IPv4-mapped InternalIP or pod CIDR reads as IPv4, as endpoints do.
func TestNodeCompleteFrom(t *testing.T) {
	obj := &corev1.Node{
		Spec: corev1.NodeSpec{PodCIDR: "::ffff:10.244.1.0/120"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "n1"},
			{Type: corev1.NodeExternalIP, Address: "192.0.2.1"},
			{Type: corev1.NodeInternalIP, Address: "::ffff:172.31.77.10"},
			{Type: corev1.NodeInternalIP, Address: "not an address"},
		}},
	}
	got := Node{Name: "n1"}.CompleteFrom(obj)
	if fmt.Sprint(got.IPs, got.PodCIDRs) != "[172.31.77.10] [10.244.1.0/24]" {
		t.Fatalf("completed from the Node: %v %v", got.IPs, got.PodCIDRs)
	}
	obj.Spec.PodCIDRs = []string{"10.244.2.0/24", "fd00::/64"}
	if got := (Node{Name: "n1"}).CompleteFrom(obj); fmt.Sprint(got.PodCIDRs) != "[10.244.2.0/24 fd00::/64]" {
		t.Fatalf("spec.podCIDRs: %v", got.PodCIDRs)
	}
	set := Node{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("172.31.77.99")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}}
	if got := set.CompleteFrom(obj); fmt.Sprint(got.IPs, got.PodCIDRs) != "[172.31.77.99] [10.244.9.0/24]" {
		t.Fatalf("configured addresses overridden: %v %v", got.IPs, got.PodCIDRs)
	}
}
