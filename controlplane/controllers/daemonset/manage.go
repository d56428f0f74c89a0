package daemonset

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
)

// manage creates the pods missing on nodes that should run ds and deletes
// those that should not be where they are.
func (c *Controller) manage(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash string) error {
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return err
	}
	onNode := c.byNode(pods)
	var create []string
	var del []*corev1.Pod
	exists := map[string]bool{}
	for _, node := range nodes {
		exists[node.Name] = true
		cr, dl := c.podsShouldBeOnNode(node, onNode[node.Name], ds, hash)
		create = append(create, cr...)
		del = append(del, dl...)
	}
	// Pods meant for a node that is gone and never scheduled would wait
	// forever; those already bound are the pod garbage collector's.
	for node, ps := range onNode {
		if exists[node] {
			continue
		}
		for _, p := range ps {
			if p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
				del = append(del, p)
			}
		}
	}
	return c.syncNodes(ctx, ds, del, create, hash)
}

// podsShouldBeOnNode returns whether node needs a pod of ds (its name, or
// nothing) and which of the pods on it to delete.
func (c *Controller) podsShouldBeOnNode(node *corev1.Node, pods []*corev1.Pod, ds *appsv1.DaemonSet, hash string) (create []string, del []*corev1.Pod) {
	shouldRun, shouldContinue := nodeShouldRun(node, ds)
	switch {
	case shouldRun && len(pods) == 0:
		return []string{node.Name}, nil
	case shouldContinue:
		var running []*corev1.Pod
		for _, p := range pods {
			switch {
			case p.DeletionTimestamp != nil:
			case p.Status.Phase == corev1.PodFailed:
				// Kubelets reject pods (a port taken, a resource short):
				// replace a failed one, but back off per node.
				bk := fmt.Sprintf("%s/%d/%s", ds.UID, ds.Status.ObservedGeneration, node.Name)
				now := c.opts.Clock.Now()
				if c.failed.IsInBackOffSinceUpdate(bk, now) {
					c.Queue.AddAfter(controller.Key(ds), c.failed.Get(bk))
					continue
				}
				c.failed.Next(bk, now)
				c.Recorder.Eventf(ds, corev1.EventTypeWarning, "FailedDaemonPod", "Found failed daemon pod %s/%s on node %s, will try to kill it", p.Namespace, p.Name, node.Name)
				del = append(del, p)
			case p.Status.Phase == corev1.PodSucceeded:
				// Daemon pods restart always: a finished one is replaced.
				del = append(del, p)
			default:
				running = append(running, p)
			}
		}
		sort.Sort(byCreationAndScheduled(running))
		if !allowsSurge(ds) {
			// One pod a node: keep the oldest.
			if len(running) > 1 {
				del = append(del, running[1:]...)
			}
			return nil, del
		}
		if len(running) <= 1 {
			if len(running) == 0 && shouldRun {
				create = []string{node.Name}
			}
			return create, del
		}
		// Surging: at most the oldest new pod and the oldest old one; the
		// old one goes once it is not ready or the new one is available.
		var newest, oldest *corev1.Pod
		for _, p := range running {
			switch {
			case p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == hash && newest == nil:
				newest = p
			case p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != hash && oldest == nil:
				oldest = p
			default:
				del = append(del, p)
			}
		}
		if newest != nil && oldest != nil &&
			(!controller.IsPodReady(oldest) || controller.IsPodAvailable(newest, ds.Spec.MinReadySeconds, c.opts.Clock.Now())) {
			del = append(del, oldest)
		}
	case len(pods) > 0:
		for _, p := range pods {
			if p.DeletionTimestamp == nil {
				del = append(del, p)
			}
		}
	}
	return create, del
}

