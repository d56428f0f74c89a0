// Package garbagecollector deletes objects whose owners are gone, like
// upstream's garbage collector but without its dependency graph: every
// listable, watchable, deletable resource is watched as metadata only
// (PartialObjectMetadata informers), each informer indexes its objects by
// the UIDs they name in ownerReferences, and the indexes answer "who
// depends on X".
//
// Three kinds of work, all through one queue:
//   - a dependent (an object with ownerReferences) is checked: owners are
//     classified as solid (exist, not being deleted in foreground),
//     waiting (exist, deleting with the foregroundDeletion finalizer) or
//     dangling (gone, or a different UID). With a solid owner left, refs to
//     dangling/waiting owners are removed; with only waiting owners the
//     dependent is deleted in foreground (so deletion cascades); with only
//     dangling owners it is deleted in background. A dangling verdict from
//     the cache is confirmed with a live GET, as upstream does.
//   - an owner deleting with foregroundDeletion: its dependents are queued
//     (above) and, once none with blockOwnerDeletion=true is left, the
//     finalizer is removed so the API server deletes the owner.
//   - an owner deleting with the orphan finalizer: the ref to it is removed
//     from every dependent, then the finalizer.
//
// Dependents are queued when their owner's delete event arrives, and on
// every add/update of an object with ownerReferences (so the initial list
// after a restart collects what was orphaned meanwhile). Owners are queued
// when they are deleting with one of the two finalizers, and whenever one
// of their dependents changes or goes away.
package garbagecollector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

// ownerUIDIndex indexes objects by the UIDs in their ownerReferences.
const ownerUIDIndex = "ownerUID"

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many items are processed at once (default 4).
	Workers int
	Logger  *slog.Logger
}

// kind of work an item asks for.
type kind uint8

const (
	checkDependent kind = iota // may this object be collected?
	processOwner               // an owner deleting with foreground/orphan finalizers
)

// item is a queue key.
type item struct {
	kind      kind
	gvr       schema.GroupVersionResource
	namespace string
	name      string
}

// watched is one resource's metadata informer.
type watched struct {
	gvr        schema.GroupVersionResource
	namespaced bool
	informer   cache.SharedIndexInformer
}

// Controller is the garbage collector.
type Controller struct {
	meta    metadata.Interface
	mapper  meta.RESTMapper
	factory metadatainformer.SharedInformerFactory
	// resources is fixed after New: skep serves no custom resources, so
	// discovery at start is enough.
	resources map[schema.GroupVersionResource]*watched
	queue     workqueue.TypedRateLimitingInterface[item]
	opts      Options
	log       *slog.Logger
	startOnce sync.Once
}

// New discovers the resources to watch and sets up their informers.
func New(meta metadata.Interface, disc discovery.DiscoveryInterface, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	groups, err := restmapper.GetAPIGroupResources(disc)
	if err != nil {
		return nil, fmt.Errorf("discover api groups: %w", err)
	}
	c := &Controller{
		meta:      meta,
		mapper:    restmapper.NewDiscoveryRESTMapper(groups),
		factory:   metadatainformer.NewSharedInformerFactory(meta, 0),
		resources: map[schema.GroupVersionResource]*watched{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[item](5*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[item]{Name: "garbagecollector"}),
		opts: opts, log: opts.Logger.With("controller", "garbagecollector"),
	}
	lists, err := disc.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		return nil, fmt.Errorf("discover resources: %w", err)
	}
	for _, gvr := range collectable(lists) {
		w := &watched{gvr: gvr.GroupVersionResource, namespaced: gvr.namespaced, informer: c.factory.ForResource(gvr.GroupVersionResource).Informer()}
		if err := w.informer.AddIndexers(cache.Indexers{ownerUIDIndex: indexByOwnerUID}); err != nil {
			return nil, fmt.Errorf("index %s: %w", gvr.GroupVersionResource, err)
		}
		if _, err := w.informer.AddEventHandler(c.handlers(w)); err != nil {
			return nil, fmt.Errorf("watch %s: %w", gvr.GroupVersionResource, err)
		}
		c.resources[w.gvr] = w
	}
	return c, nil
}

type gvrScope struct {
	schema.GroupVersionResource
	namespaced bool
}

// collectable picks the resources the collector can watch and delete.
func collectable(lists []*metav1.APIResourceList) []gvrScope {
	var out []gvrScope
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") && slices.Contains(r.Verbs, "delete") {
				out = append(out, gvrScope{gv.WithResource(r.Name), r.Namespaced})
			}
		}
	}
	return out
}

func indexByOwnerUID(obj interface{}) ([]string, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil
	}
	refs := m.GetOwnerReferences()
	if len(refs) == 0 {
		return nil, nil
	}
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = string(r.UID)
	}
	return out, nil
}

