package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skep-dev/skep/proxy/datapath"
)

// defaultAffinityTimeout is Kubernetes' default for
// sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const defaultAffinityTimeout = 10800 * time.Second

// Node is what the proxy knows about the node it runs on.
type Node struct {
	// Name is compared with endpoints' nodeName to find local endpoints.
	Name string
	// IPs are the addresses NodePorts and health-check node ports listen on.
	IPs []netip.Addr
	// PodCIDRs make an endpoint without a nodeName local when its address
	// falls inside them (selector-less services with hand-written slices).
	PodCIDRs []netip.Prefix
}

// CompleteFrom returns n with the addresses it leaves empty taken from its
// Node object: IPs from the InternalIPs, PodCIDRs from spec.podCIDRs (or
// spec.podCIDR where only that is set). IPv4-mapped IPv6 addresses and
// prefixes become IPv4 ones, as the data path and endpoint addresses are
// compared that way; entries that do not parse are left out.
func (n Node) CompleteFrom(obj *corev1.Node) Node {
	if len(n.IPs) == 0 {
		for _, a := range obj.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				n.IPs = append(n.IPs, ip.Unmap())
			}
		}
	}
	if len(n.PodCIDRs) == 0 {
		cidrs := obj.Spec.PodCIDRs
		if len(cidrs) == 0 && obj.Spec.PodCIDR != "" {
			cidrs = []string{obj.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				n.PodCIDRs = append(n.PodCIDRs, unmapPrefix(p))
			}
		}
	}
	return n
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix (::ffff:10.244.1.0/120) into
// the IPv4 one it covers (10.244.1.0/24).
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// desired is everything one Service asks of this node.
type desired struct {
	services []datapath.Service
	// healthCheckPort is spec.healthCheckNodePort when the service has an
	// externalTrafficPolicy of Local, else 0.
	healthCheckPort uint16
	// localReady counts this node's ready endpoints (distinct addresses), the
	// figure the health-check node port reports.
	localReady int
}

// endpoint is one address of a service port after merging all its slices.
type endpoint struct {
	addr        netip.AddrPort
	ready       bool
	serving     bool
	terminating bool
	local       bool
}

// rank orders duplicates of one address across slices: the most usable
// copy wins, as in kube-proxy's endpoint slice cache.
func (e endpoint) rank() int {
	switch {
	case e.ready:
		return 2
	case e.serving && e.terminating:
		return 1
	}
	return 0
}

// desiredState computes the frontends svc needs on node, with their backends
// taken from the service's EndpointSlices. It is a pure function: the
// control loop's semantics live here and are unit-tested here.
func desiredState(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, node Node) desired {
	var d desired
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return d
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return d // headless: DNS hands out pod IPs, there is nothing to balance
	}

	internalLocal := svc.Spec.InternalTrafficPolicy != nil &&
		*svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	externalLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal

	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}

	clusterIPs := parseIPs(svc.Spec.ClusterIPs)
	if len(clusterIPs) == 0 {
		clusterIPs = parseIPs([]string{svc.Spec.ClusterIP})
	}
	externalIPs := parseIPs(svc.Spec.ExternalIPs)
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means the load balancer terminates traffic itself
			// and sends it to the node; the VIP is not ours to capture.
			if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
				continue
			}
			externalIPs = append(externalIPs, parseIPs([]string{ing.IP})...)
		}
	}
	nodePorts := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer

	localReady := map[netip.Addr]struct{}{}
	seen := map[datapath.Frontend]bool{}
	for _, sp := range svc.Spec.Ports {
		proto, ok := protoOf(sp.Protocol)
		if !ok {
			continue // SCTP: the data path balances TCP and UDP only
		}
		eps := endpointsFor(slices, sp.Name, proto, node)
		for _, e := range eps {
			if e.local && e.ready {
				localReady[e.addr.Addr()] = struct{}{}
			}
		}
		name := svc.Namespace + "/" + svc.Name
		if sp.Name != "" {
			name += ":" + sp.Name
		}
		add := func(ip netip.Addr, port uint16, scope datapath.Scope, local bool) {
			f := datapath.Frontend{IP: ip, Port: port, Proto: proto, Scope: scope}
			if port == 0 || seen[f] {
				return
			}
			seen[f] = true
			d.services = append(d.services, datapath.Service{
				Frontend:        f,
				Name:            name,
				Backends:        selectBackends(eps, ip.Is4(), local),
				AffinityTimeout: affinity,
			})
		}
		port := uint16(sp.Port)
		for _, ip := range clusterIPs {
			add(ip, port, datapath.ScopeInternal, internalLocal)
		}
		if nodePorts {
			for _, ip := range node.IPs {
				add(ip, uint16(sp.NodePort), datapath.ScopeExternal, externalLocal)
			}
		}
		for _, ip := range externalIPs {
			add(ip, port, datapath.ScopeExternal, externalLocal)
		}
		// Like kube-proxy, this node's own pods reaching an
		// externalTrafficPolicy: Local service by a node or external address
		// get the cluster-wide endpoints: the policy exists to keep the
		// client's source address for traffic from outside, which pod
		// traffic does not need. The socket-LB prefers an internal frontend
		// over an external one on the same address; tc keeps the external one.
		if externalLocal {
			if nodePorts {
				for _, ip := range node.IPs {
					add(ip, uint16(sp.NodePort), datapath.ScopeInternal, false)
				}
			}
			for _, ip := range externalIPs {
				add(ip, port, datapath.ScopeInternal, false)
			}
		}
	}
	if externalLocal && nodePorts && svc.Spec.HealthCheckNodePort != 0 {
		d.healthCheckPort = uint16(svc.Spec.HealthCheckNodePort)
	}
	d.localReady = len(localReady)
	return d
}

