package apiserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/store"
)

// Well-known service addresses in the default 10.96.0.0/12 range.
const (
	kubernetesServiceIP = "10.96.0.1"
	dnsServiceIP        = "10.96.0.10"
)

// serviceAllocator hands out service cluster IPs and node ports at create
// time like the real API server: each address or port belongs to one
// service, and is freed when the service goes. Its state is rebuilt from
// the stored services at start.
type serviceAllocator struct {
	mu        sync.Mutex
	cidr      netip.Prefix
	ips       map[netip.Addr]bool
	portMin   int32
	portMax   int32
	nodePorts map[int32]bool
}

func newServiceAllocator(cidr netip.Prefix, portMin, portMax int32) *serviceAllocator {
	return &serviceAllocator{cidr: cidr.Masked(), ips: map[netip.Addr]bool{}, portMin: portMin, portMax: portMax, nodePorts: map[int32]bool{}}
}

// rebuild marks every address and port of the stored services as used.
func (a *serviceAllocator) rebuild(ctx context.Context, st store.Interface, s *Server, res *resource) error {
	start := ""
	for {
		lr, err := st.List(ctx, res.keyPrefix(), store.ListOptions{StartAfter: start, Limit: 1000})
		if err != nil {
			return fmt.Errorf("list services: %w", err)
		}
		for _, kv := range lr.Items {
			obj, err := s.decodeKV(res, kv)
			if err != nil {
				return err
			}
			svc := obj.(*corev1.Service)
			a.mu.Lock()
			for _, ip := range svcIPs(svc) {
				a.ips[ip] = true
			}
			for _, p := range svcNodePorts(svc) {
				a.nodePorts[p] = true
			}
			a.mu.Unlock()
		}
		if !lr.More || len(lr.Items) == 0 {
			return nil
		}
		start = lr.Items[len(lr.Items)-1].Key
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
		if !a.cidr.Contains(ip) {
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
	reservedDNS := netip.MustParseAddr(dnsServiceIP)
	reservedAPI := netip.MustParseAddr(kubernetesServiceIP)
	start := uint32(rand.IntN(int(size - 2)))
	for i := uint32(0); i < size; i++ {
		off := (start+i)%(size-2) + 1 // skip the network and broadcast addresses
		ip := addrAt(base, off)
		if a.ips[ip] || ip == reservedDNS || ip == reservedAPI {
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

// allocate assigns cluster IP and node ports to a service being created
// (old nil) or updated, keeping what old already holds.
func (s *Server) allocate(res *resource, obj, old runtime.Object) error {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	var prev *corev1.Service
	if old != nil {
		prev = old.(*corev1.Service)
	}
	a := s.alloc
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs field.ErrorList
	var got []netip.Addr
	var gotPorts []int32
	undo := func() {
		for _, ip := range got {
			delete(a.ips, ip)
		}
		for _, p := range gotPorts {
			delete(a.nodePorts, p)
		}
	}
	// Cluster IP.
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil
	} else if prev != nil && prev.Spec.ClusterIP != "" && prev.Spec.Type != corev1.ServiceTypeExternalName {
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP = prev.Spec.ClusterIP
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	} else if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		svc.Spec.ClusterIPs = []string{corev1.ClusterIPNone}
	} else {
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
			svc.Spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
		}
	}
	// Node ports.
	needPorts := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	held := map[int32]bool{}
	if prev != nil {
		for _, p := range svcNodePorts(prev) {
			held[p] = true
		}
	}
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		pp := field.NewPath("spec", "ports").Index(i).Child("nodePort")
		if !needPorts {
			port.NodePort = 0
			continue
		}
		if port.NodePort != 0 && held[port.NodePort] {
			continue
		}
		if port.NodePort == 0 && prev != nil {
			for _, op := range prev.Spec.Ports {
				if op.Port == port.Port && op.Protocol == port.Protocol && op.NodePort != 0 {
					port.NodePort = op.NodePort
				}
			}
			if port.NodePort != 0 {
				continue
			}
		}
		np, ferr := a.allocatePort(port.NodePort, pp)
		if ferr != nil {
			errs = append(errs, ferr)
			continue
		}
		gotPorts = append(gotPorts, np)
		port.NodePort = np
	}
	if len(errs) > 0 {
		undo()
		return apierrors.NewInvalid(res.gvk.GroupKind(), svc.Name, errs)
	}
	return nil
}

// free releases what a holds and b does not.
func (s *Server) free(a, b runtime.Object) {
	sa, ok := a.(*corev1.Service)
	if !ok || sa == nil {
		return
	}
	keepIP, keepPort := map[netip.Addr]bool{}, map[int32]bool{}
	if sb, ok := b.(*corev1.Service); ok && sb != nil {
		for _, ip := range svcIPs(sb) {
			keepIP[ip] = true
		}
		for _, p := range svcNodePorts(sb) {
			keepPort[p] = true
		}
	}
	s.alloc.mu.Lock()
	defer s.alloc.mu.Unlock()
	for _, ip := range svcIPs(sa) {
		if !keepIP[ip] {
			delete(s.alloc.ips, ip)
		}
	}
	for _, p := range svcNodePorts(sa) {
		if !keepPort[p] {
			delete(s.alloc.nodePorts, p)
		}
	}
}

// release undoes the allocations of a failed write of obj (old: what was
// stored before); with obj nil it frees everything old held (a delete).
func (s *Server) release(res *resource, obj, old runtime.Object) {
	if obj == nil {
		s.free(old, nil)
		return
	}
	s.free(obj, old)
}

// releaseOld frees what an updated service no longer holds.
func (s *Server) releaseOld(res *resource, obj, old runtime.Object) { s.free(old, obj) }
