// Package daemonset is the DaemonSet controller: one pod of each
// DaemonSet on every node that should run it, as kube-controller-manager's
// daemon controller does, in the sample-controller shape.
//
//   - A node should run a DaemonSet's pod when the template's nodeName (if
//     any), nodeSelector and required node affinity match it and its
//     NoSchedule and NoExecute taints are tolerated, counting the
//     tolerations every daemon pod gets (not-ready, unreachable, disk,
//     memory and PID pressure, unschedulable; network-unavailable for host
//     network pods). A pod on a node that no longer should run it stays
//     while only NoSchedule taints say no, and goes otherwise.
//   - Pods are created, as upstream has since 1.12, without a node but with
//     a required node affinity naming their node (matchFields
//     metadata.name): the default scheduler binds them, so resources and
//     ports are accounted as for any pod. There is no direct binding.
//   - Failed daemon pods are deleted (and replaced), with a per-node
//     backoff so a node that keeps rejecting the pod is not hammered.
//   - Updates: RollingUpdate replaces at most maxUnavailable nodes' pods at
//     a time (deleting old pods; the manage step creates new ones), or with
//     maxSurge starts the new pod first and deletes the old one once the
//     new one is available; OnDelete waits for the user to delete pods.
//   - History: a ControllerRevision per template (see history.go), so
//     `kubectl rollout history|undo|status daemonset` work;
//     revisionHistoryLimit old revisions no pod runs are kept.
//   - Expectations keep a slow watch from making a node get two pods.
//   - Status: desiredNumberScheduled, currentNumberScheduled,
//     numberMisscheduled, numberReady, updatedNumberScheduled,
//     numberAvailable, numberUnavailable, observedGeneration.
//
// Pods bound to a node that was deleted are left to the pod garbage
// collector, as upstream does.
package daemonset

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
)

// BurstReplicas caps the pods one sync creates or deletes (upstream's).
const BurstReplicas = 250

var kind = appsv1.SchemeGroupVersion.WithKind("DaemonSet")

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many DaemonSets are synced at once (default 2,
	// kube-controller-manager's --concurrent-daemonset-syncs).
	Workers int
	// FailedPodBackoff is the first delay before a failed daemon pod on a
	// node is replaced again (default 1s, doubling to 15m).
	FailedPodBackoff time.Duration
	Logger           *slog.Logger
	Clock            clock.Clock
}

// Controller runs DaemonSets' pods.
type Controller struct {
	*controller.Base
	dsLister     appslisters.DaemonSetLister
	crLister     appslisters.ControllerRevisionLister
	podLister    corelisters.PodLister
	podIndex     cache.Indexer
	nodeLister   corelisters.NodeLister
	expectations *controller.Expectations
	podEvents    *controller.PodEvents
	pods         controller.PodControl
	failed       *flowcontrol.Backoff
	opts         Options
}

// New builds the controller on shared informers (the caller starts them).
func New(kube kubernetes.Interface, dsInformer appsinformers.DaemonSetInformer, crInformer appsinformers.ControllerRevisionInformer,
	podInformer coreinformers.PodInformer, nodeInformer coreinformers.NodeInformer, opts Options) (*Controller, error) {
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.FailedPodBackoff == 0 {
		opts.FailedPodBackoff = time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	base := controller.NewBase(kube, "daemonset", "daemonset-controller", opts.Workers, opts.Logger)
	base.WaitFor(dsInformer.Informer().HasSynced, crInformer.Informer().HasSynced, podInformer.Informer().HasSynced, nodeInformer.Informer().HasSynced)
	c := &Controller{
		Base:         base,
		dsLister:     dsInformer.Lister(),
		crLister:     crInformer.Lister(),
		podLister:    podInformer.Lister(),
		podIndex:     podInformer.Informer().GetIndexer(),
		nodeLister:   nodeInformer.Lister(),
		expectations: controller.NewExpectations(),
		pods:         controller.PodControl{Client: kube, Recorder: base.Recorder},
		failed:       flowcontrol.NewBackOffWithJitter(opts.FailedPodBackoff, 15*time.Minute, 0),
		opts:         opts,
	}
	c.failed.Clock = opts.Clock
	if err := controller.AddOwnerIndex(podInformer.Informer()); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	c.podEvents = &controller.PodEvents{Queue: c.Queue, Expectations: c.expectations, Owner: c.owner,
		Selecting: func(p *corev1.Pod) []string { return c.selecting(p.Namespace, p.Labels) }}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{dsInformer.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.Enqueue, UpdateFunc: func(_, o any) { c.Enqueue(o) }, DeleteFunc: c.ForgetDeleted(c.expectations)}},
		{crInformer.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.revisionChanged, UpdateFunc: func(_, o any) { c.revisionChanged(o) }, DeleteFunc: c.revisionChanged}},
		{podInformer.Informer(), c.podEvents.Handlers()},
		{nodeInformer.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.addNode, UpdateFunc: c.updateNode, DeleteFunc: c.deleteNode}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run waits for the caches, then syncs DaemonSets until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return c.Base.Run(ctx, c.sync, func(ctx context.Context) {
		// Forget the backoff of failed pods long gone, now and then.
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.failed.GC()
			}
		}
	})
}

// owner resolves a pod's controller reference to a DaemonSet.
func (c *Controller) owner(ns string, ref *metav1.OwnerReference) (string, int32, bool) {
	ds, ok := controller.Resolve(ref, kind.Kind, c.dsLister.DaemonSets(ns).Get)
	if !ok {
		return "", 0, false
	}
	return controller.Key(ds), ds.Spec.MinReadySeconds, true
}