// handlers only enqueue.
func (c *Controller) handlers(w *watched) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) { c.observe(w, nil, obj) },
		UpdateFunc: func(old, obj interface{}) {
			c.observe(w, old, obj)
		},
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			m, err := meta.Accessor(obj)
			if err != nil {
				return
			}
			// Its dependents may now be dangling; owners waiting for it may finish.
			c.enqueueDependents(m.GetUID())
			c.enqueueOwners(m.GetNamespace(), m.GetOwnerReferences())
		},
	}
}

func (c *Controller) observe(w *watched, old, obj interface{}) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	if len(m.GetOwnerReferences()) > 0 && m.GetDeletionTimestamp() == nil {
		c.queue.Add(item{kind: checkDependent, gvr: w.gvr, namespace: m.GetNamespace(), name: m.GetName()})
	}
	if m.GetDeletionTimestamp() != nil && hasGCFinalizer(m.GetFinalizers()) {
		c.queue.Add(item{kind: processOwner, gvr: w.gvr, namespace: m.GetNamespace(), name: m.GetName()})
	}
	refs := m.GetOwnerReferences()
	if old != nil {
		if om, err := meta.Accessor(old); err == nil {
			refs = append(slices.Clone(refs), om.GetOwnerReferences()...)
		}
	}
	c.enqueueOwners(m.GetNamespace(), refs)
}

func hasGCFinalizer(fins []string) bool {
	return slices.Contains(fins, metav1.FinalizerDeleteDependents) || slices.Contains(fins, metav1.FinalizerOrphanDependents)
}

// enqueueDependents queues every object naming uid as an owner.
func (c *Controller) enqueueDependents(uid types.UID) {
	for _, d := range c.dependents(uid) {
		c.queue.Add(item{kind: checkDependent, gvr: d.gvr, namespace: d.meta.GetNamespace(), name: d.meta.GetName()})
	}
}

// enqueueOwners queues the owners named by refs; the worker drops those
// not deleting with a collector finalizer.
func (c *Controller) enqueueOwners(ns string, refs []metav1.OwnerReference) {
	for _, r := range refs {
		gvr, namespaced, err := c.resolve(r)
		if err != nil {
			continue
		}
		ownerNS := ns
		if !namespaced {
			ownerNS = ""
		}
		c.queue.Add(item{kind: processOwner, gvr: gvr, namespace: ownerNS, name: r.Name})
	}
}

// resolve maps an ownerReference to the resource it names.
func (c *Controller) resolve(r metav1.OwnerReference) (schema.GroupVersionResource, bool, error) {
	gv, err := schema.ParseGroupVersion(r.APIVersion)
	if err != nil {
		return schema.GroupVersionResource{}, false, err
	}
	m, err := c.mapper.RESTMapping(gv.WithKind(r.Kind).GroupKind(), gv.Version)
	if err != nil {
		return schema.GroupVersionResource{}, false, err
	}
	return m.Resource, m.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

type dependent struct {
	gvr  schema.GroupVersionResource
	meta *metav1.PartialObjectMetadata
}

// dependents are the cached objects naming uid in their ownerReferences.
func (c *Controller) dependents(uid types.UID) []dependent {
	var out []dependent
	for _, w := range c.resources {
		objs, err := w.informer.GetIndexer().ByIndex(ownerUIDIndex, string(uid))
		if err != nil {
			continue
		}
		for _, o := range objs {
			if pm, ok := o.(*metav1.PartialObjectMetadata); ok {
				out = append(out, dependent{gvr: w.gvr, meta: pm})
			}
		}
	}
	return out
}

// Run starts the informers and workers and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	ctx, cancel := context.WithCancel(ctx)
	c.factory.Start(ctx.Done())
	// Shutdown waits for the informers, which stop when ctx ends.
	defer c.factory.Shutdown()
	defer cancel()
	synced := make([]cache.InformerSynced, 0, len(c.resources))
	for _, w := range c.resources {
		synced = append(synced, w.informer.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("garbage collector: caches did not sync")
	}
	c.log.Info("started", "resources", len(c.resources), "workers", c.opts.Workers)
	workers.Run(ctx, c.opts.Workers, c.queue, c.process)
	return nil
}

// process checks a dependent or processes an owner, retrying with backoff
// when that fails.
func (c *Controller) process(ctx context.Context, it item) {
	var err error
	switch it.kind {
	case checkDependent:
		err = c.syncDependent(ctx, it)
	case processOwner:
		err = c.syncOwner(ctx, it)
	}
	if err != nil {
		c.log.Debug("sync failed, retrying", "resource", it.gvr.String(), "namespace", it.namespace, "name", it.name, "err", err)
		c.queue.AddRateLimited(it)
		return
	}
	c.queue.Forget(it)
}

// cached returns the informer's copy of an object (nil when absent).
func (c *Controller) cached(gvr schema.GroupVersionResource, ns, name string) (*metav1.PartialObjectMetadata, error) {
	w, ok := c.resources[gvr]
	if !ok {
		return nil, fmt.Errorf("resource %s is not watched", gvr)
	}
	key := name
	if ns != "" {
		key = ns + "/" + name
	}
	obj, exists, err := w.informer.GetIndexer().GetByKey(key)
	if err != nil || !exists {
		return nil, err
	}
	pm, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in %s cache", obj, gvr)
	}
	return pm, nil
}

