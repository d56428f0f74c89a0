// Package replicaset is the ReplicaSet controller: it keeps as many active
// pods as each ReplicaSet asks for, and reports what it sees in the
// ReplicaSet's status. It is kube-controller-manager's replicaset
// controller in the sample-controller shape:
//
//   - Pods are created from the template with a controller reference to
//     the ReplicaSet, in slow-start batches (1, 2, 4, …: a template that
//     cannot be created fails once, not replicas times) and at most
//     BurstReplicas per sync.
//   - Pods are claimed by selector (package controller's RefManager):
//     orphans that match are adopted, owned pods that no longer match are
//     released.
//   - Expectations: after creating or deleting, a ReplicaSet is not
//     managed again until the informer has shown those creations and
//     deletions, so a slow watch never makes it create or delete twice.
//   - On scale-down the pods to delete are ranked as upstream ranks them:
//     unscheduled, then pending, then not ready, then by deletion cost,
//     then those doubled up on a node with pods of sibling ReplicaSets (of
//     the same Deployment), then the most recently ready, the most
//     restarted, the youngest.
//   - Status: replicas (active pods), fullyLabeledReplicas, readyReplicas,
//     availableReplicas (ready for minReadySeconds; the ReplicaSet is
//     resynced when a pod becomes available), observedGeneration, and the
//     ReplicaFailure condition when creating or deleting fails.
package replicaset

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
)

// BurstReplicas is how many pods one sync creates or deletes at most
// (upstream's): the rest wait for the watch to show these.
const BurstReplicas = 500

// controllerUIDIndex indexes ReplicaSets by the uid of their controller,
// to find a Deployment's ReplicaSets.
const controllerUIDIndex = "controllerUID"

var kind = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many ReplicaSets are synced at once (default 5,
	// kube-controller-manager's --concurrent-replicaset-syncs).
	Workers int
	// BurstReplicas caps the pods one sync creates or deletes (default
	// BurstReplicas).
	BurstReplicas int
	Logger        *slog.Logger
	// Clock is the time availability is judged at (tests set it).
	Clock clock.Clock
}

// Controller keeps ReplicaSets' pods.
type Controller struct {
	*controller.Base
	rsLister     appslisters.ReplicaSetLister
	rsIndexer    cache.Indexer
	podLister    corelisters.PodLister
	podIndex     cache.Indexer
	expectations *controller.Expectations
	podEvents    *controller.PodEvents
	pods         controller.PodControl
	opts         Options
}

// New builds the controller on shared informers (the caller starts them).
func New(kube kubernetes.Interface, rsInformer appsinformers.ReplicaSetInformer, podInformer coreinformers.PodInformer, opts Options) (*Controller, error) {
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if opts.BurstReplicas == 0 {
		opts.BurstReplicas = BurstReplicas
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	base := controller.NewBase(kube, "replicaset", "replicaset-controller", opts.Workers, opts.Logger)
	base.WaitFor(rsInformer.Informer().HasSynced, podInformer.Informer().HasSynced)
	c := &Controller{
		Base:         base,
		rsLister:     rsInformer.Lister(),
		rsIndexer:    rsInformer.Informer().GetIndexer(),
		podLister:    podInformer.Lister(),
		podIndex:     podInformer.Informer().GetIndexer(),
		expectations: controller.NewExpectations(),
		pods:         controller.PodControl{Client: kube, Recorder: base.Recorder},
		opts:         opts,
	}
	if err := rsInformer.Informer().AddIndexers(cache.Indexers{controllerUIDIndex: indexByControllerUID}); err != nil {
		return nil, fmt.Errorf("replicaset index: %w", err)
	}
	if err := controller.AddOwnerIndex(podInformer.Informer()); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	if _, err := rsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.Enqueue,
		UpdateFunc: c.updateRS,
		DeleteFunc: c.ForgetDeleted(c.expectations),
	}); err != nil {
		return nil, err
	}
	c.podEvents = &controller.PodEvents{Queue: c.Queue, Expectations: c.expectations, Owner: c.owner, Selecting: c.selecting}
	if _, err := podInformer.Informer().AddEventHandler(c.podEvents.Handlers()); err != nil {
		return nil, err
	}
	return c, nil
}

func indexByControllerUID(obj any) ([]string, error) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return nil, nil
	}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
		return []string{string(ref.UID)}, nil
	}
	return nil, nil
}

// Run waits for the caches, then syncs ReplicaSets until ctx ends.
func (c *Controller) Run(ctx context.Context) error { return c.Base.Run(ctx, c.sync) }

func (c *Controller) updateRS(old, cur any) {
	o, n := old.(*appsv1.ReplicaSet), cur.(*appsv1.ReplicaSet)
	if o.UID != n.UID {
		// Deleted and recreated under one name between two events.
		c.ForgetDeleted(c.expectations)(cache.DeletedFinalStateUnknown{Key: controller.Key(o), Obj: o})
	}
	c.Enqueue(n)
}

