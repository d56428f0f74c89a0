package endpointslice

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

const ns = "default"

// fixture is a controller over client-go's fake clientset, with its
// informers running, so syncs see their own writes as they would against a
// server.
type fixture struct {
	t    *testing.T
	kube *fake.Clientset
	c    *Controller
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	kube := fake.NewClientset(objs...)
	// The fake clientset does not do what kube-apiserver does to a slice:
	// a name from generateName, a UID, generation 1 and one more on each
	// update. The controller's tracker relies on UIDs and generations.
	var n atomic.Int64
	kube.PrependReactor("create", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.CreateAction).GetObject().(*discoveryv1.EndpointSlice)
		if s.Name == "" && s.GenerateName != "" {
			s.Name = s.GenerateName + strconv.FormatInt(n.Add(1), 10)
		}
		s.UID, s.Generation = types.UID("uid-"+s.Name), 1
		return false, nil, nil
	})
	kube.PrependReactor("update", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.UpdateAction).GetObject().(*discoveryv1.EndpointSlice)
		if old, err := kube.Tracker().Get(a.GetResource(), s.Namespace, s.Name); err == nil {
			s.Generation = old.(*discoveryv1.EndpointSlice).Generation + 1
		}
		return false, nil, nil
	})
	factory := informers.NewSharedInformerFactory(kube, 0)
	c, err := New(kube, factory.Core().V1().Services(), factory.Core().V1().Pods(), factory.Core().V1().Nodes(),
		factory.Discovery().V1().EndpointSlices(), factory.Core().V1().Endpoints(),
		Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
		c.queue.ShutDown()
	})
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("cache of %v not synced", typ)
		}
	}
	return &fixture{t: t, kube: kube, c: c}
}

// sync runs one sync of the service, retrying while the informer cache has
// not caught up with the controller's own writes (as the queue would).
func (f *fixture) sync(name string) {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		err := f.c.syncService(ctx, ns+"/"+name)
		if err == errStaleCache {
			return false, nil
		}
		return true, err
	})
	if err != nil {
		f.t.Fatalf("sync %s: %v", name, err)
	}
}

// waitCached waits until the listers see what the client holds.
func (f *fixture) waitCached() {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		slices, _ := f.kube.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
		for i := range slices.Items {
			s := &slices.Items[i]
			if got, err := f.c.slices.EndpointSlices(s.Namespace).Get(s.Name); err != nil || !apiequality.Semantic.DeepEqual(got, s) {
				return false, nil
			}
		}
		eps, _ := f.kube.CoreV1().Endpoints("").List(ctx, metav1.ListOptions{})
		for i := range eps.Items {
			e := &eps.Items[i]
			if got, err := f.c.endpoints.Endpoints(e.Namespace).Get(e.Name); err != nil || !apiequality.Semantic.DeepEqual(got, e) {
				return false, nil
			}
		}
		pods, _ := f.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		for i := range pods.Items {
			p := &pods.Items[i]
			if got, err := f.c.pods.Pods(p.Namespace).Get(p.Name); err != nil || !apiequality.Semantic.DeepEqual(got, p) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		f.t.Fatalf("informer caches never caught up: %v", err)
	}
}

// deleteService deletes a service and waits until the lister misses it.
func (f *fixture) deleteService(name string) {
	f.t.Helper()
	f.waitCached()
	if err := f.kube.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		f.t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		_, err := f.c.services.Services(ns).Get(name)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		f.t.Fatalf("service %s still cached: %v", name, err)
	}
}

func (f *fixture) slicesOf(svc string) []discoveryv1.EndpointSlice {
	f.t.Helper()
	l, err := f.kube.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
	return l.Items
}

