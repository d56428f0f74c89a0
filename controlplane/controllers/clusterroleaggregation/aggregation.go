// Package clusterroleaggregation fills the rules of ClusterRoles that have
// an aggregationRule with the rules of the ClusterRoles their selectors
// match, as kube-controller-manager's controller of that name: adding a
// ClusterRole labelled rbac.authorization.k8s.io/aggregate-to-edit=true
// extends edit (and, through edit's own label, admin).
package clusterroleaggregation

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	rbacinformers "k8s.io/client-go/informers/rbac/v1"
	"k8s.io/client-go/kubernetes"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

// Controller keeps aggregated ClusterRoles' rules.
type Controller struct {
	kube   kubernetes.Interface
	lister rbaclisters.ClusterRoleLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	log    *slog.Logger
}

// New wires the controller to a ClusterRole informer.
func New(kube kubernetes.Interface, informer rbacinformers.ClusterRoleInformer, log *slog.Logger) (*Controller, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Controller{kube: kube, lister: informer.Lister(), synced: informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "clusterroleaggregation"}),
		log: log.With("controller", "clusterroleaggregation")}
	// Any ClusterRole's change may change what an aggregated one selects:
	// queue every aggregated role (they are few).
	enqueue := func(interface{}) { c.enqueueAggregated() }
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o interface{}) { enqueue(o) }, DeleteFunc: enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("clusterrole informer handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueAggregated() {
	roles, err := c.lister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, r := range roles {
		if r.AggregationRule != nil {
			c.queue.Add(r.Name)
		}
	}
}

// Run processes aggregated roles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("clusterrole aggregation: caches did not sync")
	}
	workers.Run(ctx, 1, c.queue, c.process)
	return nil
}

func (c *Controller) process(ctx context.Context, name string) {
	if err := c.Sync(ctx, name); err != nil {
		c.log.Info("sync failed, retrying", "clusterrole", name, "err", err)
		c.queue.AddRateLimited(name)
		return
	}
	c.queue.Forget(name)
}

// Sync sets the rules of the aggregated ClusterRole name to the union of
// the rules of the roles its selectors match, in name order, without
// duplicates.
func (c *Controller) Sync(ctx context.Context, name string) error {
	role, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if role.AggregationRule == nil {
		return nil
	}
	var sources []*rbacv1.ClusterRole
	seen := map[string]bool{}
	for _, sel := range role.AggregationRule.ClusterRoleSelectors {
		s, err := metav1.LabelSelectorAsSelector(&sel)
		if err != nil {
			return nil // invalid selectors were refused by the API; nothing to do
		}
		matched, err := c.lister.List(s)
		if err != nil {
			return err
		}
		for _, m := range matched {
			if m.Name != name && !seen[m.Name] {
				seen[m.Name] = true
				sources = append(sources, m)
			}
		}
	}
	sort.Slice(sources, func(i, j int) bool { return sources[i].Name < sources[j].Name })
	var rules []rbacv1.PolicyRule
	for _, src := range sources {
		for _, r := range src.Rules {
			if !containsRule(rules, r) {
				rules = append(rules, *r.DeepCopy())
			}
		}
	}
	if equality.Semantic.DeepEqual(rules, role.Rules) {
		return nil
	}
	updated := role.DeepCopy()
	updated.Rules = rules
	_, err = c.kube.RbacV1().ClusterRoles().Update(ctx, updated, metav1.UpdateOptions{})
	if err == nil {
		c.log.Debug("aggregated", "clusterrole", name, "rules", len(rules), "from", len(sources))
	}
	return err
}

func containsRule(rules []rbacv1.PolicyRule, r rbacv1.PolicyRule) bool {
	for i := range rules {
		if equality.Semantic.DeepEqual(rules[i], r) {
			return true
		}
	}
	return false
}
