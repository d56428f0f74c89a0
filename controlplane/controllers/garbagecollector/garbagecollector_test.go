package garbagecollector

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

// testDiscovery answers ServerPreferredResources, which FakeDiscovery leaves empty.
type testDiscovery struct{ *fakediscovery.FakeDiscovery }

func (d testDiscovery) ServerPreferredResources() ([]*metav1.APIResourceList, error) {
	return d.Resources, nil
}

var verbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

func fakeDiscovery() testDiscovery {
	return testDiscovery{&fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: []*metav1.APIResourceList{
		{GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "pods", Kind: "Pod", Namespaced: true, Verbs: verbs},
			{Name: "pods/status", Kind: "Pod", Namespaced: true, Verbs: metav1.Verbs{"get", "update"}},
			{Name: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: verbs},
			{Name: "nodes", Kind: "Node", Verbs: verbs},
		}},
		{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{
			{Name: "replicasets", Kind: "ReplicaSet", Namespaced: true, Verbs: verbs},
		}},
	}}}}
}

var (
	podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	rsGVR   = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
)

func obj(apiVersion, kind, ns, name string, uid types.UID, owners ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid, ResourceVersion: "1", OwnerReferences: owners}}
}

func ref(kind, name string, uid types.UID, block bool) metav1.OwnerReference {
	api := "v1"
	if kind == "ReplicaSet" {
		api = "apps/v1"
	}
	return metav1.OwnerReference{APIVersion: api, Kind: kind, Name: name, UID: uid, BlockOwnerDeletion: &block}
}

func deleting(o *metav1.PartialObjectMetadata, finalizers ...string) *metav1.PartialObjectMetadata {
	now := metav1.Now()
	o.DeletionTimestamp = &now
	o.Finalizers = finalizers
	return o
}

