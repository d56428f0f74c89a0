package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/rbac"
	"github.com/skep-dev/skep/controlplane/store"
)

// bootstrap hands the stored objects to the strategies that keep state
// derived from them (the service allocator), then creates what the server
// owns: the default namespaces and the kubernetes service, with its
// Endpoints and EndpointSlice pointing at this server.
func (s *Server) bootstrap(ctx context.Context) error {
	for _, res := range s.reg.All {
		if r, ok := res.Strategy.(registry.Restorer); ok {
			if err := s.restore(ctx, res, r); err != nil {
				return err
			}
		}
	}
	nsRes := s.reg.Lookup(corev1.SchemeGroupVersion.WithResource("namespaces"))
	for _, name := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		ns := &corev1.Namespace{}
		ns.Name = name
		if err := s.ensure(ctx, nsRes, ns, nil); err != nil {
			return fmt.Errorf("namespace %s: %w", name, err)
		}
	}
	// The bootstrap RBAC policy: created when missing, left as it is
	// when an administrator changed it.
	crRes := s.reg.Lookup(rbacv1.SchemeGroupVersion.WithResource("clusterroles"))
	for _, cr := range rbac.BootstrapClusterRoles() {
		if err := s.ensure(ctx, crRes, &cr, nil); err != nil {
			return fmt.Errorf("clusterrole %s: %w", cr.Name, err)
		}
	}
	crbRes := s.reg.Lookup(rbacv1.SchemeGroupVersion.WithResource("clusterrolebindings"))
	for _, crb := range rbac.BootstrapClusterRoleBindings() {
		if err := s.ensure(ctx, crbRes, &crb, nil); err != nil {
			return fmt.Errorf("clusterrolebinding %s: %w", crb.Name, err)
		}
	}
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	portNum, _ := strconv.ParseInt(port, 10, 32)
	svc := &corev1.Service{}
	svc.Name, svc.Namespace = "kubernetes", "default"
	svc.Labels = map[string]string{"component": "apiserver", "provider": "kubernetes"}
	svc.Spec = corev1.ServiceSpec{ClusterIP: core.KubernetesServiceIP(s.serviceCIDR).String(), Type: corev1.ServiceTypeClusterIP,
		Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(int32(portNum))}}}
	svcRes := s.reg.Lookup(corev1.SchemeGroupVersion.WithResource("services"))
	if err := s.ensure(ctx, svcRes, svc, func(cur runtime.Object) runtime.Object {
		c := cur.(*corev1.Service)
		c.Spec.Ports = svc.Spec.Ports
		return c
	}); err != nil {
		return fmt.Errorf("kubernetes service: %w", err)
	}
	host := s.cfg.AdvertiseAddress
	if host == "" {
		host = hostOf(s.clientAddr())
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() == nil {
		return nil
	}
	epRes := s.reg.Lookup(corev1.SchemeGroupVersion.WithResource("endpoints"))
	ep := &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: host}},
		Ports:     []corev1.EndpointPort{{Name: "https", Port: int32(portNum), Protocol: corev1.ProtocolTCP}},
	}}}
	ep.Name, ep.Namespace = "kubernetes", "default"
	// The server writes the slice itself: the mirroring controller skips it.
	ep.Labels = map[string]string{discoveryv1.LabelSkipMirror: "true"}
	if err := s.ensure(ctx, epRes, ep, func(cur runtime.Object) runtime.Object {
		c := cur.(*corev1.Endpoints)
		c.Subsets = ep.Subsets
		return c
	}); err != nil {
		return fmt.Errorf("kubernetes endpoints: %w", err)
	}
	sliceRes := s.reg.Lookup(discoveryv1.SchemeGroupVersion.WithResource("endpointslices"))
	yes, no := true, false
	portName, proto, port32 := "https", corev1.ProtocolTCP, int32(portNum)
	slice := &discoveryv1.EndpointSlice{
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &no}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port32, Protocol: &proto}},
	}
	slice.Name, slice.Namespace = "kubernetes", "default"
	slice.Labels = map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "skep-apiserver"}
	if err := s.ensure(ctx, sliceRes, slice, func(cur runtime.Object) runtime.Object {
		c := cur.(*discoveryv1.EndpointSlice)
		c.Endpoints, c.Ports = slice.Endpoints, slice.Ports
		return c
	}); err != nil {
		return fmt.Errorf("kubernetes endpointslice: %w", err)
	}
	return nil
}

// restore hands every stored object of res to r, a page at a time.
func (s *Server) restore(ctx context.Context, res *registry.Resource, r registry.Restorer) error {
	start := ""
	for {
		lr, err := s.store.List(ctx, res.KeyPrefix(), store.ListOptions{StartAfter: start, Limit: 1000})
		if err != nil {
			return fmt.Errorf("list %s: %w", res.Plural, err)
		}
		for _, kv := range lr.Items {
			obj, err := s.decodeKV(res, kv)
			if err != nil {
				return err
			}
			r.Restore(obj)
		}
		if !lr.More || len(lr.Items) == 0 {
			return nil
		}
		start = lr.Items[len(lr.Items)-1].Key
	}
}

// ensure creates an object the server itself owns through the generic
// create; when it exists and reconcile is set, reconcile brings the stored
// object up to date (a restart on another address or port).
func (s *Server) ensure(ctx context.Context, res *registry.Resource, obj runtime.Object, reconcile func(cur runtime.Object) runtime.Object) error {
	m := registry.Meta(obj)
	if _, err := s.store.Get(ctx, res.Key(m.GetNamespace(), m.GetName())); err == nil {
		if reconcile == nil {
			return nil
		}
		_, err := s.updateObject(ctx, res, m.GetNamespace(), m.GetName(), nil, false, func(cur runtime.Object) (runtime.Object, error) {
			return reconcile(cur), nil
		})
		return err
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	obj.GetObjectKind().SetGroupVersionKind(res.GVK)
	if _, _, err := s.createObject(ctx, res, m.GetNamespace(), obj, false); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}