// selecting are the keys of the DaemonSets whose selector matches lbls in
// ns.
func (c *Controller) selecting(ns string, lbls map[string]string) []string {
	dss, err := c.dsLister.DaemonSets(ns).List(labels.Everything())
	if err != nil {
		return nil
	}
	var keys []string
	for _, ds := range controller.Selecting(dss, func(ds *appsv1.DaemonSet) *metav1.LabelSelector { return ds.Spec.Selector }, lbls) {
		keys = append(keys, controller.Key(ds))
	}
	return keys
}

func (c *Controller) revisionChanged(obj any) {
	cr, ok := controller.Unwrap[*appsv1.ControllerRevision](obj)
	if !ok {
		return
	}
	if ref := metav1.GetControllerOfNoCopy(cr); ref != nil {
		if key, _, ok := c.owner(cr.Namespace, ref); ok {
			c.Queue.Add(key)
		}
		return
	}
	for _, k := range c.selecting(cr.Namespace, cr.Labels) {
		c.Queue.Add(k)
	}
}

func (c *Controller) allDaemonSets() []*appsv1.DaemonSet {
	dss, err := c.dsLister.List(labels.Everything())
	if err != nil {
		return nil
	}
	return dss
}

// addNode wakes the DaemonSets that should run on the new node.
func (c *Controller) addNode(obj any) {
	node := obj.(*corev1.Node)
	for _, ds := range c.allDaemonSets() {
		if run, _ := nodeShouldRun(node, ds); run {
			c.Enqueue(ds)
		}
	}
}

// updateNode wakes the DaemonSets for which the change of the node
// changes whether they should run or keep running there.
func (c *Controller) updateNode(old, cur any) {
	o, n := old.(*corev1.Node), cur.(*corev1.Node)
	if apiequality.Semantic.DeepEqual(o.Labels, n.Labels) && apiequality.Semantic.DeepEqual(o.Spec, n.Spec) {
		return // a status heartbeat: nothing a DaemonSet looks at
	}
	for _, ds := range c.allDaemonSets() {
		or, oc := nodeShouldRun(o, ds)
		nr, nc := nodeShouldRun(n, ds)
		if or != nr || oc != nc {
			c.Enqueue(ds)
		}
	}
}

// deleteNode resyncs every DaemonSet: their status counts change (the
// pods bound there are the pod garbage collector's).
func (c *Controller) deleteNode(any) {
	for _, ds := range c.allDaemonSets() {
		c.Enqueue(ds)
	}
}

func (c *Controller) canAdopt(ds *appsv1.DaemonSet) func(context.Context) error {
	return controller.RecheckDeletion(ds.UID, func(ctx context.Context) (metav1.Object, error) {
		return c.Kube.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
	})
}

// daemonPods returns the pods ds owns (adopting and releasing by
// selector), finished pods being deleted left out.
func (c *Controller) daemonPods(ctx context.Context, ds *appsv1.DaemonSet) ([]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, err
	}
	all, err := controller.Candidates[*corev1.Pod](c.podIndex, ds.UID, ds.Namespace)
	if err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	for _, p := range all {
		finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		if finished && p.DeletionTimestamp != nil {
			continue
		}
		pods = append(pods, p)
	}
	m := &controller.RefManager{Controller: ds, Kind: kind, Selector: sel, CanAdopt: c.canAdopt(ds)}
	return controller.Claim(ctx, m, pods, controller.PodPatcher(c.Kube))
}

// byNode groups pods by the node they run on or are meant for.
func (c *Controller) byNode(pods []*corev1.Pod) map[string][]*corev1.Pod {
	out := map[string][]*corev1.Pod{}
	for _, p := range pods {
		node, err := targetNode(p)
		if err != nil {
			c.Log.Warn("daemon pod without a node", "pod", p.Namespace+"/"+p.Name)
			continue
		}
		out[node] = append(out[node], p)
	}
	return out
}

// sync makes one DaemonSet's pods match its nodes and template, and
// writes its status.
func (c *Controller) sync(ctx context.Context, key string) error {
	cached, ok, err := controller.Get(c.Base, key, func(ns, name string) (*appsv1.DaemonSet, error) { return c.dsLister.DaemonSets(ns).Get(name) },
		func() { c.expectations.Delete(key) })
	if !ok {
		return err
	}
	ds := cached.DeepCopy()
	nodes, err := c.nodeLister.List(labels.Everything())
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(ds.Spec.Selector, &metav1.LabelSelector{}) {
		c.Recorder.Eventf(ds, corev1.EventTypeWarning, "SelectingAll", "This daemon set is selecting all pods. A non-empty selector is required.")
		return nil
	}
	if ds.DeletionTimestamp != nil {
		return nil
	}
	cur, old, err := c.constructHistory(ctx, ds)
	if err != nil {
		return fmt.Errorf("history of daemonset %s: %w", key, err)
	}
	hash := cur.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
	if !c.expectations.Satisfied(key) {
		// Own writes not yet seen: only report.
		return c.updateStatus(ctx, ds, nodes, hash, false)
	}
	if err := c.manage(ctx, ds, nodes, hash); err != nil {
		return err
	}
	if c.expectations.Satisfied(key) && ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if err := c.rollingUpdate(ctx, ds, nodes, hash); err != nil {
			return err
		}
	}
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return err
	}
	if err := c.cleanupHistory(ctx, ds, old, pods); err != nil {
		return err
	}
	return c.updateStatus(ctx, ds, nodes, hash, true)
}
