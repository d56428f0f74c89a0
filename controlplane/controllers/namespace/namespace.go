// Package namespace is the namespace controller: it empties a namespace
// marked for deletion and then releases it by removing the "kubernetes"
// finalizer from spec.finalizers (PUT namespaces/<name>/finalize), after
// which the API server removes the namespace.
//
// Like upstream's namespaced-resources deleter it discovers every
// namespaced resource that can be listed and deleted, deletes what it holds
// (object by object, a few at a time, with background propagation), and polls (with backoff) until
// every list is empty, reporting progress in the namespace's status
// conditions (NamespaceContentRemaining, NamespaceFinalizersRemaining,
// NamespaceDeletionDiscoveryFailure, NamespaceDeletionContentFailure).
//
// Pods are the one kind that may linger after a delete: a pod bound to a
// node is only marked, and its node agent removes it after the grace
// period. Upstream's namespace controller just waits for the kubelet (it
// requeues after the estimated grace), and relies on the pod garbage
// collector to force-delete terminating pods that are not bound to a node
// or whose node no longer exists. skep has no pod GC yet, so this
// controller does that part itself: it deletes with gracePeriodSeconds=0
// a terminating pod in the namespace when
//   - it is not bound to a node (no agent will ever act on it), or
//   - its node object does not exist (podgc's "orphaned" rule), or
//   - its deletionTimestamp (mark time + grace) is ForceAfter in the past:
//     the agent had the whole grace period and more; a dead or partitioned
//     agent must not keep a namespace from going away forever. Upstream
//     would wait for the node lifecycle controller here; skep chooses
//     bounded namespace deletion.
package namespace

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many namespaces are processed at once (default 2).
	Workers int
	// ForceAfter is how long past a pod's deletionTimestamp (which already
	// includes its grace period) the controller waits for the node agent
	// before deleting the pod with grace 0 (default 15s).
	ForceAfter time.Duration
	// MaxRetryDelay caps the backoff between passes over a namespace that
	// still has content (default 2s).
	MaxRetryDelay time.Duration
	Logger        *slog.Logger
}

// Controller empties and finalizes namespaces marked for deletion.
type Controller struct {
	kube   kubernetes.Interface
	meta   metadata.Interface
	disc   discovery.DiscoveryInterface
	lister corelisters.NamespaceLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	// limiter backs off polling of a namespace whose content lingers.
	limiter workqueue.TypedRateLimiter[string]
	opts    Options
	log     *slog.Logger
	now     func() time.Time
}

// New wires a controller to a namespace informer; the caller starts the
// informer factory.
func New(kube kubernetes.Interface, meta metadata.Interface, informer coreinformers.NamespaceInformer, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.ForceAfter <= 0 {
		opts.ForceAfter = 15 * time.Second
	}
	if opts.MaxRetryDelay <= 0 {
		opts.MaxRetryDelay = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Controller{
		kube: kube, meta: meta, disc: kube.Discovery(),
		lister: informer.Lister(), synced: informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](10*time.Millisecond, opts.MaxRetryDelay),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "namespace"}),
		limiter: workqueue.NewTypedItemExponentialFailureRateLimiter[string](10*time.Millisecond, opts.MaxRetryDelay),
		opts:    opts, log: opts.Logger.With("controller", "namespace"), now: time.Now,
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj interface{}) { c.enqueue(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("namespace informer handler: %w", err)
	}
	return c, nil
}

// enqueue queues namespaces being deleted; handlers do nothing else.
func (c *Controller) enqueue(obj interface{}) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok || ns.DeletionTimestamp == nil {
		return
	}
	c.queue.Add(ns.Name)
}

// Run processes namespaces until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("namespace controller: caches did not sync")
	}
	c.log.Info("started", "workers", c.opts.Workers)
	workers.Run(ctx, c.opts.Workers, c.queue, c.process)
	return nil
}

