// Package deployment is the Deployment controller: it rolls a
// Deployment's pod template out through ReplicaSets, one per template
// (named <deployment>-<pod-template-hash>, the hash also labelling and
// selecting its pods), as kube-controller-manager's deployment controller
// does, in the sample-controller shape.
//
//   - RollingUpdate: the new ReplicaSet is scaled up while the total stays
//     within replicas+maxSurge, old ones are scaled down while at least
//     replicas-maxUnavailable pods stay available (pods ready for
//     minReadySeconds); unhealthy old pods go first. Recreate: old
//     ReplicaSets are scaled to 0, and once none of their pods runs the
//     new one is scaled up.
//   - Scaling a Deployment during a rollout spreads the change over its
//     active ReplicaSets in proportion to their sizes.
//   - Revisions: the deployment.kubernetes.io/revision annotation numbers
//     the ReplicaSets (revision-history keeps the numbers a ReplicaSet had
//     before a rollback made it the newest again); the Deployment carries
//     the current one. `kubectl rollout history` reads them and `kubectl
//     rollout undo` (which copies an old ReplicaSet's template back into
//     the Deployment) makes the old ReplicaSet the new one.
//     revisionHistoryLimit old ReplicaSets with no pods are kept.
//   - Pause: a paused Deployment is scaled but not rolled out.
//   - Status: replicas, updatedReplicas, readyReplicas,
//     availableReplicas, unavailableReplicas, observedGeneration,
//     collisionCount, and the conditions Available
//     (MinimumReplicasAvailable) and Progressing (NewReplicaSetCreated,
//     ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded
//     after progressDeadlineSeconds without progress, DeploymentPaused,
//     DeploymentResumed), and ReplicaFailure copied from a ReplicaSet —
//     what `kubectl rollout status` and `kubectl get deploy` read.
//
// The ReplicaSets are claimed by selector with controller references, like
// pods by ReplicaSets; the pods themselves are the ReplicaSet
// controller's.
package deployment

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
	"k8s.io/apimachinery/pkg/types"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
)

// maxRetries is how often a failing Deployment is retried before it is
// dropped until its next change (upstream's).
const maxRetries = 15

var kind = appsv1.SchemeGroupVersion.WithKind("Deployment")

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many Deployments are synced at once (default 5,
	// kube-controller-manager's --concurrent-deployment-syncs).
	Workers int
	Logger  *slog.Logger
	// Clock is the time conditions and deadlines are judged at.
	Clock clock.Clock
}

// Controller rolls Deployments out.
type Controller struct {
	*controller.Base
	dLister   appslisters.DeploymentLister
	rsLister  appslisters.ReplicaSetLister
	podLister corelisters.PodLister
	opts      Options
}