// owner resolves a pod's controller reference to a ReplicaSet.
func (c *Controller) owner(ns string, ref *metav1.OwnerReference) (string, int32, bool) {
	rs, ok := controller.Resolve(ref, kind.Kind, c.rsLister.ReplicaSets(ns).Get)
	if !ok {
		return "", 0, false
	}
	return controller.Key(rs), rs.Spec.MinReadySeconds, true
}

// selecting are the ReplicaSets whose selector matches an orphan pod.
func (c *Controller) selecting(pod *corev1.Pod) []string {
	rss, err := c.rsLister.GetPodReplicaSets(pod)
	if err != nil {
		return nil
	}
	keys := make([]string, len(rss))
	for i, rs := range rss {
		keys[i] = controller.Key(rs)
	}
	return keys
}

// sync brings one ReplicaSet's pods to its replicas (when its
// expectations are met) and writes its status.
func (c *Controller) sync(ctx context.Context, key string) error {
	rs, ok, err := controller.Get(c.Base, key, func(ns, name string) (*appsv1.ReplicaSet, error) { return c.rsLister.ReplicaSets(ns).Get(name) },
		func() { c.expectations.Delete(key) })
	if !ok {
		return err
	}
	ns := rs.Namespace
	needsSync := c.expectations.Satisfied(key)
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		c.Log.Error("invalid selector; not syncing", "replicaset", key, "err", err)
		return nil
	}
	// Its pods and the namespace's orphans, not only the selected ones:
	// an owned pod whose labels changed must be released.
	all, err := controller.Candidates[*corev1.Pod](c.podIndex, rs.UID, ns)
	if err != nil {
		return err
	}
	pods, err := c.claimPods(ctx, rs, sel, controller.FilterActivePods(all))
	if err != nil {
		return err
	}
	var manageErr error
	if needsSync && rs.DeletionTimestamp == nil {
		manageErr = c.manageReplicas(ctx, key, pods, rs)
	}
	rs = rs.DeepCopy()
	updated, err := c.updateStatus(ctx, rs, calculateStatus(rs, pods, manageErr, c.opts.Clock.Now()))
	if err != nil {
		return err
	}
	// All ready but not yet all available: look again when they are.
	if manageErr == nil && updated.Spec.MinReadySeconds > 0 && updated.Spec.Replicas != nil &&
		updated.Status.ReadyReplicas == *updated.Spec.Replicas && updated.Status.AvailableReplicas != *updated.Spec.Replicas {
		c.Queue.AddAfter(key, time.Duration(updated.Spec.MinReadySeconds)*time.Second)
	}
	return manageErr
}

func (c *Controller) claimPods(ctx context.Context, rs *appsv1.ReplicaSet, sel labels.Selector, pods []*corev1.Pod) ([]*corev1.Pod, error) {
	m := &controller.RefManager{
		Controller: rs, Kind: kind, Selector: sel,
		CanAdopt: controller.RecheckDeletion(rs.UID, func(ctx context.Context) (metav1.Object, error) {
			return c.Kube.AppsV1().ReplicaSets(rs.Namespace).Get(ctx, rs.Name, metav1.GetOptions{})
		}),
	}
	return controller.Claim(ctx, m, pods, controller.PodPatcher(c.Kube))
}

// manageReplicas creates or deletes pods so that len(pods) moves toward
// spec.replicas, recording expectations first.
func (c *Controller) manageReplicas(ctx context.Context, key string, pods []*corev1.Pod, rs *appsv1.ReplicaSet) error {
	diff := len(pods) - int(*rs.Spec.Replicas)
	switch {
	case diff < 0:
		n := min(-diff, c.opts.BurstReplicas)
		c.expectations.ExpectCreations(key, n)
		ref := metav1.NewControllerRef(rs, kind)
		_, err := c.pods.CreatePods(ctx, c.expectations, key, rs.Namespace, n,
			func(int) *corev1.Pod { return controller.NewPod(&rs.Spec.Template, rs, ref) }, rs)
		return err
	case diff > 0:
		n := min(diff, c.opts.BurstReplicas)
		related, err := c.siblingPods(rs)
		if err != nil {
			return err
		}
		victims := podsToDelete(pods, related, n, c.opts.Clock.Now())
		c.expectations.ExpectDeletions(key, controller.PodKeys(victims))
		return c.pods.DeletePods(ctx, c.expectations, key, rs.Namespace, victims, rs)
	}
	return nil
}