// syncNodes creates a pod for each of nodes (in slow-start batches, each
// with a required affinity to its node) and deletes del, recording
// expectations first.
func (c *Controller) syncNodes(ctx context.Context, ds *appsv1.DaemonSet, del []*corev1.Pod, nodes []string, hash string) error {
	key := controller.Key(ds)
	nodes = nodes[:min(len(nodes), BurstReplicas)]
	del = del[:min(len(del), BurstReplicas)]
	if len(nodes) == 0 && len(del) == 0 {
		return nil
	}
	c.expectations.Expect(key, len(nodes), controller.PodKeys(del))
	tmpl := podTemplate(ds, hash)
	ref := metav1.NewControllerRef(ds, kind)
	_, createErr := c.pods.CreatePods(ctx, c.expectations, key, ds.Namespace, len(nodes), func(i int) *corev1.Pod {
		t := tmpl.DeepCopy()
		t.Spec.Affinity = nodeAffinityTo(t.Spec.Affinity, nodes[i])
		return controller.NewPod(t, ds, ref)
	}, ds)
	return errors.Join(createErr, c.pods.DeletePods(ctx, c.expectations, key, ds.Namespace, del, ds))
}

// rollingUpdate replaces old pods within maxUnavailable (or, with a
// surge, starts new pods beside old ones within maxSurge and deletes the
// old ones once the new ones are available).
func (c *Controller) rollingUpdate(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash string) error {
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return err
	}
	onNode := c.byNode(pods)
	desired := 0
	nodeByName := map[string]*corev1.Node{}
	for _, n := range nodes {
		nodeByName[n.Name] = n
		if run, _ := nodeShouldRun(n, ds); run {
			desired++
			if _, ok := onNode[n.Name]; !ok {
				onNode[n.Name] = nil
			}
		}
	}
	maxSurge, maxUnavailable := surgeAndUnavailable(ds, desired)
	now := c.opts.Clock.Now()
	available := func(p *corev1.Pod) bool { return controller.IsPodAvailable(p, ds.Spec.MinReadySeconds, now) }

	if maxSurge == 0 {
		unavailable := 0
		var replace, candidates []*corev1.Pod
		for _, ps := range onNode {
			newPod, oldPod, ok := updatedPodsOnNode(ds, ps, hash)
			switch {
			case !ok:
				unavailable++ // several pods: the manage step sorts it out
			case oldPod == nil && newPod == nil, oldPod != nil && newPod != nil:
				unavailable++
			case newPod != nil:
				if !available(newPod) {
					unavailable++
				}
			case !available(oldPod):
				// Old and unavailable already: replacing it costs nothing.
				replace = append(replace, oldPod)
				unavailable++
			case unavailable < maxUnavailable:
				candidates = append(candidates, oldPod)
			}
		}
		n := min(max(maxUnavailable-unavailable, 0), len(candidates))
		return c.syncNodes(ctx, ds, append(replace, candidates[:n]...), nil, hash)
	}

	var del, shouldNotRun []*corev1.Pod
	var allowed, candidates []string
	surge, availableNodes := 0, 0
	for name, ps := range onNode {
		newPod, oldPod, ok := updatedPodsOnNode(ds, ps, hash)
		if !ok {
			surge++
			continue
		}
		if oldPod != nil && available(oldPod) || oldPod == nil && newPod != nil && available(newPod) {
			availableNodes++
		}
		switch {
		case oldPod == nil:
		case newPod == nil:
			node := nodeByName[name]
			if node == nil {
				continue
			}
			run, _ := nodeShouldRun(node, ds)
			switch {
			case !available(oldPod) && !run:
				del = append(del, oldPod)
			case !available(oldPod):
				allowed = append(allowed, name)
			case !run:
				shouldNotRun = append(shouldNotRun, oldPod)
			case surge < maxSurge:
				candidates = append(candidates, name)
			}
		default:
			if !available(newPod) {
				surge++
				continue
			}
			del = append(del, oldPod)
		}
	}
	// Pods on nodes that no longer qualify go only as pods elsewhere
	// become available: a surge promises full availability.
	if n := min(availableNodes-desired, len(shouldNotRun)); n > 0 {
		del = append(del, shouldNotRun[:n]...)
	}
	n := min(max(maxSurge-surge, 0), len(candidates))
	return c.syncNodes(ctx, ds, del, append(allowed, candidates[:n]...), hash)
}

