package endpointslice

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	endpointslicerec "k8s.io/endpointslice"
	endpointsliceutil "k8s.io/endpointslice/util"
)

const (
	// LabelEndpointsManagedBy and EndpointsControllerName mark the
	// Endpoints this controller writes, as Kubernetes 1.33's endpoint
	// controller marks its own.
	LabelEndpointsManagedBy = "endpoints.kubernetes.io/managed-by"
	EndpointsControllerName = "endpoint-controller"

	// maxEndpointsAddresses is how many addresses an Endpoints object
	// holds at most (upstream's maxCapacity); the rest are left out and
	// the object says so.
	maxEndpointsAddresses = 1000
	overCapacityTruncated = "truncated"
)

// syncEndpoints writes the Service's Endpoints from its pods, as upstream's
// endpoint controller does: ready pods in addresses, not-ready ones in
// notReadyAddresses, terminating ones left out (everything in addresses
// when the Service publishes not-ready addresses).
func (c *Controller) syncEndpoints(ctx context.Context, svc *corev1.Service, pods []*corev1.Pod) error {
	trigger := c.endpointsTimes.ComputeEndpointLastChangeTriggerTime(svc.Namespace, svc, pods)
	subsets := desiredSubsets(svc, pods)
	truncated := truncate(subsets)
	wantLabels := endpointsLabels(svc)

	cur, err := c.endpoints.Endpoints(svc.Namespace).Get(svc.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	create := cur == nil
	if create {
		cur = &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace}}
	} else if semanticIgnoreResourceVersion.DeepEqual(cur.Subsets, subsets) && maps.Equal(cur.Labels, wantLabels) &&
		(cur.Annotations[corev1.EndpointsOverCapacity] == overCapacityTruncated) == truncated {
		return nil
	}
	ep := cur.DeepCopy()
	ep.Subsets = subsets
	ep.Labels = wantLabels
	if ep.Annotations == nil {
		ep.Annotations = map[string]string{}
	}
	if trigger.IsZero() {
		delete(ep.Annotations, corev1.EndpointsLastChangeTriggerTime)
	} else {
		ep.Annotations[corev1.EndpointsLastChangeTriggerTime] = trigger.UTC().Format(time.RFC3339Nano)
	}
	if truncated {
		ep.Annotations[corev1.EndpointsOverCapacity] = overCapacityTruncated
	} else {
		delete(ep.Annotations, corev1.EndpointsOverCapacity)
	}

	if create {
		_, err = c.kube.CoreV1().Endpoints(svc.Namespace).Create(ctx, ep, metav1.CreateOptions{})
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil // the namespace is going away, and its Services with it
		}
	} else {
		_, err = c.kube.CoreV1().Endpoints(svc.Namespace).Update(ctx, ep, metav1.UpdateOptions{})
	}
	if err != nil {
		c.recorder.Eventf(svc, corev1.EventTypeWarning, "FailedToUpdateEndpoint",
			"Failed to write endpoints %s/%s: %v", svc.Namespace, svc.Name, err)
		return fmt.Errorf("endpoints: %w", err)
	}
	return nil
}

// deleteEndpoints deletes the Endpoints of a Service that is gone, when
// this controller wrote them: the API server's own (default/kubernetes)
// and hand-written ones are not its to delete.
func (c *Controller) deleteEndpoints(ctx context.Context, ns, name string) error {
	ep, err := c.endpoints.Endpoints(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ep.Labels[LabelEndpointsManagedBy] != EndpointsControllerName {
		return nil
	}
	uid := ep.UID
	err = c.kube.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete endpoints: %w", err)
	}
	return nil
}

// enqueueLeftoverEndpoints queues the Service of every Endpoints this
// controller wrote: one whose Service went while the controller was down
// is then deleted.
func (c *Controller) enqueueLeftoverEndpoints() {
	eps, err := c.endpoints.List(labels.SelectorFromSet(labels.Set{LabelEndpointsManagedBy: EndpointsControllerName}))
	if err != nil {
		c.log.Error("list endpoints", "err", err)
		return
	}
	for _, ep := range eps {
		c.queue.Add(ep.Namespace + "/" + ep.Name)
	}
}

// endpointsLabels are the Service's labels, this controller's mark, and
// service.kubernetes.io/headless for a Service without a cluster IP.
func endpointsLabels(svc *corev1.Service) map[string]string {
	l := maps.Clone(svc.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelEndpointsManagedBy] = EndpointsControllerName
	if svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.ClusterIP == "" {
		l[corev1.IsHeadlessService] = ""
	} else {
		delete(l, corev1.IsHeadlessService)
	}
	return l
}