// New builds the controller on shared informers (the caller starts them).
func New(kube kubernetes.Interface, dInformer appsinformers.DeploymentInformer, rsInformer appsinformers.ReplicaSetInformer,
	podInformer coreinformers.PodInformer, opts Options) (*Controller, error) {
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	base := controller.NewBase(kube, "deployment", "deployment-controller", opts.Workers, opts.Logger)
	base.MaxRetries = maxRetries
	base.WaitFor(dInformer.Informer().HasSynced, rsInformer.Informer().HasSynced, podInformer.Informer().HasSynced)
	c := &Controller{
		Base:      base,
		dLister:   dInformer.Lister(),
		rsLister:  rsInformer.Lister(),
		podLister: podInformer.Lister(),
		opts:      opts,
	}
	if _, err := dInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.Enqueue,
		UpdateFunc: func(_, cur any) { c.Enqueue(cur) },
		DeleteFunc: c.Enqueue,
	}); err != nil {
		return nil, err
	}
	if _, err := rsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.addRS,
		UpdateFunc: c.updateRS,
		DeleteFunc: c.deleteRS,
	}); err != nil {
		return nil, err
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: c.deletePod,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run waits for the caches, then syncs Deployments until ctx ends.
func (c *Controller) Run(ctx context.Context) error { return c.Base.Run(ctx, c.sync) }

func (c *Controller) resolve(ns string, ref *metav1.OwnerReference) *appsv1.Deployment {
	d, _ := controller.Resolve(ref, kind.Kind, c.dLister.Deployments(ns).Get)
	return d
}

// enqueueOwner queues the Deployment controlling rs, if any.
func (c *Controller) enqueueOwner(rs *appsv1.ReplicaSet) {
	if d := c.resolve(rs.Namespace, metav1.GetControllerOfNoCopy(rs)); d != nil {
		c.Enqueue(d)
	}
}

// enqueueSelecting queues the Deployments whose selector matches an
// orphan's labels: one of them may adopt it.
func (c *Controller) enqueueSelecting(rs *appsv1.ReplicaSet) {
	ds, err := c.dLister.Deployments(rs.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, d := range controller.Selecting(ds, func(d *appsv1.Deployment) *metav1.LabelSelector { return d.Spec.Selector }, rs.Labels) {
		c.Enqueue(d)
	}
}

func (c *Controller) addRS(obj any) {
	rs := obj.(*appsv1.ReplicaSet)
	switch {
	case rs.DeletionTimestamp != nil:
		c.deleteRS(rs)
	case metav1.GetControllerOfNoCopy(rs) != nil:
		c.enqueueOwner(rs)
	default:
		c.enqueueSelecting(rs)
	}
}

func (c *Controller) updateRS(old, cur any) {
	o, rs := old.(*appsv1.ReplicaSet), cur.(*appsv1.ReplicaSet)
	if o.ResourceVersion == rs.ResourceVersion {
		return
	}
	refChanged := controller.RefChanged(metav1.GetControllerOfNoCopy(o), metav1.GetControllerOfNoCopy(rs))
	if refChanged {
		c.enqueueOwner(o)
	}
	if metav1.GetControllerOfNoCopy(rs) != nil {
		c.enqueueOwner(rs)
		return
	}
	if refChanged || !labels.Equals(o.Labels, rs.Labels) {
		c.enqueueSelecting(rs)
	}
}

func (c *Controller) deleteRS(obj any) {
	if rs, ok := controller.Unwrap[*appsv1.ReplicaSet](obj); ok {
		c.enqueueOwner(rs)
	}
}

// deletePod wakes a Recreate Deployment when its last old pod is gone.
func (c *Controller) deletePod(obj any) {
	pod, ok := controller.Unwrap[*corev1.Pod](obj)
	if !ok {
		return
	}
	rs, ok := controller.Resolve(metav1.GetControllerOfNoCopy(pod), "ReplicaSet", c.rsLister.ReplicaSets(pod.Namespace).Get)
	if !ok {
		return
	}
	d := c.resolve(rs.Namespace, metav1.GetControllerOfNoCopy(rs))
	if d == nil || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		return
	}
	rss, err := c.rsLister.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	pods, err := c.podMap(d, rss)
	if err != nil {
		return
	}
	n := 0
	for _, ps := range pods {
		n += len(ps)
	}
	if n == 0 {
		c.Enqueue(d)
	}
}

// sync rolls one Deployment a step forward and writes its status.
func (c *Controller) sync(ctx context.Context, key string) error {
	cached, ok, err := controller.Get(c.Base, key, func(ns, name string) (*appsv1.Deployment, error) { return c.dLister.Deployments(ns).Get(name) })
	if !ok {
		return err
	}
	d := cached.DeepCopy()
	ns := d.Namespace
	if apiequality.Semantic.DeepEqual(d.Spec.Selector, &metav1.LabelSelector{}) {
		c.Recorder.Eventf(d, corev1.EventTypeWarning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.")
		if d.Status.ObservedGeneration < d.Generation {
			d.Status.ObservedGeneration = d.Generation
			_, err := c.Kube.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			return err
		}
		return nil
	}
	rss, err := c.claimReplicaSets(ctx, d)
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return c.syncStatusOnly(ctx, d, rss)
	}
	if err := c.checkPausedConditions(ctx, d); err != nil {
		return err
	}
	if d.Spec.Paused {
		return c.syncScale(ctx, d, rss)
	}
	scaling, err := c.isScalingEvent(ctx, d, rss)
	if err != nil {
		return err
	}
	if scaling {
		return c.syncScale(ctx, d, rss)
	}
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		pods, err := c.podMap(d, rss)
		if err != nil {
			return err
		}
		return c.rolloutRecreate(ctx, d, rss, pods)
	case appsv1.RollingUpdateDeploymentStrategyType:
		return c.rolloutRolling(ctx, d, rss)
	}
	return fmt.Errorf("unexpected deployment strategy type %q", d.Spec.Strategy.Type)
}