// ownerState classifies an owner reference.
type ownerState uint8

const (
	solid    ownerState = iota // exists and is not waiting for its dependents
	waiting                    // exists, deleting with foregroundDeletion
	dangling                   // gone, or replaced by an object with another UID
)

// classify decides an owner's state; a "gone" from the cache is confirmed
// with a live GET so informer lag never deletes a live object's dependents.
func (c *Controller) classify(ctx context.Context, depNS string, r metav1.OwnerReference) (ownerState, error) {
	gvr, namespaced, err := c.resolve(r)
	if err != nil {
		// A kind the server does not serve cannot be checked: keep the object.
		return solid, nil
	}
	ns := ""
	if namespaced {
		if depNS == "" {
			// A cluster-scoped dependent cannot have a namespaced owner.
			return dangling, nil
		}
		ns = depNS
	}
	owner, err := c.cached(gvr, ns, r.Name)
	if err != nil {
		return solid, err
	}
	if owner == nil || owner.UID != r.UID {
		owner, err = c.meta.Resource(gvr).Namespace(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return dangling, nil
		}
		if err != nil {
			return solid, fmt.Errorf("get owner %s %s/%s: %w", gvr.Resource, ns, r.Name, err)
		}
		if owner.UID != r.UID {
			return dangling, nil
		}
	}
	if owner.DeletionTimestamp != nil && slices.Contains(owner.Finalizers, metav1.FinalizerDeleteDependents) {
		return waiting, nil
	}
	return solid, nil
}

// syncDependent collects, or unlinks, an object whose owners may be gone.
func (c *Controller) syncDependent(ctx context.Context, it item) error {
	obj, err := c.cached(it.gvr, it.namespace, it.name)
	if err != nil || obj == nil {
		return err
	}
	if obj.DeletionTimestamp != nil || len(obj.OwnerReferences) == 0 {
		return nil
	}
	var solids, waitings, danglings []metav1.OwnerReference
	for _, r := range obj.OwnerReferences {
		st, err := c.classify(ctx, obj.Namespace, r)
		if err != nil {
			return err
		}
		switch st {
		case solid:
			solids = append(solids, r)
		case waiting:
			waitings = append(waitings, r)
		case dangling:
			danglings = append(danglings, r)
		}
	}
	client := c.meta.Resource(it.gvr).Namespace(it.namespace)
	switch {
	case len(solids) > 0:
		if len(waitings)+len(danglings) == 0 {
			return nil
		}
		// Another owner keeps it alive: only drop the refs to the others.
		return c.removeOwnerRefs(ctx, it.gvr, obj, append(waitings, danglings...))
	case len(waitings) > 0:
		c.log.Debug("deleting dependent of a foreground deletion", "resource", it.gvr.Resource, "namespace", obj.Namespace, "name", obj.Name)
		return c.delete(ctx, client, obj, metav1.DeletePropagationForeground)
	default:
		c.log.Debug("collecting dependent of deleted owners", "resource", it.gvr.Resource, "namespace", obj.Namespace, "name", obj.Name)
		return c.delete(ctx, client, obj, metav1.DeletePropagationBackground)
	}
}