// process makes a pass over a namespace and decides when to look again.
func (c *Controller) process(ctx context.Context, name string) {
	again, err := c.Sync(ctx, name)
	switch {
	case err != nil:
		c.log.Info("sync failed, retrying", "namespace", name, "err", err)
		c.queue.AddRateLimited(name)
	case again > 0:
		// Content remains: poll with backoff, but never later than the
		// moment a pod becomes eligible for force deletion.
		c.queue.AddAfter(name, min(c.limiter.When(name), again))
	default:
		c.limiter.Forget(name)
		c.queue.Forget(name)
	}
}

// Sync makes one pass over a namespace. It returns again > 0 when content
// remains and the namespace should be looked at again (the value is the
// longest sensible wait), and an error when a request failed.
func (c *Controller) Sync(ctx context.Context, name string) (again time.Duration, err error) {
	cached, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if cached.DeletionTimestamp == nil || !slices.Contains(cached.Spec.Finalizers, corev1.FinalizerKubernetes) {
		return 0, nil
	}
	ns := cached.DeepCopy()

	resources, discErr := c.deletableResources()
	if discErr != nil && len(resources) == 0 {
		c.setConditions(ctx, ns, []corev1.NamespaceCondition{cond(corev1.NamespaceDeletionDiscoveryFailure, true, "DiscoveryFailed", discErr.Error())})
		return 0, fmt.Errorf("discover resources: %w", discErr)
	}
	rep := c.deleteContent(ctx, name, resources)
	conds := []corev1.NamespaceCondition{
		cond(corev1.NamespaceDeletionDiscoveryFailure, discErr != nil, reasonIf(discErr != nil, "DiscoveryFailed", "ResourcesDiscovered"), errString(discErr)),
		cond(corev1.NamespaceDeletionContentFailure, len(rep.errs) > 0, reasonIf(len(rep.errs) > 0, "ContentDeletionFailed", "ContentDeleted"), strings.Join(rep.errs, "; ")),
		cond(corev1.NamespaceContentRemaining, len(rep.remaining) > 0, reasonIf(len(rep.remaining) > 0, "SomeResourcesRemain", "ContentRemoved"), countsMessage("Some resources are remaining: ", rep.remaining, " resource instances")),
		cond(corev1.NamespaceFinalizersRemaining, len(rep.finalizers) > 0, reasonIf(len(rep.finalizers) > 0, "SomeFinalizersRemain", "ContentHasNoFinalizers"), countsMessage("Some content in the namespace has finalizers remaining: ", rep.finalizers, " resource instances")),
	}
	ns = c.setConditions(ctx, ns, conds)
	if discErr != nil || len(rep.errs) > 0 {
		return 0, fmt.Errorf("delete content of %s: %s", name, strings.Join(append(rep.errs, errString(discErr)), "; "))
	}
	if len(rep.remaining) > 0 {
		again = c.opts.MaxRetryDelay
		if !rep.nextForce.IsZero() {
			if d := rep.nextForce.Sub(c.now()); d < again {
				again = max(d, 10*time.Millisecond)
			}
		}
		return again, nil
	}
	return 0, c.finalize(ctx, ns)
}

// finalize removes the kubernetes finalizer from spec.finalizers.
func (c *Controller) finalize(ctx context.Context, ns *corev1.Namespace) error {
	ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
	_, err := c.kube.CoreV1().Namespaces().Finalize(context.WithoutCancel(ctx), ns, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finalize namespace %s: %w", ns.Name, err)
	}
	c.log.Info("namespace emptied and finalized", "namespace", ns.Name)
	return nil
}

