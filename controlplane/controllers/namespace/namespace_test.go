package namespace

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
)

// testDiscovery answers ServerPreferredNamespacedResources, which
// FakeDiscovery leaves empty.
type testDiscovery struct{ *fakediscovery.FakeDiscovery }

func (d testDiscovery) ServerPreferredNamespacedResources() ([]*metav1.APIResourceList, error) {
	return d.Resources, nil
}

var allVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

func resources() []*metav1.APIResourceList {
	return []*metav1.APIResourceList{{GroupVersion: "v1", APIResources: []metav1.APIResource{
		{Name: "pods", Kind: "Pod", Namespaced: true, Verbs: allVerbs},
		{Name: "pods/status", Kind: "Pod", Namespaced: true, Verbs: metav1.Verbs{"get", "update"}},
		{Name: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: allVerbs},
		// Listable but not deletable: skipped.
		{Name: "bindings", Kind: "Binding", Namespaced: true, Verbs: metav1.Verbs{"create"}},
	}}}
}

type fixture struct {
	c    *Controller
	kube *kubefake.Clientset
	meta *metadatafake.FakeMetadataClient
	now  time.Time
}

func terminating(name string) *corev1.Namespace {
	ts := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, DeletionTimestamp: &ts},
		Spec:   corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}
}

// newFixture: typed objects (namespaces, nodes, full pods) go to the typed
// fake, content as metadata to the metadata fake.
func newFixture(t *testing.T, ns *corev1.Namespace, typed []runtime.Object, content ...runtime.Object) *fixture {
	t.Helper()
	kube := kubefake.NewClientset(append([]runtime.Object{ns}, typed...)...)
	scheme := metadatafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	meta := metadatafake.NewSimpleMetadataClient(scheme, content...)
	factory := informers.NewSharedInformerFactory(kube, 0)
	inf := factory.Core().V1().Namespaces()
	c, err := New(kube, meta, inf, Options{ForceAfter: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := inf.Informer().GetIndexer().Add(ns); err != nil {
		t.Fatal(err)
	}
	c.disc = testDiscovery{&fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: resources()}}}
	f := &fixture{c: c, kube: kube, meta: meta, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.now = func() time.Time { return f.now }
	kube.ClearActions()
	return f
}

func partial(kind, ns, name string, deleting *time.Time) *metav1.PartialObjectMetadata {
	pm := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: kind}, ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if deleting != nil {
		ts := metav1.NewTime(*deleting)
		pm.DeletionTimestamp = &ts
	}
	return pm
}

// finalizeActions are the PUT namespaces/<n>/finalize calls made.
func finalizeActions(kube *kubefake.Clientset) []*corev1.Namespace {
	var out []*corev1.Namespace
	for _, a := range kube.Actions() {
		if u, ok := a.(clienttesting.UpdateAction); ok && a.GetSubresource() == "finalize" {
			out = append(out, u.GetObject().(*corev1.Namespace))
		}
	}
	return out
}

func TestEmptyNamespaceIsFinalized(t *testing.T) {
	ns := terminating("empty")
	ns.Spec.Finalizers = append(ns.Spec.Finalizers, "example.com/other")
	f := newFixture(t, ns, nil)
	again, err := f.c.Sync(context.Background(), "empty")
	if err != nil || again != 0 {
		t.Fatalf("sync: again %v err %v", again, err)
	}
	fin := finalizeActions(f.kube)
	if len(fin) != 1 {
		t.Fatalf("finalize calls %d, want 1 (actions %v)", len(fin), f.kube.Actions())
	}
	if got := fin[0].Spec.Finalizers; len(got) != 1 || got[0] != "example.com/other" {
		t.Errorf("finalize left %v, want only the other controller's finalizer", got)
	}
}

func TestNamespaceNotBeingDeletedIsLeftAlone(t *testing.T) {
	live := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "live"}, Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}}}
	f := newFixture(t, live, nil, partial("ConfigMap", "live", "c", nil))
	if again, err := f.c.Sync(context.Background(), "live"); err != nil || again != 0 {
		t.Fatalf("sync: %v %v", again, err)
	}
	if len(f.kube.Actions())+len(f.meta.Actions()) != 0 {
		t.Errorf("acted on a live namespace: %v %v", f.kube.Actions(), f.meta.Actions())
	}
	// Already finalized by us: nothing to do either.
	done := terminating("done")
	done.Spec.Finalizers = nil
	f = newFixture(t, done, nil)
	if _, err := f.c.Sync(context.Background(), "done"); err != nil || len(f.kube.Actions()) != 0 {
		t.Errorf("acted on a namespace without the kubernetes finalizer: %v %v", err, f.kube.Actions())
	}
}