func (c *Controller) delete(ctx context.Context, client metadata.ResourceInterface, obj *metav1.PartialObjectMetadata, policy metav1.DeletionPropagation) error {
	uid := obj.UID
	err := client.Delete(ctx, obj.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		// Gone, or replaced by a new object the next event will bring.
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	return nil
}

// syncOwner finishes a foreground or orphan deletion.
func (c *Controller) syncOwner(ctx context.Context, it item) error {
	owner, err := c.cached(it.gvr, it.namespace, it.name)
	if err != nil || owner == nil || owner.DeletionTimestamp == nil {
		return err
	}
	switch {
	case slices.Contains(owner.Finalizers, metav1.FinalizerOrphanDependents):
		// The cache may not have seen a dependent created just before the
		// delete: unlinking must see every one, so it reads live.
		deps, err := c.liveDependents(ctx, it.namespace, owner.UID)
		if err != nil {
			return err
		}
		for _, d := range deps {
			refs := slices.DeleteFunc(slices.Clone(d.meta.OwnerReferences), func(r metav1.OwnerReference) bool { return r.UID != owner.UID })
			if err := c.removeOwnerRefs(ctx, d.gvr, d.meta, refs); err != nil {
				return err
			}
		}
		return c.removeFinalizer(ctx, it.gvr, owner, metav1.FinalizerOrphanDependents)
	case slices.Contains(owner.Finalizers, metav1.FinalizerDeleteDependents):
		blocking := 0
		for _, d := range c.dependents(owner.UID) {
			if d.meta.DeletionTimestamp == nil {
				// Let the dependent check delete it (or unlink it if
				// another owner keeps it).
				c.queue.Add(item{kind: checkDependent, gvr: d.gvr, namespace: d.meta.Namespace, name: d.meta.Name})
			}
			if blocks(d.meta, owner.UID) {
				blocking++
			}
		}
		if blocking > 0 {
			// The dependents' delete/update events requeue the owner.
			return nil
		}
		// The cache says nothing blocks; confirm live before letting the
		// owner go, so a dependent the cache has not seen yet still blocks.
		deps, err := c.liveDependents(ctx, it.namespace, owner.UID)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if blocks(d.meta, owner.UID) {
				return fmt.Errorf("dependent %s %s/%s not yet in the cache", d.gvr.Resource, d.meta.Namespace, d.meta.Name)
			}
		}
		return c.removeFinalizer(ctx, it.gvr, owner, metav1.FinalizerDeleteDependents)
	}
	return nil
}

// blocks says whether obj's reference to owner has blockOwnerDeletion.
func blocks(obj *metav1.PartialObjectMetadata, owner types.UID) bool {
	for _, r := range obj.OwnerReferences {
		if r.UID == owner && r.BlockOwnerDeletion != nil && *r.BlockOwnerDeletion {
			return true
		}
	}
	return false
}

// liveDependents lists, from the API rather than the cache, the objects
// naming uid as an owner. A namespaced owner's dependents live in its
// namespace (a cluster-scoped object cannot have a namespaced owner); a
// cluster-scoped owner's may be anywhere.
func (c *Controller) liveDependents(ctx context.Context, ownerNS string, uid types.UID) ([]dependent, error) {
	var out []dependent
	for _, w := range c.resources {
		if ownerNS != "" && !w.namespaced {
			continue
		}
		list, err := c.meta.Resource(w.gvr).Namespace(ownerNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", w.gvr.Resource, err)
		}
		for i := range list.Items {
			for _, r := range list.Items[i].OwnerReferences {
				if r.UID == uid {
					out = append(out, dependent{gvr: w.gvr, meta: &list.Items[i]})
					break
				}
			}
		}
	}
	return out, nil
}

// removeOwnerRefs drops refs (matched by UID) from obj with a merge patch
// guarded by the object's resourceVersion; a conflict retries.
func (c *Controller) removeOwnerRefs(ctx context.Context, gvr schema.GroupVersionResource, obj *metav1.PartialObjectMetadata, refs []metav1.OwnerReference) error {
	drop := map[types.UID]bool{}
	for _, r := range refs {
		drop[r.UID] = true
	}
	keep := slices.DeleteFunc(slices.Clone(obj.OwnerReferences), func(r metav1.OwnerReference) bool { return drop[r.UID] })
	if len(keep) == len(obj.OwnerReferences) {
		return nil
	}
	var value interface{} = keep
	if len(keep) == 0 {
		value = nil
	}
	return c.patchMeta(ctx, gvr, obj, "ownerReferences", value)
}

func (c *Controller) removeFinalizer(ctx context.Context, gvr schema.GroupVersionResource, obj *metav1.PartialObjectMetadata, fin string) error {
	keep := slices.DeleteFunc(slices.Clone(obj.Finalizers), func(f string) bool { return f == fin })
	var value interface{} = keep
	if len(keep) == 0 {
		value = nil
	}
	if err := c.patchMeta(ctx, gvr, obj, "finalizers", value); err != nil {
		return err
	}
	c.log.Debug("removed finalizer", "finalizer", fin, "resource", gvr.Resource, "namespace", obj.Namespace, "name", obj.Name)
	return nil
}

// patchMeta sets one metadata field with a JSON merge patch that carries
// the cached resourceVersion and UID as preconditions.
func (c *Controller) patchMeta(ctx context.Context, gvr schema.GroupVersionResource, obj *metav1.PartialObjectMetadata, field string, value interface{}) error {
	patch, err := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{
		field: value, "resourceVersion": obj.ResourceVersion, "uid": obj.UID,
	}})
	if err != nil {
		return err
	}
	_, err = c.meta.Resource(gvr).Namespace(obj.Namespace).Patch(ctx, obj.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		// A conflict means the cache was stale: retry when it caught up.
		return fmt.Errorf("patch %s of %s %s/%s: %w", field, gvr.Resource, obj.Namespace, obj.Name, err)
	}
	return nil
}