// updatedPodsOnNode returns the node's one new and one old pod (not being
// deleted); ok is false when there are more.
func updatedPodsOnNode(ds *appsv1.DaemonSet, pods []*corev1.Pod, hash string) (newPod, oldPod *corev1.Pod, ok bool) {
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if isPodUpdated(p, hash, ds) {
			if newPod != nil {
				return nil, nil, false
			}
			newPod = p
		} else {
			if oldPod != nil {
				return nil, nil, false
			}
			oldPod = p
		}
	}
	return newPod, oldPod, true
}

// updateStatus writes the counts of ds's pods over the nodes (and the
// generation, when the sync acted on it).
func (c *Controller) updateStatus(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash string, observed bool) error {
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return err
	}
	onNode := c.byNode(pods)
	var st appsv1.DaemonSetStatus
	now := c.opts.Clock.Now()
	for _, node := range nodes {
		run, _ := nodeShouldRun(node, ds)
		ps := onNode[node.Name]
		if !run {
			if len(ps) > 0 {
				st.NumberMisscheduled++
			}
			continue
		}
		st.DesiredNumberScheduled++
		if len(ps) == 0 {
			continue
		}
		st.CurrentNumberScheduled++
		sort.Sort(byCreationAndScheduled(ps))
		p := ps[0]
		if controller.IsPodReady(p) {
			st.NumberReady++
			if controller.IsPodAvailable(p, ds.Spec.MinReadySeconds, now) {
				st.NumberAvailable++
			}
		}
		if isPodUpdated(p, hash, ds) {
			st.UpdatedNumberScheduled++
		}
	}
	st.NumberUnavailable = st.DesiredNumberScheduled - st.NumberAvailable
	if err := c.storeStatus(ctx, ds, st, observed); err != nil {
		return fmt.Errorf("status of daemonset %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	if ds.Spec.MinReadySeconds > 0 && st.NumberReady != st.NumberAvailable {
		c.Queue.AddAfter(controller.Key(ds), time.Duration(ds.Spec.MinReadySeconds)*time.Second)
	}
	return nil
}

// storeStatus writes st unless stored already; a conflict is retried once
// against a fresh read.
func (c *Controller) storeStatus(ctx context.Context, ds *appsv1.DaemonSet, st appsv1.DaemonSetStatus, observed bool) error {
	client := c.Kube.AppsV1().DaemonSets(ds.Namespace)
	for i := 0; ; i++ {
		cur := ds.Status
		if cur.DesiredNumberScheduled == st.DesiredNumberScheduled && cur.CurrentNumberScheduled == st.CurrentNumberScheduled &&
			cur.NumberMisscheduled == st.NumberMisscheduled && cur.NumberReady == st.NumberReady &&
			cur.UpdatedNumberScheduled == st.UpdatedNumberScheduled && cur.NumberAvailable == st.NumberAvailable &&
			cur.NumberUnavailable == st.NumberUnavailable && cur.ObservedGeneration >= ds.Generation {
			return nil
		}
		next := ds.DeepCopy()
		if observed {
			next.Status.ObservedGeneration = ds.Generation
		}
		next.Status.DesiredNumberScheduled = st.DesiredNumberScheduled
		next.Status.CurrentNumberScheduled = st.CurrentNumberScheduled
		next.Status.NumberMisscheduled = st.NumberMisscheduled
		next.Status.NumberReady = st.NumberReady
		next.Status.UpdatedNumberScheduled = st.UpdatedNumberScheduled
		next.Status.NumberAvailable = st.NumberAvailable
		next.Status.NumberUnavailable = st.NumberUnavailable
		_, err := client.UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if err == nil || i >= 1 {
			return err
		}
		if ds, err = client.Get(ctx, ds.Name, metav1.GetOptions{}); err != nil {
			return err
		}
	}
}