func TestContentIsDeletedAndLingeringPodsForcedAfterGrace(t *testing.T) {
	ns := terminating("busy")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	graceEnds := start.Add(30 * time.Second)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	// A pod its live node is still terminating.
	onNode := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "busy", Name: "p", UID: "p-uid", DeletionTimestamp: &metav1.Time{Time: graceEnds}},
		Spec: corev1.PodSpec{NodeName: "n1"}}
	f := newFixture(t, ns, []runtime.Object{node, onNode},
		partial("ConfigMap", "busy", "c1", nil), partial("ConfigMap", "busy", "c2", nil),
		partial("Pod", "busy", "p", &graceEnds))

	again, err := f.c.Sync(context.Background(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	// The pod may be forced at graceEnds+ForceAfter; the requeue is capped.
	if again != f.c.opts.MaxRetryDelay {
		t.Errorf("again %v, want %v", again, f.c.opts.MaxRetryDelay)
	}
	if n := len(finalizeActions(f.kube)); n != 0 {
		t.Fatalf("finalized with a pod left")
	}
	cms, _ := f.meta.Resource(schemaGVR("configmaps")).Namespace("busy").List(context.Background(), metav1.ListOptions{})
	if len(cms.Items) != 0 {
		t.Errorf("configmaps left: %d", len(cms.Items))
	}
	got, err := f.kube.CoreV1().Namespaces().Get(context.Background(), "busy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := condition(got, corev1.NamespaceContentRemaining); c == nil || c.Status != corev1.ConditionTrue || !strings.Contains(c.Message, "pods has 1 resource instances") {
		t.Errorf("NamespaceContentRemaining %+v", c)
	}
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == "delete" {
			t.Fatalf("forced a pod within its grace period: %v", a)
		}
	}

	// Close to the deadline the requeue lands at it.
	f.now = graceEnds.Add(9 * time.Second)
	if again, err = f.c.Sync(context.Background(), "busy"); err != nil || again != time.Second {
		t.Errorf("again %v err %v, want 1s", again, err)
	}
	// Past grace + ForceAfter: forced, then finalized.
	f.now = graceEnds.Add(10 * time.Second)
	f.kube.ClearActions()
	if again, err = f.c.Sync(context.Background(), "busy"); err != nil || again != 0 {
		t.Fatalf("again %v err %v", again, err)
	}
	forced := false
	for _, a := range f.kube.Actions() {
		if d, ok := a.(clienttesting.DeleteActionImpl); ok && d.Name == "p" {
			g := d.DeleteOptions.GracePeriodSeconds
			forced = g != nil && *g == 0 && d.DeleteOptions.Preconditions != nil && *d.DeleteOptions.Preconditions.UID == "p-uid"
		}
	}
	if !forced {
		t.Errorf("pod not deleted with grace 0 and its UID precondition: %v", f.kube.Actions())
	}
	if len(finalizeActions(f.kube)) != 1 {
		t.Errorf("namespace not finalized once empty")
	}
}

func TestShouldForce(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	f := newFixture(t, terminating("x"), []runtime.Object{node})
	f.now = now
	pod := func(node string, deletion time.Time) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", DeletionTimestamp: &metav1.Time{Time: deletion}}, Spec: corev1.PodSpec{NodeName: node}}
	}
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		force bool
	}{
		{"unbound", pod("", now.Add(time.Hour)), true},
		{"node gone", pod("gone", now.Add(time.Hour)), true},
		{"live node, in grace", pod("n1", now.Add(time.Second)), false},
		{"live node, grace just over", pod("n1", now.Add(-5*time.Second)), false},
		{"live node, grace + ForceAfter over", pod("n1", now.Add(-10*time.Second)), true},
	} {
		force, _, err := f.c.shouldForce(context.Background(), tc.pod, map[string]bool{})
		if err != nil || force != tc.force {
			t.Errorf("%s: force %v err %v, want %v", tc.name, force, err, tc.force)
		}
	}
}

func condition(ns *corev1.Namespace, t corev1.NamespaceConditionType) *corev1.NamespaceCondition {
	for i := range ns.Status.Conditions {
		if ns.Status.Conditions[i].Type == t {
			return &ns.Status.Conditions[i]
		}
	}
	return nil
}

func schemaGVR(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Version: "v1", Resource: resource}
}