// newTestController builds a collector over a fake metadata client holding
// objs, with synced caches but no workers: tests call the sync functions.
func newTestController(t *testing.T, objs ...runtime.Object) (*Controller, *metadatafake.FakeMetadataClient) {
	t.Helper()
	scheme := metadatafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	client := metadatafake.NewSimpleMetadataClient(scheme, objs...)
	c, err := New(client, fakeDiscovery(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.resources) != 4 {
		t.Fatalf("watched %d resources, want 4 (subresources excluded)", len(c.resources))
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.factory.Start(ctx.Done())
	t.Cleanup(func() { cancel(); c.factory.Shutdown() })
	var synced []cache.InformerSynced
	for _, w := range c.resources {
		synced = append(synced, w.informer.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		t.Fatal("caches did not sync")
	}
	client.ClearActions()
	return c, client
}

// writes are the mutating actions the collector sent.
func writes(client *metadatafake.FakeMetadataClient) []clienttesting.Action {
	var out []clienttesting.Action
	for _, a := range client.Actions() {
		switch a.GetVerb() {
		case "delete", "patch", "update", "create", "delete-collection":
			out = append(out, a)
		}
	}
	return out
}

func dependentItem(gvr schema.GroupVersionResource, ns, name string) item {
	return item{kind: checkDependent, gvr: gvr, namespace: ns, name: name}
}

func TestDependentOfGoneOwnerIsDeletedInBackground(t *testing.T) {
	pod := obj("v1", "Pod", "default", "p", "pod-uid", ref("ReplicaSet", "rs", "gone-uid", true))
	c, client := newTestController(t, pod)
	if err := c.syncDependent(context.Background(), dependentItem(podsGVR, "default", "p")); err != nil {
		t.Fatal(err)
	}
	w := writes(client)
	if len(w) != 1 || w[0].GetVerb() != "delete" {
		t.Fatalf("actions %v, want one delete", w)
	}
	opts := w[0].(clienttesting.DeleteActionImpl).DeleteOptions
	if opts.PropagationPolicy == nil || *opts.PropagationPolicy != metav1.DeletePropagationBackground {
		t.Errorf("propagation %v, want Background", opts.PropagationPolicy)
	}
	if opts.Preconditions == nil || opts.Preconditions.UID == nil || *opts.Preconditions.UID != "pod-uid" {
		t.Errorf("delete without the dependent's UID precondition: %+v", opts.Preconditions)
	}
}

func TestDependentOfReplacedOwnerIsDeleted(t *testing.T) {
	// An owner with the same name but another UID is a different object.
	rs := obj("apps/v1", "ReplicaSet", "default", "rs", "new-uid")
	pod := obj("v1", "Pod", "default", "p", "pod-uid", ref("ReplicaSet", "rs", "old-uid", true))
	c, client := newTestController(t, rs, pod)
	if err := c.syncDependent(context.Background(), dependentItem(podsGVR, "default", "p")); err != nil {
		t.Fatal(err)
	}
	if w := writes(client); len(w) != 1 || w[0].GetVerb() != "delete" {
		t.Fatalf("actions %v, want one delete", w)
	}
}

func TestDependentOfLiveOwnerIsKept(t *testing.T) {
	rs := obj("apps/v1", "ReplicaSet", "default", "rs", "rs-uid")
	pod := obj("v1", "Pod", "default", "p", "pod-uid", ref("ReplicaSet", "rs", "rs-uid", true))
	// An owner kind the server does not serve cannot be checked: kept.
	odd := obj("v1", "Pod", "default", "odd", "odd-uid", metav1.OwnerReference{APIVersion: "example.com/v1", Kind: "Widget", Name: "w", UID: "w-uid"})
	c, client := newTestController(t, rs, pod, odd)
	for _, name := range []string{"p", "odd"} {
		if err := c.syncDependent(context.Background(), dependentItem(podsGVR, "default", name)); err != nil {
			t.Fatal(err)
		}
	}
	if w := writes(client); len(w) != 0 {
		t.Fatalf("actions %v, want none", w)
	}
}

func TestDependentOfForegroundOwnerIsDeletedInForeground(t *testing.T) {
	rs := deleting(obj("apps/v1", "ReplicaSet", "default", "rs", "rs-uid"), metav1.FinalizerDeleteDependents)
	pod := obj("v1", "Pod", "default", "p", "pod-uid", ref("ReplicaSet", "rs", "rs-uid", true))
	c, client := newTestController(t, rs, pod)
	if err := c.syncDependent(context.Background(), dependentItem(podsGVR, "default", "p")); err != nil {
		t.Fatal(err)
	}
	w := writes(client)
	if len(w) != 1 || w[0].GetVerb() != "delete" {
		t.Fatalf("actions %v, want one delete", w)
	}
	if p := w[0].(clienttesting.DeleteActionImpl).DeleteOptions.PropagationPolicy; p == nil || *p != metav1.DeletePropagationForeground {
		t.Errorf("propagation %v, want Foreground", p)
	}
}

func TestDependentWithOneLiveOwnerLosesOnlyTheGoneRef(t *testing.T) {
	rs := obj("apps/v1", "ReplicaSet", "default", "rs", "rs-uid")
	cm := obj("v1", "ConfigMap", "default", "c", "cm-uid",
		ref("ReplicaSet", "rs", "rs-uid", false), ref("ReplicaSet", "gone", "gone-uid", false))
	c, client := newTestController(t, rs, cm)
	if err := c.syncDependent(context.Background(), dependentItem(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "default", "c")); err != nil {
		t.Fatal(err)
	}
	w := writes(client)
	if len(w) != 1 || w[0].GetVerb() != "patch" {
		t.Fatalf("actions %v, want one patch", w)
	}
	var patch struct {
		Metadata struct {
			OwnerReferences []metav1.OwnerReference `json:"ownerReferences"`
			ResourceVersion string                  `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(w[0].(clienttesting.PatchActionImpl).Patch, &patch); err != nil {
		t.Fatal(err)
	}
	if len(patch.Metadata.OwnerReferences) != 1 || patch.Metadata.OwnerReferences[0].UID != "rs-uid" || patch.Metadata.ResourceVersion != "1" {
		t.Errorf("patch %s", w[0].(clienttesting.PatchActionImpl).Patch)
	}
}

func TestForegroundOwnerWaitsForBlockingDependents(t *testing.T) {
	rs := deleting(obj("apps/v1", "ReplicaSet", "default", "rs", "rs-uid"), metav1.FinalizerDeleteDependents)
	// Terminating (its node has not finished it) and blocking.
	pod := deleting(obj("v1", "Pod", "default", "p", "pod-uid", ref("ReplicaSet", "rs", "rs-uid", true)))
	c, client := newTestController(t, rs, pod)
	owner := item{kind: processOwner, gvr: rsGVR, namespace: "default", name: "rs"}
	if err := c.syncOwner(context.Background(), owner); err != nil {
		t.Fatal(err)
	}
	if w := writes(client); len(w) != 0 {
		t.Fatalf("owner released while a blocking dependent remains: %v", w)
	}
	// The pod goes away.
	if err := client.Resource(podsGVR).Namespace("default").Delete(context.Background(), "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(c.dependents("rs-uid")) == 0 })
	client.ClearActions()
	if err := c.syncOwner(context.Background(), owner); err != nil {
		t.Fatal(err)
	}
	w := writes(client)
	if len(w) != 1 || w[0].GetVerb() != "patch" || w[0].GetResource() != rsGVR {
		t.Fatalf("actions %v, want the owner's finalizer patch", w)
	}
	if got := string(w[0].(clienttesting.PatchActionImpl).Patch); got != `{"metadata":{"finalizers":null,"resourceVersion":"1","uid":"rs-uid"}}` {
		t.Errorf("finalizer patch %s", got)
	}
}

func TestOrphanOwnerUnlinksDependentsThenReleases(t *testing.T) {
	rs := deleting(obj("apps/v1", "ReplicaSet", "default", "rs", "rs-uid"), metav1.FinalizerOrphanDependents, "example.com/keep")
	pod := obj("v1", "Pod", "default", "p", "pod-uid", ref("ReplicaSet", "rs", "rs-uid", true))
	c, client := newTestController(t, rs, pod)
	if err := c.syncOwner(context.Background(), item{kind: processOwner, gvr: rsGVR, namespace: "default", name: "rs"}); err != nil {
		t.Fatal(err)
	}
	w := writes(client)
	if len(w) != 2 {
		t.Fatalf("actions %v, want two patches", w)
	}
	if w[0].GetResource() != podsGVR || string(w[0].(clienttesting.PatchActionImpl).Patch) != `{"metadata":{"ownerReferences":null,"resourceVersion":"1","uid":"pod-uid"}}` {
		t.Errorf("first write %v %s, want the pod's ownerReferences removed", w[0], w[0].(clienttesting.PatchActionImpl).Patch)
	}
	if w[1].GetResource() != rsGVR || string(w[1].(clienttesting.PatchActionImpl).Patch) != `{"metadata":{"finalizers":["example.com/keep"],"resourceVersion":"1","uid":"rs-uid"}}` {
		t.Errorf("second write %v %s, want only the orphan finalizer removed", w[1], w[1].(clienttesting.PatchActionImpl).Patch)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}