func (f *fixture) endpoints(svc string) *corev1.Endpoints {
	f.t.Helper()
	ep, err := f.kube.CoreV1().Endpoints(ns).Get(context.Background(), svc, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return ep
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

type podOpt func(*corev1.Pod)

func notReady(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }
func terminating(p *corev1.Pod) {
	p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	p.Finalizers = []string{"test/keep"}
}
func onNode(n string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func withPort(n int32) podOpt {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = n }
}
func labelled(k, v string) podOpt { return func(p *corev1.Pod) { p.Labels = map[string]string{k: v} } }

// pod is a running pod of app=web on n1 at ip, ready, serving "http" on
// 8080.
func pod(name, ip string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{
			Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
		}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			PodIPs:     []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

type svcOpt func(*corev1.Service)

func headless(s *corev1.Service)        { s.Spec.ClusterIP = corev1.ClusterIPNone }
func noPorts(s *corev1.Service)         { s.Spec.Ports = nil }
func publishNotReady(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }
func noSelector(s *corev1.Service)      { s.Spec.Selector = nil }
func externalName(s *corev1.Service)    { s.Spec.Type = corev1.ServiceTypeExternalName }
func svcLabel(k, v string) svcOpt       { return func(s *corev1.Service) { s.Labels[k] = v } }
func selecting(k, v string) svcOpt {
	return func(s *corev1.Service) { s.Spec.Selector = map[string]string{k: v} }
}
func portTarget(t intstr.IntOrString) svcOpt {
	return func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = t }
}

// service selects app=web; port 80 "http" targets the pods' port named
// http.
func service(name string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-svc-" + name), Labels: map[string]string{"tier": "front"}},
		Spec: corev1.ServiceSpec{
			Selector:   map[string]string{"app": "web"},
			ClusterIP:  "10.96.0.50",
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

type conds struct{ ready, serving, terminating bool }

// endpointsByPod maps the slices' endpoints by pod name.
func endpointsByPod(t *testing.T, slices []discoveryv1.EndpointSlice) map[string]discoveryv1.Endpoint {
	t.Helper()
	out := map[string]discoveryv1.Endpoint{}
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.TargetRef == nil {
				t.Fatalf("endpoint %v without targetRef", e.Addresses)
			}
			out[e.TargetRef.Name] = e
		}
	}
	return out
}

func condsOf(e discoveryv1.Endpoint) conds {
	return conds{ptr.Deref(e.Conditions.Ready, false), ptr.Deref(e.Conditions.Serving, false), ptr.Deref(e.Conditions.Terminating, false)}
}

func addrs(list []corev1.EndpointAddress) []string {
	var out []string
	for _, a := range list {
		out = append(out, a.IP)
	}
	return out
}

func TestSliceAndEndpoints(t *testing.T) {
	f := newFixture(t,
		node("n1"), node("n2"),
		service("web"),
		pod("ready", "10.244.1.2"),
		pod("unready", "10.244.2.2", notReady, onNode("n2")),
		pod("leaving", "10.244.1.3", terminating),
		pod("done", "10.244.1.4", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("noip", "", func(p *corev1.Pod) { p.Status.PodIPs = nil }),
		pod("other", "10.244.1.5", labelled("app", "other")),
		// A slice of the service that someone else manages stays as it is.
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-custom", Namespace: ns, Labels: map[string]string{
				discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "someone-else"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.1"}}},
		},
	)
	f.sync("web")

	var ours []discoveryv1.EndpointSlice
	for _, s := range f.slicesOf("web") {
		if s.Name == "web-custom" {
			if len(s.Endpoints) != 1 || s.Endpoints[0].Addresses[0] != "192.0.2.1" || s.Labels[discoveryv1.LabelManagedBy] != "someone-else" {
				t.Errorf("a slice not ours was changed: %+v", s)
			}
			continue
		}
		ours = append(ours, s)
	}
	if len(ours) != 1 {
		t.Fatalf("slices: %d, want 1", len(ours))
	}
	s := ours[0]
	if s.Labels[discoveryv1.LabelManagedBy] != ControllerName || s.Labels[discoveryv1.LabelServiceName] != "web" || s.Labels["tier"] != "front" {
		t.Errorf("labels %v", s.Labels)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != "Service" || s.OwnerReferences[0].UID != "uid-svc-web" || !ptr.Deref(s.OwnerReferences[0].Controller, false) {
		t.Errorf("ownerReferences %+v", s.OwnerReferences)
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 || len(s.Ports) != 1 || ptr.Deref(s.Ports[0].Port, 0) != 8080 ||
		ptr.Deref(s.Ports[0].Name, "") != "http" || ptr.Deref(s.Ports[0].Protocol, "") != corev1.ProtocolTCP {
		t.Errorf("address type %s, ports %+v: want IPv4, http 8080/TCP (the named targetPort resolved)", s.AddressType, s.Ports)
	}
	got := endpointsByPod(t, ours)
	want := map[string]conds{
		"ready":   {true, true, false},
		"unready": {false, false, false},
		"leaving": {false, true, true}, // serving, but not ready: it is going
	}
	if len(got) != len(want) {
		t.Errorf("endpoints of %v, want %v", keys(got), keys(want))
	}
	for name, w := range want {
		e, ok := got[name]
		if !ok {
			t.Errorf("no endpoint for %s", name)
			continue
		}
		if condsOf(e) != w {
			t.Errorf("%s: conditions %+v, want %+v", name, condsOf(e), w)
		}
		if e.TargetRef.Kind != "Pod" || e.TargetRef.UID != types.UID("uid-"+name) || e.TargetRef.Namespace != ns {
			t.Errorf("%s: targetRef %+v", name, e.TargetRef)
		}
	}
	if ptr.Deref(got["unready"].NodeName, "") != "n2" || got["ready"].Addresses[0] != "10.244.1.2" {
		t.Errorf("nodeName %v, address %v", got["unready"].NodeName, got["ready"].Addresses)
	}

	ep := f.endpoints("web")
	if ep == nil {
		t.Fatal("no Endpoints")
	}
	if ep.Labels[LabelEndpointsManagedBy] != EndpointsControllerName || ep.Labels["tier"] != "front" {
		t.Errorf("endpoints labels %v", ep.Labels)
	}
	if _, ok := ep.Labels[corev1.IsHeadlessService]; ok {
		t.Errorf("a ClusterIP service's endpoints labelled headless")
	}
	if len(ep.Subsets) != 1 {
		t.Fatalf("subsets %+v", ep.Subsets)
	}
	ss := ep.Subsets[0]
	if fmt.Sprint(addrs(ss.Addresses)) != "[10.244.1.2]" || fmt.Sprint(addrs(ss.NotReadyAddresses)) != "[10.244.2.2]" {
		t.Errorf("addresses %v, not ready %v: want the ready pod, and the not-ready one; the terminating one left out",
			addrs(ss.Addresses), addrs(ss.NotReadyAddresses))
	}
	if len(ss.Ports) != 1 || ss.Ports[0] != (corev1.EndpointPort{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}) {
		t.Errorf("ports %+v", ss.Ports)
	}
	if a := ss.NotReadyAddresses[0]; ptr.Deref(a.NodeName, "") != "n2" || a.TargetRef == nil || a.TargetRef.Name != "unready" {
		t.Errorf("not-ready address %+v", a)
	}

	// The pod turns ready: both follow.
	f.waitCached()
	p, _ := f.kube.CoreV1().Pods(ns).Get(context.Background(), "unready", metav1.GetOptions{})
	p.Status.Conditions[0].Status = corev1.ConditionTrue
	if _, err := f.kube.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitCached()
	f.sync("web")
	var now []discoveryv1.EndpointSlice
	for _, s := range f.slicesOf("web") {
		if s.Name != "web-custom" {
			now = append(now, s)
		}
	}
	if c := condsOf(endpointsByPod(t, now)["unready"]); c != (conds{true, true, false}) {
		t.Errorf("after the pod turned ready: %+v", c)
	}
	if ss := f.endpoints("web").Subsets; len(ss) != 1 || len(ss[0].Addresses) != 2 || len(ss[0].NotReadyAddresses) != 0 {
		t.Errorf("endpoints after the pod turned ready: %+v", ss)
	}
	// Nothing changed: no write.
	f.waitCached()
	before := len(f.kube.Actions())
	f.sync("web")
	for _, a := range f.kube.Actions()[before:] {
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			t.Errorf("a sync without changes wrote: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestNamedPortPerPod: pods naming the port differently land in separate
// slices and separate subsets.
func TestNamedPortPerPod(t *testing.T) {
	f := newFixture(t, node("n1"), service("web"),
		pod("a", "10.244.1.2"), pod("b", "10.244.1.3"), pod("c", "10.244.1.4", withPort(9090)),
		// No port named http: not an endpoint of this port.
		pod("d", "10.244.1.5", func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].Name = "web" }))
	f.sync("web")
	byPort := map[int32][]string{}
	for _, s := range f.slicesOf("web") {
		port := int32(-1)
		if len(s.Ports) == 1 {
			port = ptr.Deref(s.Ports[0].Port, 0)
		}
		for _, e := range s.Endpoints {
			byPort[port] = append(byPort[port], e.TargetRef.Name)
		}
	}
	for _, l := range byPort {
		sort.Strings(l)
	}
	if fmt.Sprint(byPort) != "map[-1:[d] 8080:[a b] 9090:[c]]" {
		t.Errorf("endpoints by slice port: %v, want a and b on 8080, c on 9090, d in a slice without the port", byPort)
	}
	ep := f.endpoints("web")
	got := map[int32][]string{}
	for _, ss := range ep.Subsets {
		got[ss.Ports[0].Port] = addrs(ss.Addresses)
	}
	if fmt.Sprint(got) != "map[8080:[10.244.1.2 10.244.1.3] 9090:[10.244.1.4]]" {
		t.Errorf("subsets by port: %v", got)
	}
}

func TestPublishNotReadyAddresses(t *testing.T) {
	f := newFixture(t, node("n1"), service("web", publishNotReady),
		pod("ready", "10.244.1.2"), pod("unready", "10.244.1.3", notReady), pod("leaving", "10.244.1.4", terminating))
	f.sync("web")
	got := endpointsByPod(t, f.slicesOf("web"))
	for name, w := range map[string]conds{
		"ready": {true, true, false}, "unready": {true, false, false}, "leaving": {true, true, true},
	} {
		if c := condsOf(got[name]); c != w {
			t.Errorf("%s: %+v, want %+v", name, c, w)
		}
	}
	ep := f.endpoints("web")
	if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 3 || len(ep.Subsets[0].NotReadyAddresses) != 0 {
		t.Errorf("subsets %+v: want every pod ready, the terminating one too", ep.Subsets)
	}
}

func TestHeadless(t *testing.T) {
	f := newFixture(t, node("n1"),
		service("db", headless, noPorts),
		service("db-ports", headless),
		pod("a", "10.244.1.2", func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "a", "db" }),
		pod("b", "10.244.1.3", notReady))
	f.sync("db")
	f.sync("db-ports")

	slices := f.slicesOf("db")
	if len(slices) != 1 || len(slices[0].Ports) != 0 || len(slices[0].Endpoints) != 2 {
		t.Fatalf("headless without ports: %+v", slices)
	}
	if _, ok := slices[0].Labels[corev1.IsHeadlessService]; !ok {
		t.Errorf("slice labels %v: want %s", slices[0].Labels, corev1.IsHeadlessService)
	}
	if h := ptr.Deref(endpointsByPod(t, slices)["a"].Hostname, ""); h != "a" {
		t.Errorf("hostname of a pod whose subdomain is the service: %q", h)
	}
	ep := f.endpoints("db")
	if _, ok := ep.Labels[corev1.IsHeadlessService]; !ok {
		t.Errorf("endpoints labels %v", ep.Labels)
	}
	if len(ep.Subsets) != 1 || len(ep.Subsets[0].Ports) != 0 ||
		fmt.Sprint(addrs(ep.Subsets[0].Addresses)) != "[10.244.1.2]" || fmt.Sprint(addrs(ep.Subsets[0].NotReadyAddresses)) != "[10.244.1.3]" {
		t.Errorf("headless without ports, subsets %+v", ep.Subsets)
	}
	if ep.Subsets[0].Addresses[0].Hostname != "a" {
		t.Errorf("endpoints hostname %q", ep.Subsets[0].Addresses[0].Hostname)
	}

	if s := f.slicesOf("db-ports"); len(s) != 1 || len(s[0].Ports) != 1 || len(s[0].Endpoints) != 2 {
		t.Errorf("headless with ports: %+v", s)
	}
	// The hostname is the pod's only for the service it names.
	if h := endpointsByPod(t, f.slicesOf("db-ports"))["a"].Hostname; h != nil {
		t.Errorf("hostname set for another service: %q", *h)
	}
}

// TestManyPods: at most 100 endpoints a slice.
func TestManyPods(t *testing.T) {
	objs := []runtime.Object{node("n1"), service("web")}
	for i := range 250 {
		objs = append(objs, pod(fmt.Sprintf("p%03d", i), fmt.Sprintf("10.244.%d.%d", 1+i/200, 2+i%200)))
	}
	f := newFixture(t, objs...)
	f.sync("web")
	slices := f.slicesOf("web")
	total := 0
	for _, s := range slices {
		if len(s.Endpoints) > 100 {
			t.Errorf("slice %s holds %d endpoints", s.Name, len(s.Endpoints))
		}
		total += len(s.Endpoints)
	}
	if len(slices) != 3 || total != 250 {
		t.Errorf("%d slices holding %d endpoints, want 3 holding 250", len(slices), total)
	}
	if n := len(f.endpoints("web").Subsets[0].Addresses); n != 250 {
		t.Errorf("endpoints hold %d addresses", n)
	}
}

// TestLeftAlone: Services without selector and ExternalName ones get
// nothing; Endpoints this controller did not write are never deleted.
func TestLeftAlone(t *testing.T) {
	kubernetesEP := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: ns, Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"}},
		Subsets:    []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "172.31.77.1"}}}},
	}
	manual := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "manual", Namespace: ns},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.7"}}}}}
	f := newFixture(t, node("n1"), pod("a", "10.244.1.2"),
		service("kubernetes", noSelector), kubernetesEP,
		service("manual", noSelector), manual,
		service("ext", externalName))
	for _, name := range []string{"kubernetes", "manual", "ext"} {
		f.sync(name)
	}
	for _, a := range f.kube.Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
			t.Errorf("wrote for a service that is not its: %s %s", v, a.GetResource().Resource)
		}
	}
	// Services gone (or never there): their hand-made Endpoints stay.
	f.deleteService("manual")
	f.sync("manual")
	f.sync("kubernetes-gone")
	if f.endpoints("manual") == nil || f.endpoints("kubernetes") == nil {
		t.Error("deleted Endpoints it did not write")
	}
}

