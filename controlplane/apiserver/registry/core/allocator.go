package core

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// KubernetesServiceIP is the first address of the service range, the
// kubernetes service's cluster IP, as in Kubernetes.
func KubernetesServiceIP(cidr netip.Prefix) netip.Addr { return addrAt(cidr.Masked().Addr(), 1) }

// DNSServiceIP is the tenth address of the service range, kube-dns's cluster
// IP by convention (10.96.0.10 in the default range).
func DNSServiceIP(cidr netip.Prefix) netip.Addr { return addrAt(cidr.Masked().Addr(), 10) }

// serviceAllocator hands out service cluster IPs and node ports like the
// real API server: each address or port belongs to one service, and is
// freed when the service goes. It is rebuilt from the stored services at
// start (Restore).
type serviceAllocator struct {
	mu        sync.Mutex
	cidr      netip.Prefix
	ips       map[netip.Addr]bool
	portMin   int32
	portMax   int32
	nodePorts map[int32]bool
	// reserved addresses are never handed out at random: the kubernetes
	// and DNS services ask for them by address.
	reserved map[netip.Addr]bool
}

func newServiceAllocator(cidr netip.Prefix, portMin, portMax int32) *serviceAllocator {
	return &serviceAllocator{cidr: cidr.Masked(), ips: map[netip.Addr]bool{}, portMin: portMin, portMax: portMax, nodePorts: map[int32]bool{},
		reserved: map[netip.Addr]bool{KubernetesServiceIP(cidr): true, DNSServiceIP(cidr): true}}
}

// restore marks what a stored service holds as used.
func (a *serviceAllocator) restore(svc *corev1.Service) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ip := range svcIPs(svc) {
		a.ips[ip] = true
	}
	for _, p := range svcNodePorts(svc) {
		a.nodePorts[p] = true
	}
}

func svcIPs(s *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
		if a, err := netip.ParseAddr(ip); err == nil {
			dup := false
			for _, o := range out {
				dup = dup || o == a
			}
			if !dup {
				out = append(out, a)
			}
		}
	}
	return out
}

func svcNodePorts(s *corev1.Service) []int32 {
	var out []int32
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			out = append(out, p.NodePort)
		}
	}
	return out
}