// claimReplicaSets returns the ReplicaSets d owns, adopting and releasing
// by selector.
func (c *Controller) claimReplicaSets(ctx context.Context, d *appsv1.Deployment) ([]*appsv1.ReplicaSet, error) {
	all, err := c.rsLister.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s has an invalid selector: %w", d.Namespace, d.Name, err)
	}
	m := &controller.RefManager{
		Controller: d, Kind: kind, Selector: sel,
		CanAdopt: controller.RecheckDeletion(d.UID, func(ctx context.Context) (metav1.Object, error) {
			return c.Kube.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
		}),
	}
	return controller.Claim(ctx, m, all, controller.ReplicaSetPatcher(c.Kube))
}

// podMap groups the pods d selects by the uid of their ReplicaSet among
// rss (for Recreate: are old pods still running?).
func (c *Controller) podMap(d *appsv1.Deployment, rss []*appsv1.ReplicaSet) (map[types.UID][]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	pods, err := c.podLister.Pods(d.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	out := make(map[types.UID][]*corev1.Pod, len(rss))
	for _, rs := range rss {
		out[rs.UID] = nil
	}
	for _, p := range pods {
		ref := metav1.GetControllerOfNoCopy(p)
		if ref == nil {
			continue
		}
		if _, ok := out[ref.UID]; ok {
			out[ref.UID] = append(out[ref.UID], p)
		}
	}
	return out, nil
}

// checkPausedConditions marks a paused Deployment's Progressing condition
// Unknown (so the time paused does not count against the progress
// deadline) and a resumed one's too.
func (c *Controller) checkPausedConditions(ctx context.Context, d *appsv1.Deployment) error {
	if !hasProgressDeadline(d) {
		return nil
	}
	cond := getCondition(d.Status, appsv1.DeploymentProgressing)
	if cond != nil && cond.Reason == reasonTimedOut {
		return nil
	}
	pausedCond := cond != nil && cond.Reason == reasonPaused
	switch {
	case d.Spec.Paused && !pausedCond:
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, reasonPaused, "Deployment is paused", c.opts.Clock.Now()))
	case !d.Spec.Paused && pausedCond:
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, reasonResumed, "Deployment is resumed", c.opts.Clock.Now()))
	default:
		return nil
	}
	// Carry on with what was stored: the rest of this sync writes again.
	return c.updateDeployment(ctx, d)
}

// isScalingEvent: an active ReplicaSet recorded another desired size than
// the Deployment's replicas now.
func (c *Controller) isScalingEvent(ctx context.Context, d *appsv1.Deployment, rss []*appsv1.ReplicaSet) (bool, error) {
	newRS, oldRSs, err := c.replicaSetsAndSyncRevision(ctx, d, rss, false)
	if err != nil {
		return false, err
	}
	for _, rs := range active(append(oldRSs, newRS)) {
		if desired, ok := intAnnotation(rs, DesiredReplicasAnnotation); ok && desired != *d.Spec.Replicas {
			return true, nil
		}
	}
	return false, nil
}

func (c *Controller) enqueueAfter(d *appsv1.Deployment, after time.Duration) {
	c.Queue.AddAfter(controller.Key(d), after)
}