// deletableResources lists the namespaced resources that can be listed and
// deleted. A partial discovery failure still returns what was found.
func (c *Controller) deletableResources() ([]resourceInfo, error) {
	lists, err := c.disc.ServerPreferredNamespacedResources()
	var out []resourceInfo
	for _, l := range lists {
		gv, perr := schema.ParseGroupVersion(l.GroupVersion)
		if perr != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !r.Namespaced || !slices.Contains(r.Verbs, "list") {
				continue
			}
			if !slices.Contains(r.Verbs, "delete") {
				continue
			}
			out = append(out, resourceInfo{gvr: gv.WithResource(r.Name)})
		}
	}
	return out, err
}

type resourceInfo struct {
	gvr schema.GroupVersionResource
}

// contentReport is what one deletion pass found.
type contentReport struct {
	remaining  map[string]int // resource → objects still present
	finalizers map[string]int // resource → objects held by finalizers
	errs       []string
	nextForce  time.Time // earliest moment a lingering pod may be forced
}

// deleteContent deletes everything in the namespace and reports what is
// still there afterwards.
func (c *Controller) deleteContent(ctx context.Context, ns string, resources []resourceInfo) contentReport {
	rep := contentReport{remaining: map[string]int{}, finalizers: map[string]int{}}
	background := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &background}
	for _, ri := range resources {
		client := c.meta.Resource(ri.gvr).Namespace(ns)
		name := ri.gvr.GroupResource().String()
		list, err := client.List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
			continue
		}
		if err != nil {
			rep.errs = append(rep.errs, fmt.Sprintf("list %s: %v", name, err))
			continue
		}
		live := 0
		for _, it := range list.Items {
			if it.DeletionTimestamp == nil {
				live++
			}
		}
		if live > 0 {
			err = deleteEach(ctx, client, list.Items, opts)
			if err != nil && !apierrors.IsNotFound(err) {
				rep.errs = append(rep.errs, fmt.Sprintf("delete %s: %v", name, err))
				continue
			}
			if list, err = client.List(ctx, metav1.ListOptions{}); err != nil {
				rep.errs = append(rep.errs, fmt.Sprintf("list %s: %v", name, err))
				continue
			}
		}
		if ri.gvr.Group == "" && ri.gvr.Resource == "pods" && len(list.Items) > 0 {
			n, next, err := c.forceLingeringPods(ctx, ns, list.Items)
			if err != nil {
				rep.errs = append(rep.errs, err.Error())
			}
			if !next.IsZero() && (rep.nextForce.IsZero() || next.Before(rep.nextForce)) {
				rep.nextForce = next
			}
			if left := len(list.Items) - n; left > 0 {
				rep.remaining[name] = left
			}
		} else if len(list.Items) > 0 {
			rep.remaining[name] = len(list.Items)
		}
		if rep.remaining[name] > 0 {
			for _, it := range list.Items {
				if len(it.Finalizers) > 0 {
					rep.finalizers[name]++
				}
			}
		}
	}
	return rep
}

// forceLingeringPods deletes with grace 0 the terminating pods no node will
// remove (see the package doc). It returns how many it removed and the
// earliest time another pod becomes eligible.
func (c *Controller) forceLingeringPods(ctx context.Context, ns string, pods []metav1.PartialObjectMetadata) (int, time.Time, error) {
	podClient := c.kube.CoreV1().Pods(ns)
	zero := int64(0)
	var next time.Time
	removed := 0
	nodeExists := map[string]bool{}
	for _, pm := range pods {
		if pm.DeletionTimestamp == nil || len(pm.Finalizers) > 0 {
			continue
		}
		// Metadata does not carry spec.nodeName: read the pod.
		pod, err := podClient.Get(ctx, pm.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			removed++
			continue
		}
		if err != nil {
			return removed, next, fmt.Errorf("get pod %s/%s: %w", ns, pm.Name, err)
		}
		force, at, err := c.shouldForce(ctx, pod, nodeExists)
		if err != nil {
			return removed, next, err
		}
		if !force {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		uid := pod.UID
		err = podClient.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return removed, next, fmt.Errorf("force delete pod %s/%s: %w", ns, pod.Name, err)
		}
		c.log.Info("force-deleted lingering pod", "namespace", ns, "pod", pod.Name, "node", pod.Spec.NodeName)
		removed++
	}
	return removed, next, nil
}