// TestServiceDeleted: the Endpoints go with the Service (its slices go
// through their ownerReference, with the garbage collector).
func TestServiceDeleted(t *testing.T) {
	f := newFixture(t, node("n1"), service("web"), pod("a", "10.244.1.2"))
	f.sync("web")
	if f.endpoints("web") == nil {
		t.Fatal("no endpoints")
	}
	f.deleteService("web")
	f.sync("web")
	if f.endpoints("web") != nil {
		t.Error("endpoints outlived their service")
	}
}

// TestPodOnUnknownNode: a pod bound to a node that does not exist is left
// out and the sync fails, so it is retried (upstream's behaviour: the pod
// garbage collector will remove the pod, or the node will appear).
func TestPodOnUnknownNode(t *testing.T) {
	f := newFixture(t, node("n1"), service("web"), pod("a", "10.244.1.2"), pod("b", "10.244.1.3", onNode("ghost")))
	err := f.c.syncService(context.Background(), ns+"/web")
	if err == nil {
		t.Error("sync with a pod on an unknown node succeeded")
	}
	if got := endpointsByPod(t, f.slicesOf("web")); len(got) != 1 || got["a"].TargetRef == nil {
		t.Errorf("endpoints %v, want only a", keys(got))
	}
}

func TestRepackSubsets(t *testing.T) {
	a := corev1.EndpointAddress{IP: "10.0.0.2", TargetRef: &corev1.ObjectReference{UID: "a"}}
	b := corev1.EndpointAddress{IP: "10.0.0.1", TargetRef: &corev1.ObjectReference{UID: "b"}}
	http := corev1.EndpointPort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}
	dns := corev1.EndpointPort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}
	got := repackSubsets([]corev1.EndpointSubset{
		{Addresses: []corev1.EndpointAddress{a}, Ports: []corev1.EndpointPort{http}},
		{Addresses: []corev1.EndpointAddress{b}, Ports: []corev1.EndpointPort{http}},
		{Addresses: []corev1.EndpointAddress{a}, Ports: []corev1.EndpointPort{dns}},
		{NotReadyAddresses: []corev1.EndpointAddress{b}, Ports: []corev1.EndpointPort{dns}},
		{Addresses: []corev1.EndpointAddress{b}, Ports: []corev1.EndpointPort{dns}}, // not ready wins
	})
	want := []corev1.EndpointSubset{
		{Addresses: []corev1.EndpointAddress{a}, NotReadyAddresses: []corev1.EndpointAddress{b}, Ports: []corev1.EndpointPort{dns}},
		{Addresses: []corev1.EndpointAddress{b, a}, Ports: []corev1.EndpointPort{http}},
	}
	if !semanticIgnoreResourceVersion.DeepEqual(got, want) {
		t.Errorf("repacked\n%+v\nwant\n%+v", got, want)
	}
	// Same addresses for both ports: one subset.
	got = repackSubsets([]corev1.EndpointSubset{
		{Addresses: []corev1.EndpointAddress{a}, Ports: []corev1.EndpointPort{http}},
		{Addresses: []corev1.EndpointAddress{a}, Ports: []corev1.EndpointPort{dns}},
	})
	if len(got) != 1 || len(got[0].Ports) != 2 || got[0].Ports[0].Name != "dns" {
		t.Errorf("one address, two ports: %+v", got)
	}
}

