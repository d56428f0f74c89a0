package daemonset

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
)

// A DaemonSet's history is a ControllerRevision per template it ran, as
// in Kubernetes: the revision's data is a strategic merge patch that puts
// that template back ({"spec":{"template":{…,"$patch":"replace"}}}),
// which is what `kubectl rollout undo daemonset` applies; its number
// orders them (`kubectl rollout history`); its name is
// <daemonset>-<hash of the data> and its controller-revision-hash label
// that hash, which the DaemonSet's pods carry too.

// revisionPatch is the data of the revision of ds's current template.
func revisionPatch(ds *appsv1.DaemonSet) ([]byte, error) {
	raw, err := json.Marshal(ds)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	tmpl := obj["spec"].(map[string]any)["template"].(map[string]any)
	tmpl["$patch"] = "replace"
	return json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
}

// hashRevision is Kubernetes' hash of a revision's data (FNV-32 over the
// raw bytes, then the collision count).
func hashRevision(data []byte, collisionCount *int32) string {
	h := fnv.New32()
	h.Write(data)
	if collisionCount != nil {
		h.Write([]byte(strconv.FormatInt(int64(*collisionCount), 10)))
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// revisions returns the ControllerRevisions ds owns, adopting and
// releasing by selector.
func (c *Controller) revisions(ctx context.Context, ds *appsv1.DaemonSet) ([]*appsv1.ControllerRevision, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, err
	}
	all, err := c.crLister.ControllerRevisions(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	m := &controller.RefManager{Controller: ds, Kind: kind, Selector: sel, CanAdopt: c.canAdopt(ds)}
	return controller.Claim(ctx, m, all, controller.ControllerRevisionPatcher(c.Kube))
}

// constructHistory returns the revision of ds's current template
// (created, or renumbered to be the newest, as needed) and the others.
func (c *Controller) constructHistory(ctx context.Context, ds *appsv1.DaemonSet) (*appsv1.ControllerRevision, []*appsv1.ControllerRevision, error) {
	histories, err := c.revisions(ctx, ds)
	if err != nil {
		return nil, nil, err
	}
	patch, err := revisionPatch(ds)
	if err != nil {
		return nil, nil, err
	}
	var current, old []*appsv1.ControllerRevision
	for _, h := range histories {
		// Revisions made elsewhere may lack the hash label: their name is
		// unique, so it serves.
		if _, ok := h.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]; !ok {
			cp := h.DeepCopy()
			if cp.Labels == nil {
				cp.Labels = map[string]string{}
			}
			cp.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] = cp.Name
			if h, err = c.Kube.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
				return nil, nil, err
			}
		}
		if bytes.Equal(patch, h.Data.Raw) {
			current = append(current, h)
		} else {
			old = append(old, h)
		}
	}
	next := maxRevision(old) + 1
	var cur *appsv1.ControllerRevision
	if len(current) == 0 {
		cur, err = c.snapshot(ctx, ds, patch, next)
	} else {
		cur, err = c.dedupe(ctx, ds, current)
	}
	if err != nil {
		return nil, nil, err
	}
	if cur.Revision < next {
		// Rolled back to an old template: it becomes the newest revision.
		cp := cur.DeepCopy()
		cp.Revision = next
		if cur, err = c.Kube.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
			return nil, nil, err
		}
	}
	return cur, old, nil
}

func maxRevision(rs []*appsv1.ControllerRevision) int64 {
	var m int64
	for _, r := range rs {
		m = max(m, r.Revision)
	}
	return m
}

// snapshot creates the revision of ds's current template; a name taken by
// other data is a hash collision, which bumps status.collisionCount.
func (c *Controller) snapshot(ctx context.Context, ds *appsv1.DaemonSet, patch []byte, rev int64) (*appsv1.ControllerRevision, error) {
	hash := hashRevision(patch, ds.Status.CollisionCount)
	lbls := map[string]string{}
	for k, v := range ds.Spec.Template.Labels {
		lbls[k] = v
	}
	lbls[appsv1.DefaultDaemonSetUniqueLabelKey] = hash
	name := ds.Name
	if len(name) > 223 {
		name = name[:223]
	}
	cr := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + hash, Namespace: ds.Namespace, Labels: lbls,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, kind)}},
		Data:     runtime.RawExtension{Raw: patch},
		Revision: rev,
	}
	created, err := c.Kube.AppsV1().ControllerRevisions(ds.Namespace).Create(ctx, cr, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return created, err
	}
	existing, getErr := c.Kube.AppsV1().ControllerRevisions(ds.Namespace).Get(ctx, cr.Name, metav1.GetOptions{})
	if getErr != nil {
		return nil, getErr
	}
	if metav1.IsControlledBy(existing, ds) && bytes.Equal(existing.Data.Raw, patch) {
		return existing, nil
	}
	cur, getErr := c.Kube.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
	if getErr != nil {
		return nil, getErr
	}
	if cur.Status.CollisionCount == nil {
		cur.Status.CollisionCount = new(int32)
	}
	*cur.Status.CollisionCount++
	if _, uerr := c.Kube.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); uerr != nil {
		return nil, uerr
	}
	return nil, fmt.Errorf("hash collision for controllerrevision %s: collisionCount bumped", cr.Name)
}

// dedupe keeps the newest of several revisions of one template, moving
// the pods labelled with the others' hash to it and deleting the others.
func (c *Controller) dedupe(ctx context.Context, ds *appsv1.DaemonSet, dups []*appsv1.ControllerRevision) (*appsv1.ControllerRevision, error) {
	sort.Slice(dups, func(i, j int) bool { return dups[i].Revision > dups[j].Revision })
	keep := dups[0]
	if len(dups) == 1 {
		return keep, nil
	}
	keepHash := keep.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return nil, err
	}
	for _, dup := range dups[1:] {
		dupHash := dup.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
		for _, p := range pods {
			if p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != dupHash {
				continue
			}
			patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, appsv1.DefaultDaemonSetUniqueLabelKey, keepHash)
			if _, err := c.Kube.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return nil, err
			}
		}
		if err := c.Kube.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, dup.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	return keep, nil
}

// cleanupHistory deletes the oldest old revisions beyond
// revisionHistoryLimit that no pod runs.
func (c *Controller) cleanupHistory(ctx context.Context, ds *appsv1.DaemonSet, old []*appsv1.ControllerRevision, pods []*corev1.Pod) error {
	limit := 10
	if ds.Spec.RevisionHistoryLimit != nil {
		limit = int(*ds.Spec.RevisionHistoryLimit)
	}
	toKill := len(old) - limit
	if toKill <= 0 {
		return nil
	}
	live := map[string]bool{}
	for _, p := range pods {
		if h := p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]; h != "" {
			live[h] = true
		}
	}
	sort.Slice(old, func(i, j int) bool { return old[i].Revision < old[j].Revision })
	for _, h := range old {
		if toKill <= 0 {
			break
		}
		if live[h.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]] {
			continue
		}
		if err := c.Kube.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, h.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		toKill--
	}
	return nil
}