func addrAt(base netip.Addr, off uint32) netip.Addr {
	b := base.As4()
	n := binary.BigEndian.Uint32(b[:]) + off
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// allocateIP takes the requested address, or a free one.
func (a *serviceAllocator) allocateIP(want string) (netip.Addr, *field.Error) {
	p := field.NewPath("spec", "clusterIPs").Index(0)
	if want != "" {
		ip, err := netip.ParseAddr(want)
		if err != nil || !ip.Is4() {
			return ip, field.Invalid(p, want, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
		}
		// The range's network and broadcast addresses are no service's.
		if !a.cidr.Contains(ip) || ip == a.cidr.Addr() || ip == addrAt(a.cidr.Addr(), (uint32(1)<<(32-a.cidr.Bits()))-1) {
			return ip, field.Invalid(p, want, fmt.Sprintf("failed to allocate IP %s: the provided IP (%s) is not in the valid range. The range of valid IPs is %s", want, want, a.cidr))
		}
		if a.ips[ip] {
			return ip, field.Invalid(p, want, fmt.Sprintf("failed to allocate IP %s: provided IP is already allocated", want))
		}
		a.ips[ip] = true
		return ip, nil
	}
	size := uint32(1) << (32 - a.cidr.Bits())
	base := a.cidr.Addr()
	start := uint32(rand.IntN(int(size - 2)))
	for i := uint32(0); i < size; i++ {
		off := (start+i)%(size-2) + 1 // skip the network and broadcast addresses
		ip := addrAt(base, off)
		if a.ips[ip] || a.reserved[ip] {
			continue
		}
		a.ips[ip] = true
		return ip, nil
	}
	return netip.Addr{}, field.Invalid(p, want, "failed to allocate a serviceIP: range is full")
}

func (a *serviceAllocator) allocatePort(want int32, p *field.Path) (int32, *field.Error) {
	if want != 0 {
		if want < a.portMin || want > a.portMax {
			return 0, field.Invalid(p, want, fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", a.portMin, a.portMax))
		}
		if a.nodePorts[want] {
			return 0, field.Invalid(p, want, "provided port is already allocated")
		}
		a.nodePorts[want] = true
		return want, nil
	}
	n := a.portMax - a.portMin + 1
	start := rand.Int32N(n)
	for i := int32(0); i < n; i++ {
		port := a.portMin + (start+i)%n
		if !a.nodePorts[port] {
			a.nodePorts[port] = true
			return port, nil
		}
	}
	return 0, field.Invalid(p, want, "range is full")
}

// allocate assigns the cluster IP and node ports of a service being created
// (prev nil) or updated, keeping what prev already holds. It returns what
// it took, for a rollback.
func (a *serviceAllocator) allocate(svc, prev *corev1.Service) (field.ErrorList, []netip.Addr, []int32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs field.ErrorList
	var got []netip.Addr
	var gotPorts []int32
	// Cluster IP.
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil
	case prev != nil && prev.Spec.ClusterIP != "" && prev.Spec.Type != corev1.ServiceTypeExternalName:
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP = prev.Spec.ClusterIP
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		svc.Spec.ClusterIPs = []string{corev1.ClusterIPNone}
	default:
		want := svc.Spec.ClusterIP
		if want == "" && len(svc.Spec.ClusterIPs) > 0 {
			want = svc.Spec.ClusterIPs[0]
		}
		ip, ferr := a.allocateIP(want)
		if ferr != nil {
			errs = append(errs, ferr)
		} else {
			got = append(got, ip)
			svc.Spec.ClusterIP = ip.String()
			svc.Spec.ClusterIPs = []string{ip.String()}
		}
	}
	if svc.Spec.Type != corev1.ServiceTypeExternalName {
		if len(svc.Spec.IPFamilies) == 0 {
			svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}
		if svc.Spec.IPFamilyPolicy == nil {
			svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		}
	}
	// Node ports, as Kubernetes assigns them: ports with the same port
	// number share one node port (53/TCP and 53/UDP), a port keeps the node
	// port prev gave it, and once the range is full the rest fail at once
	// rather than each scanning it again.
	needPorts := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	held := map[int32]bool{}
	if prev != nil {
		for _, p := range svcNodePorts(prev) {
			held[p] = true
		}
	}
	byPort := map[int32]int32{} // service port → its node port
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		pp := field.NewPath("spec", "ports").Index(i).Child("nodePort")
		if !needPorts {
			port.NodePort = 0
			continue
		}
		if np, ok := byPort[port.Port]; ok && (port.NodePort == 0 || port.NodePort == np) {
			port.NodePort = np
			continue
		}
		if port.NodePort != 0 && held[port.NodePort] {
			byPort[port.Port] = port.NodePort
			continue
		}
		if port.NodePort == 0 && prev != nil {
			for _, op := range prev.Spec.Ports {
				if op.Port == port.Port && op.Protocol == port.Protocol && op.NodePort != 0 {
					port.NodePort = op.NodePort
				}
			}
			if port.NodePort != 0 {
				byPort[port.Port] = port.NodePort
				continue
			}
		}
		np, ferr := a.allocatePort(port.NodePort, pp)
		if ferr != nil {
			// The first port that cannot have one fails the service, as in
			// Kubernetes: trying the rest would only scan a full range
			// again for each.
			errs = append(errs, ferr)
			break
		}
		gotPorts = append(gotPorts, np)
		port.NodePort = np
		byPort[port.Port] = np
	}
	if len(errs) > 0 {
		a.freeLocked(got, gotPorts)
		return errs, nil, nil
	}
	return nil, got, gotPorts
}

func (a *serviceAllocator) freeLocked(ips []netip.Addr, ports []int32) {
	for _, ip := range ips {
		delete(a.ips, ip)
	}
	for _, p := range ports {
		delete(a.nodePorts, p)
	}
}

// free releases what svc holds and keep (which may be nil) does not.
func (a *serviceAllocator) free(svc, keep *corev1.Service) {
	keepIP, keepPort := map[netip.Addr]bool{}, map[int32]bool{}
	if keep != nil {
		for _, ip := range svcIPs(keep) {
			keepIP[ip] = true
		}
		for _, p := range svcNodePorts(keep) {
			keepPort[p] = true
		}
	}
	var ips []netip.Addr
	var ports []int32
	for _, ip := range svcIPs(svc) {
		if !keepIP[ip] {
			ips = append(ips, ip)
		}
	}
	for _, p := range svcNodePorts(svc) {
		if !keepPort[p] {
			ports = append(ports, p)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.freeLocked(ips, ports)
}

// serviceReservation holds what one write of a service took.
type serviceReservation struct {
	a        *serviceAllocator
	svc, old *corev1.Service // what is written (nil: a delete) and what was stored
	ips      []netip.Addr
	ports    []int32
}

// Commit frees what the old service held and the new one does not.
func (r *serviceReservation) Commit() {
	if r.old != nil {
		r.a.free(r.old, r.svc)
	}
}

// Rollback frees what the write took.
func (r *serviceReservation) Rollback() {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	r.a.freeLocked(r.ips, r.ports)
}