// desiredSubsets lists the Service's endpoints by pod and port, then packs
// them into the canonical subsets.
func desiredSubsets(svc *corev1.Service, pods []*corev1.Pod) []corev1.EndpointSubset {
	var subsets []corev1.EndpointSubset
	for _, pod := range pods {
		if !endpointsliceutil.ShouldPodBeInEndpoints(pod, svc.Spec.PublishNotReadyAddresses) {
			continue
		}
		addr, ok := endpointAddress(svc, pod)
		if !ok {
			continue
		}
		ready := svc.Spec.PublishNotReadyAddresses || endpointsliceutil.IsPodReady(pod)
		if len(svc.Spec.Ports) == 0 {
			// Only a headless Service may have no ports.
			if svc.Spec.ClusterIP == corev1.ClusterIPNone {
				subsets = append(subsets, subsetOf(addr, nil, ready))
			}
			continue
		}
		for i := range svc.Spec.Ports {
			sp := &svc.Spec.Ports[i]
			port, err := endpointslicerec.FindPort(pod, sp)
			if err != nil {
				continue // this pod does not have the named port
			}
			subsets = append(subsets, subsetOf(addr, []corev1.EndpointPort{{
				Name: sp.Name, Port: int32(port), Protocol: sp.Protocol, AppProtocol: sp.AppProtocol,
			}}, ready))
		}
	}
	return repackSubsets(subsets)
}

func subsetOf(addr corev1.EndpointAddress, ports []corev1.EndpointPort, ready bool) corev1.EndpointSubset {
	if ready {
		return corev1.EndpointSubset{Addresses: []corev1.EndpointAddress{addr}, Ports: ports}
	}
	return corev1.EndpointSubset{NotReadyAddresses: []corev1.EndpointAddress{addr}, Ports: ports}
}

// endpointAddress is the pod's address of the Service's (first) IP family.
func endpointAddress(svc *corev1.Service, pod *corev1.Pod) (corev1.EndpointAddress, bool) {
	wantV6 := false
	switch {
	case len(svc.Spec.IPFamilies) > 0:
		wantV6 = svc.Spec.IPFamilies[0] == corev1.IPv6Protocol
	case svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone:
		wantV6 = strings.Contains(svc.Spec.ClusterIP, ":")
	default:
		wantV6 = strings.Contains(pod.Status.PodIP, ":")
	}
	for _, ip := range pod.Status.PodIPs {
		a, err := netip.ParseAddr(ip.IP)
		if err != nil || a.Is6() != wantV6 {
			continue
		}
		addr := corev1.EndpointAddress{
			IP:        a.String(),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		}
		if pod.Spec.NodeName != "" {
			addr.NodeName = &pod.Spec.NodeName
		}
		if endpointsliceutil.ShouldSetHostname(pod, svc) {
			addr.Hostname = pod.Spec.Hostname
		}
		return addr, true
	}
	return corev1.EndpointAddress{}, false
}

// addrKey tells addresses apart: the same IP may belong to two pods (of
// the host network, on different nodes' records).
type addrKey struct {
	ip  string
	uid types.UID
}

func keyOf(a *corev1.EndpointAddress) addrKey {
	k := addrKey{ip: a.IP}
	if a.TargetRef != nil {
		k.uid = a.TargetRef.UID
	}
	return k
}