// deleteParallel is how many deletes of one namespace's content are in
// flight at once: enough for the store to group their commits.
const deleteParallel = 8

// deleteEach deletes the objects not yet marked, a few at a time. Not a
// deletecollection: its answer is every deleted object whole, and 5,000
// ConfigMaps of 1 MB would be a 5 GB body read by this process, which in
// skep server is the API server's own; each delete's answer is one object.
func deleteEach(ctx context.Context, client metadata.ResourceInterface, items []metav1.PartialObjectMetadata, opts metav1.DeleteOptions) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deleteParallel)
	for i := range items {
		if items[i].DeletionTimestamp != nil {
			continue
		}
		name := items[i].Name
		g.Go(func() error {
			if err := client.Delete(gctx, name, opts); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			return nil
		})
	}
	return g.Wait()
}

// shouldForce decides whether a terminating pod may be deleted with grace
// 0 now; if not, at is when it may.
func (c *Controller) shouldForce(ctx context.Context, pod *corev1.Pod, nodeExists map[string]bool) (force bool, at time.Time, err error) {
	if pod.Spec.NodeName == "" {
		return true, time.Time{}, nil
	}
	exists, ok := nodeExists[pod.Spec.NodeName]
	if !ok {
		_, err := c.kube.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			exists = false
		case err != nil:
			return false, time.Time{}, fmt.Errorf("get node %s: %w", pod.Spec.NodeName, err)
		default:
			exists = true
		}
		nodeExists[pod.Spec.NodeName] = exists
	}
	if !exists {
		return true, time.Time{}, nil
	}
	at = pod.DeletionTimestamp.Add(c.opts.ForceAfter)
	return !c.now().Before(at), at, nil
}

// setConditions writes the deletion conditions when they changed and
// returns the namespace to continue with.
func (c *Controller) setConditions(ctx context.Context, ns *corev1.Namespace, conds []corev1.NamespaceCondition) *corev1.Namespace {
	changed := false
	for _, nc := range conds {
		i := slices.IndexFunc(ns.Status.Conditions, func(x corev1.NamespaceCondition) bool { return x.Type == nc.Type })
		if i < 0 {
			nc.LastTransitionTime = metav1.NewTime(c.now())
			ns.Status.Conditions = append(ns.Status.Conditions, nc)
			changed = true
			continue
		}
		old := ns.Status.Conditions[i]
		if old.Status != nc.Status || old.Reason != nc.Reason || old.Message != nc.Message {
			nc.LastTransitionTime = old.LastTransitionTime
			if old.Status != nc.Status {
				nc.LastTransitionTime = metav1.NewTime(c.now())
			}
			ns.Status.Conditions[i] = nc
			changed = true
		}
	}
	if !changed {
		return ns
	}
	updated, err := c.kube.CoreV1().Namespaces().UpdateStatus(ctx, ns, metav1.UpdateOptions{})
	if err != nil {
		// Conditions are informative only; the next pass rewrites them.
		c.log.Debug("update namespace conditions", "namespace", ns.Name, "err", err)
		return ns
	}
	return updated
}

func cond(t corev1.NamespaceConditionType, status bool, reason, msg string) corev1.NamespaceCondition {
	s := corev1.ConditionFalse
	if status {
		s = corev1.ConditionTrue
	}
	return corev1.NamespaceCondition{Type: t, Status: s, Reason: reason, Message: msg}
}

func reasonIf(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// countsMessage renders {"pods": 2} as upstream does: "pods. has 2".
func countsMessage(prefix string, counts map[string]int, suffix string) string {
	if len(counts) == 0 {
		return ""
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s has %d%s", k, counts[k], suffix)
	}
	return prefix + strings.Join(parts, ", ")
}