func TestTruncate(t *testing.T) {
	mk := func(ready, notReady int) corev1.EndpointSubset {
		var s corev1.EndpointSubset
		for i := range ready {
			s.Addresses = append(s.Addresses, corev1.EndpointAddress{IP: fmt.Sprintf("10.1.%d.%d", i/250, i%250)})
		}
		for i := range notReady {
			s.NotReadyAddresses = append(s.NotReadyAddresses, corev1.EndpointAddress{IP: fmt.Sprintf("10.2.%d.%d", i/250, i%250)})
		}
		return s
	}
	count := func(ss []corev1.EndpointSubset) (r, n int) {
		for _, s := range ss {
			r += len(s.Addresses)
			n += len(s.NotReadyAddresses)
		}
		return
	}
	ss := []corev1.EndpointSubset{mk(600, 200), mk(100, 300)}
	if !truncate(ss) {
		t.Fatal("1200 addresses not truncated")
	}
	if r, n := count(ss); r != 700 || n != 300 {
		t.Errorf("ready %d, not ready %d: want every ready address and 300 not ready", r, n)
	}
	ss = []corev1.EndpointSubset{mk(900, 10), mk(300, 0)}
	truncate(ss)
	if r, n := count(ss); r != 1000 || n != 0 || len(ss[0].Addresses) != 750 {
		t.Errorf("ready %d (first subset %d), not ready %d: want 1000 ready in proportion, none not ready", r, len(ss[0].Addresses), n)
	}
	if truncate([]corev1.EndpointSubset{mk(500, 500)}) {
		t.Error("1000 addresses truncated")
	}
}
