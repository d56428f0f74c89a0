// Package serviceaccount keeps what every namespace's pods need to call
// the API: the "default" ServiceAccount (kube-controller-manager's
// serviceaccount-controller) and the kube-root-ca.crt ConfigMap holding the
// cluster CA (its root-ca-cert-publisher), which the projected
// kube-api-access volume of every pod reads.
package serviceaccount

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

// RootCAConfigMap is the ConfigMap every namespace gets, with the cluster
// CA under ca.crt.
const RootCAConfigMap = "kube-root-ca.crt"

// Options configure the controller.
type Options struct {
	// RootCA is the cluster CA certificate (PEM) to publish; none: no
	// kube-root-ca.crt.
	RootCA []byte
	Logger *slog.Logger
}

// Controller makes sure each active namespace has its default
// ServiceAccount and root CA ConfigMap, recreating them when deleted.
type Controller struct {
	kube   kubernetes.Interface
	ns     corelisters.NamespaceLister
	sa     corelisters.ServiceAccountLister
	cm     corelisters.ConfigMapLister
	synced []cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	rootCA string
	log    *slog.Logger
}

// New wires the controller to its informers.
func New(kube kubernetes.Interface, ns coreinformers.NamespaceInformer, sa coreinformers.ServiceAccountInformer, cm coreinformers.ConfigMapInformer, opts Options) (*Controller, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Controller{kube: kube, ns: ns.Lister(), sa: sa.Lister(), cm: cm.Lister(),
		synced: []cache.InformerSynced{ns.Informer().HasSynced, sa.Informer().HasSynced, cm.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "serviceaccount"}),
		rootCA: string(opts.RootCA), log: opts.Logger.With("controller", "serviceaccount")}
	byNamespace := func(obj interface{}) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			c.queue.Add(o.Name)
		case *corev1.ServiceAccount:
			if o.Name == "default" {
				c.queue.Add(o.Namespace)
			}
		case *corev1.ConfigMap:
			if o.Name == RootCAConfigMap {
				c.queue.Add(o.Namespace)
			}
		}
	}
	handlers := cache.ResourceEventHandlerFuncs{AddFunc: byNamespace, UpdateFunc: func(_, o interface{}) { byNamespace(o) }, DeleteFunc: byNamespace}
	for _, inf := range []cache.SharedIndexInformer{ns.Informer(), sa.Informer(), cm.Informer()} {
		if _, err := inf.AddEventHandler(handlers); err != nil {
			return nil, fmt.Errorf("serviceaccount informer handler: %w", err)
		}
	}
	return c, nil
}

// Run processes namespaces until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("serviceaccount controller: caches did not sync")
	}
	workers.Run(ctx, 2, c.queue, c.process)
	return nil
}

func (c *Controller) process(ctx context.Context, ns string) {
	if err := c.Sync(ctx, ns); err != nil {
		c.log.Info("sync failed, retrying", "namespace", ns, "err", err)
		c.queue.AddRateLimited(ns)
		return
	}
	c.queue.Forget(ns)
}

// Sync creates what namespace ns lacks (not in a namespace being deleted)
// and brings the CA ConfigMap up to date.
func (c *Controller) Sync(ctx context.Context, name string) error {
	ns, err := c.ns.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Status.Phase != corev1.NamespaceActive || ns.DeletionTimestamp != nil {
		return nil
	}
	if _, err := c.sa.ServiceAccounts(name).Get("default"); apierrors.IsNotFound(err) {
		_, err := c.kube.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create default service account: %w", err)
		}
	}
	if c.rootCA == "" {
		return nil
	}
	cm, err := c.cm.ConfigMaps(name).Get(RootCAConfigMap)
	want := map[string]string{"ca.crt": c.rootCA}
	switch {
	case apierrors.IsNotFound(err):
		_, err := c.kube.CoreV1().ConfigMaps(name).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCAConfigMap, Annotations: map[string]string{
				"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
			Data: want}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", RootCAConfigMap, err)
		}
	case err != nil:
		return err
	case cm.Data["ca.crt"] != c.rootCA:
		cm = cm.DeepCopy()
		cm.Data = want
		if _, err := c.kube.CoreV1().ConfigMaps(name).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update %s: %w", RootCAConfigMap, err)
		}
	}
	return nil
}