// endpointsFor merges the endpoints of every slice that serve the service
// port named portName with proto, one entry per address.
func endpointsFor(slices []*discoveryv1.EndpointSlice, portName string, proto datapath.Proto, node Node) []endpoint {
	byAddr := map[netip.AddrPort]endpoint{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices name hosts; the data path needs addresses
		}
		var port int32
		for _, p := range s.Ports {
			pname := ""
			if p.Name != nil {
				pname = *p.Name
			}
			var pproto corev1.Protocol
			if p.Protocol != nil {
				pproto = *p.Protocol
			}
			if pp, ok := protoOf(pproto); ok && pp == proto && pname == portName && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			// All addresses of one endpoint are fungible; like kube-proxy,
			// use the first.
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			e := endpoint{
				addr: netip.AddrPortFrom(ip, uint16(port)),
				// Unset conditions mean "unknown": the API says to read
				// ready and serving as true, terminating as false.
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			e.serving = e.ready
			if ep.Conditions.Serving != nil {
				e.serving = *ep.Conditions.Serving
			}
			if ep.NodeName != nil {
				e.local = *ep.NodeName == node.Name
			} else {
				for _, p := range node.PodCIDRs {
					if p.Contains(ip) {
						e.local = true
					}
				}
			}
			if old, ok := byAddr[e.addr]; !ok || e.rank() > old.rank() {
				byAddr[e.addr] = e
			}
		}
	}
	out := make([]endpoint, 0, len(byAddr))
	for _, e := range byAddr {
		out = append(out, e)
	}
	return out
}

// selectBackends picks the backends of one frontend from the service port's
// endpoints of the frontend's address family. Ready endpoints are Active; when
// none is ready, serving and terminating ones are (KEP-1669, so a rolling
// restart of the last pods does not black-hole traffic). Every other
// terminating endpoint stays as Terminating so its established flows keep
// working. With localOnly, endpoints of other nodes are not candidates at all.
func selectBackends(eps []endpoint, v4, localOnly bool) []datapath.Backend {
	var cand []endpoint
	anyReady := false
	for _, e := range eps {
		if e.addr.Addr().Is4() != v4 || (localOnly && !e.local) {
			continue
		}
		cand = append(cand, e)
		anyReady = anyReady || e.ready
	}
	backends := []datapath.Backend{}
	for _, e := range cand {
		active := e.ready || (!anyReady && e.serving && e.terminating)
		b := datapath.Backend{IP: e.addr.Addr(), Port: e.addr.Port()}
		switch {
		case active:
			b.State = datapath.BackendActive
		case e.terminating:
			b.State = datapath.BackendTerminating
		default:
			continue // not ready and not terminating: not started yet
		}
		backends = append(backends, b)
	}
	sortBackends(backends)
	return backends
}

// sortBackends puts backends in the stable order the data path relies on to
// keep slots from reshuffling: by address.
func sortBackends(bs []datapath.Backend) {
	slices.SortFunc(bs, func(a, b datapath.Backend) int {
		return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port))
	})
}

func protoOf(p corev1.Protocol) (datapath.Proto, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return datapath.TCP, true
	case corev1.ProtocolUDP:
		return datapath.UDP, true
	}
	return 0, false
}

func parseIPs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			continue // "None", "" or garbage: nothing to program
		}
		out = append(out, ip.Unmap())
	}
	return out
}