// repackSubsets puts subsets in the canonical form upstream's RepackSubsets
// gives them, so that equal endpoints compare equal: each address once per
// port, not-ready winning over ready; ports served by the same addresses
// (in the same readiness) in one subset; everything sorted.
func repackSubsets(in []corev1.EndpointSubset) []corev1.EndpointSubset {
	addrs := map[addrKey]corev1.EndpointAddress{}
	type portKey struct {
		name, proto, app string
		port             int32
	}
	ports := map[portKey]corev1.EndpointPort{}
	// Readiness of each address, per port; the port-less group (a headless
	// Service without ports) under the zero portKey.
	byPort := map[portKey]map[addrKey]bool{}
	note := func(pk portKey, a *corev1.EndpointAddress, ready bool) {
		k := keyOf(a)
		if _, ok := addrs[k]; !ok {
			addrs[k] = *a
		}
		if byPort[pk] == nil {
			byPort[pk] = map[addrKey]bool{}
		}
		if was, seen := byPort[pk][k]; !seen || was {
			byPort[pk][k] = ready
		}
	}
	noPorts := portKey{}
	for i := range in {
		ss := &in[i]
		for _, p := range ss.Ports {
			pk := portKey{name: p.Name, proto: string(p.Protocol), port: p.Port}
			if p.AppProtocol != nil {
				pk.app = *p.AppProtocol
			}
			ports[pk] = p
			for j := range ss.Addresses {
				note(pk, &ss.Addresses[j], true)
			}
			for j := range ss.NotReadyAddresses {
				note(pk, &ss.NotReadyAddresses[j], false)
			}
		}
		if len(ss.Ports) == 0 {
			for j := range ss.Addresses {
				note(noPorts, &ss.Addresses[j], true)
			}
			for j := range ss.NotReadyAddresses {
				note(noPorts, &ss.NotReadyAddresses[j], false)
			}
		}
	}

	groups := map[string]*corev1.EndpointSubset{}
	for pk, set := range byPort {
		keys := make([]addrKey, 0, len(set))
		for k := range set {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return lessAddrKey(keys[i], keys[j]) })
		var id strings.Builder
		if pk == noPorts {
			id.WriteString("-")
		}
		for _, k := range keys {
			fmt.Fprintf(&id, "%s/%s/%t,", k.ip, k.uid, set[k])
		}
		g := groups[id.String()]
		if g == nil {
			g = &corev1.EndpointSubset{}
			for _, k := range keys {
				if set[k] {
					g.Addresses = append(g.Addresses, addrs[k])
				} else {
					g.NotReadyAddresses = append(g.NotReadyAddresses, addrs[k])
				}
			}
			groups[id.String()] = g
		}
		if pk != noPorts {
			g.Ports = append(g.Ports, ports[pk])
		}
	}
	out := make([]corev1.EndpointSubset, 0, len(groups))
	for _, g := range groups {
		sort.Slice(g.Ports, func(i, j int) bool { return portString(g.Ports[i]) < portString(g.Ports[j]) })
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return subsetString(out[i]) < subsetString(out[j]) })
	return out
}

func lessAddrKey(a, b addrKey) bool {
	if c := bytes.Compare([]byte(a.ip), []byte(b.ip)); c != 0 {
		return c < 0
	}
	return a.uid < b.uid
}

func portString(p corev1.EndpointPort) string {
	return p.Name + "/" + string(p.Protocol) + "/" + strconv.Itoa(int(p.Port))
}

func subsetString(s corev1.EndpointSubset) string {
	var b strings.Builder
	for _, p := range s.Ports {
		b.WriteString(portString(p) + ",")
	}
	for _, list := range [][]corev1.EndpointAddress{s.Addresses, s.NotReadyAddresses} {
		b.WriteString("|")
		for i := range list {
			k := keyOf(&list[i])
			b.WriteString(k.ip + "/" + string(k.uid) + ",")
		}
	}
	return b.String()
}

// truncate cuts subsets down to maxEndpointsAddresses addresses, as
// upstream does: ready addresses first, each subset keeping its share.
// It reports whether anything was cut.
func truncate(subsets []corev1.EndpointSubset) bool {
	ready, notReady := 0, 0
	for _, s := range subsets {
		ready += len(s.Addresses)
		notReady += len(s.NotReadyAddresses)
	}
	if ready+notReady <= maxEndpointsAddresses {
		return false
	}
	cutReady := ready > maxEndpointsAddresses
	room, total := maxEndpointsAddresses-ready, notReady
	if cutReady {
		room, total = maxEndpointsAddresses, ready
	}
	left := room
	for i := range subsets {
		s := &subsets[i]
		n := len(s.NotReadyAddresses)
		if cutReady {
			n = len(s.Addresses)
		}
		share := min(int(math.Ceil(float64(n)/float64(total)*float64(room))), left)
		if cutReady {
			s.Addresses = s.Addresses[:min(share, len(s.Addresses))]
			s.NotReadyAddresses = nil
			left -= len(s.Addresses)
		} else {
			s.NotReadyAddresses = s.NotReadyAddresses[:min(share, len(s.NotReadyAddresses))]
			left -= len(s.NotReadyAddresses)
		}
	}
	return true
}

// semanticIgnoreResourceVersion compares subsets as the API sees them (nil
// and empty alike) but for the pods' resourceVersions in targetRefs, which
// change with every pod update and mean nothing here.
var semanticIgnoreResourceVersion = conversion.EqualitiesOrDie(
	func(a, b corev1.ObjectReference) bool {
		a.ResourceVersion, b.ResourceVersion = "", ""
		return a == b
	},
)