// siblingPods are the pods of every ReplicaSet with the same controller
// as rs (a Deployment's old and new ReplicaSets), which rank rs's pods
// for deletion: doubled-up nodes go first.
func (c *Controller) siblingPods(rs *appsv1.ReplicaSet) ([]*corev1.Pod, error) {
	ref := metav1.GetControllerOfNoCopy(rs)
	if ref == nil {
		return nil, nil
	}
	objs, err := c.rsIndexer.ByIndex(controllerUIDIndex, string(ref.UID))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*corev1.Pod
	for _, o := range objs {
		sib := o.(*appsv1.ReplicaSet)
		sel, err := metav1.LabelSelectorAsSelector(sib.Spec.Selector)
		if err != nil {
			continue
		}
		pods, err := c.podLister.Pods(sib.Namespace).List(sel)
		if err != nil {
			return nil, err
		}
		for _, p := range pods {
			if !seen[string(p.UID)] {
				seen[string(p.UID)] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// podsToDelete picks the n pods of pods to delete first; related ranks
// them by how many active related pods share their node.
func podsToDelete(pods, related []*corev1.Pod, n int, now time.Time) []*corev1.Pod {
	if n >= len(pods) {
		return pods
	}
	onNode := map[string]int{}
	for _, p := range related {
		if controller.IsPodActive(p) {
			onNode[p.Spec.NodeName]++
		}
	}
	ranked := controller.RankedPods{Pods: append([]*corev1.Pod(nil), pods...), Rank: make([]int, len(pods)), Now: now}
	for i, p := range ranked.Pods {
		ranked.Rank[i] = onNode[p.Spec.NodeName]
	}
	sort.Sort(ranked)
	return ranked.Pods[:n]
}

// calculateStatus is the status the ReplicaSet's pods give it.
func calculateStatus(rs *appsv1.ReplicaSet, pods []*corev1.Pod, manageErr error, now time.Time) appsv1.ReplicaSetStatus {
	st := *rs.Status.DeepCopy()
	tmpl := labels.Set(rs.Spec.Template.Labels).AsSelectorPreValidated()
	var full, ready, available int32
	for _, p := range pods {
		if tmpl.Matches(labels.Set(p.Labels)) {
			full++
		}
		if controller.IsPodReady(p) {
			ready++
			if controller.IsPodAvailable(p, rs.Spec.MinReadySeconds, now) {
				available++
			}
		}
	}
	failure := condition(st, appsv1.ReplicaSetReplicaFailure)
	switch {
	case manageErr != nil && failure == nil:
		reason := ""
		if diff := len(pods) - int(*rs.Spec.Replicas); diff < 0 {
			reason = "FailedCreate"
		} else if diff > 0 {
			reason = "FailedDelete"
		}
		st.Conditions = append(st.Conditions, appsv1.ReplicaSetCondition{Type: appsv1.ReplicaSetReplicaFailure,
			Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now), Reason: reason, Message: manageErr.Error()})
	case manageErr == nil && failure != nil:
		st.Conditions = removeCondition(st.Conditions, appsv1.ReplicaSetReplicaFailure)
	}
	st.Replicas = int32(len(pods))
	st.FullyLabeledReplicas = full
	st.ReadyReplicas = ready
	st.AvailableReplicas = available
	return st
}

func condition(st appsv1.ReplicaSetStatus, t appsv1.ReplicaSetConditionType) *appsv1.ReplicaSetCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func removeCondition(cs []appsv1.ReplicaSetCondition, t appsv1.ReplicaSetConditionType) []appsv1.ReplicaSetCondition {
	var out []appsv1.ReplicaSetCondition
	for _, c := range cs {
		if c.Type != t {
			out = append(out, c)
		}
	}
	return out
}

// updateStatus writes st (with the generation it was computed for) unless
// it is what is stored.
func (c *Controller) updateStatus(ctx context.Context, rs *appsv1.ReplicaSet, st appsv1.ReplicaSetStatus) (*appsv1.ReplicaSet, error) {
	if rs.Status.Replicas == st.Replicas && rs.Status.FullyLabeledReplicas == st.FullyLabeledReplicas &&
		rs.Status.ReadyReplicas == st.ReadyReplicas && rs.Status.AvailableReplicas == st.AvailableReplicas &&
		rs.Generation == rs.Status.ObservedGeneration && equalConditions(rs.Status.Conditions, st.Conditions) {
		return rs, nil
	}
	st.ObservedGeneration = rs.Generation
	client := c.Kube.AppsV1().ReplicaSets(rs.Namespace)
	return controller.WriteStatus(rs, func(rs *appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
		rs.Status = st
		return client.UpdateStatus(ctx, rs, metav1.UpdateOptions{})
	}, func() (*appsv1.ReplicaSet, error) { return client.Get(ctx, rs.Name, metav1.GetOptions{}) })
}

func equalConditions(a, b []appsv1.ReplicaSetCondition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
