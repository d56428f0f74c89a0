// Package endpointslice is the EndpointSlice controller: for every Service
// with a selector it keeps the EndpointSlices listing the selected pods,
// which the service proxy reads, and the Service's legacy Endpoints object,
// which `kubectl describe svc` and older clients read.
//
// The slices are computed and written by the reconciler of
// k8s.io/endpointslice, the library kube-controller-manager's own
// EndpointSlice controller is built on, so they are upstream's to the
// field: ready/serving/terminating conditions (ready only for a ready pod
// that is not terminating, unless publishNotReadyAddresses), nodeName,
// zone, targetRef and hostname; named targetPorts resolved per pod (pods
// resolving a port differently land in different slices); headless
// services, with or without ports; at most MaxEndpointsPerSlice (100)
// endpoints a slice; the labels kubernetes.io/service-name and
// endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
// (slices with another manager are never touched); an ownerReference to the
// Service, through which the garbage collector deletes them with it; a
// placeholder slice for a Service with no endpoints. Around the reconciler
// this package is the controller of upstream's
// pkg/controller/endpointslice in the sample-controller shape: informers
// on Services, Pods, Nodes, EndpointSlices (and Endpoints), handlers that
// only enqueue Service keys, workers that read listers, a rate-limited
// queue with upstream's backoff, an EndpointSliceTracker so that a stale
// informer cache is retried instead of acted on.
//
// The Endpoints object is written by this controller too (upstream has a
// second controller for it, pkg/controller/endpoint), from the same sync:
// ready pods in addresses, not-ready ones in notReadyAddresses, terminating
// ones left out (all of them in addresses with publishNotReadyAddresses),
// subsets packed by port set, at most 1000 addresses
// (endpoints.kubernetes.io/over-capacity: truncated beyond), labelled
// endpoints.kubernetes.io/managed-by: endpoint-controller and with the
// Service's labels. Only Endpoints with that label are ever deleted, so the
// API server's own (default/kubernetes, skip-mirror) and hand-written ones
// for selector-less Services are left alone.
//
// Services without a selector and ExternalName Services get nothing from
// this controller: their endpoints are written by whoever owns them.
package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	endpointslicerec "k8s.io/endpointslice"
	endpointsliceutil "k8s.io/endpointslice/util"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

const (
	// ControllerName is the endpointslice.kubernetes.io/managed-by value of
	// the slices this controller owns: upstream's, so tools that know
	// Kubernetes recognise them.
	ControllerName = "endpointslice-controller.k8s.io"

	// DefaultMaxEndpointsPerSlice is kube-controller-manager's
	// --max-endpoints-per-slice default.
	DefaultMaxEndpointsPerSlice = 100

	// maxRetries is how often a failing Service is retried (upstream's;
	// with the backoff below, 1s doubling, at most 1000s apart).
	maxRetries = 15

	// sliceChangeMinDelay batches the syncs a burst of slice events
	// triggers (upstream's endpointSliceChangeMinSyncDelay).
	sliceChangeMinDelay = time.Second
)

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many Services are synced at once (default 5,
	// kube-controller-manager's --concurrent-service-endpoint-syncs).
	Workers int
	// MaxEndpointsPerSlice caps a slice (default 100).
	MaxEndpointsPerSlice int32
	// BatchPeriod delays the sync a pod change triggers, so a burst of
	// pod changes makes one write (default 0, upstream's
	// --endpointslice-updates-batch-period).
	BatchPeriod time.Duration
	// MinRetryDelay is the first backoff of a failing Service (default
	// 1s, upstream's); tests shorten it.
	MinRetryDelay time.Duration
	Logger        *slog.Logger
}

// Controller keeps Services' EndpointSlices and Endpoints.
type Controller struct {
	kube       kubernetes.Interface
	services   corelisters.ServiceLister
	pods       corelisters.PodLister
	slices     discoverylisters.EndpointSliceLister
	endpoints  corelisters.EndpointsLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	reconciler *endpointslicerec.Reconciler
	// tracker remembers the generation of every slice this controller
	// wrote, so that a sync against a cache that has not seen its own
	// writes yet is retried instead of duplicating slices.
	tracker *endpointsliceutil.EndpointSliceTracker
	// The last-change-trigger-time annotations of slices and of
	// Endpoints: one tracker each, as each consumes the changes it sees.
	sliceTimes     *endpointsliceutil.TriggerTimeTracker
	endpointsTimes *endpointsliceutil.TriggerTimeTracker
	broadcaster    record.EventBroadcaster
	recorder       record.EventRecorder
	opts           Options
	log            *slog.Logger
	// klog is log for the reconciler, which logs through logr.
	klog logr.Logger
}

// New builds the controller on the given informers (shared with the other
// controllers of the process; the caller starts them).
func New(kube kubernetes.Interface, services coreinformers.ServiceInformer, pods coreinformers.PodInformer,
	nodes coreinformers.NodeInformer, slices discoveryinformers.EndpointSliceInformer,
	endpoints coreinformers.EndpointsInformer, opts Options) (*Controller, error) {
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if opts.MaxEndpointsPerSlice == 0 {
		opts.MaxEndpointsPerSlice = DefaultMaxEndpointsPerSlice
	}
	if opts.MinRetryDelay == 0 {
		opts.MinRetryDelay = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("controller", "endpointslice")
	broadcaster := record.NewBroadcaster()
	c := &Controller{
		kube:      kube,
		services:  services.Lister(),
		pods:      pods.Lister(),
		slices:    slices.Lister(),
		endpoints: endpoints.Lister(),
		synced: []cache.InformerSynced{services.Informer().HasSynced, pods.Informer().HasSynced,
			nodes.Informer().HasSynced, slices.Informer().HasSynced, endpoints.Informer().HasSynced},
		// Upstream's limiter: a 1s base backoff (a sync can rewrite many
		// slices; retrying fast would hammer the API) and 10 retries/s
		// overall.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedMaxOfRateLimiter(
				workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.MinRetryDelay, 1000*time.Second),
				&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
			),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint_slice"},
		),
		tracker:        endpointsliceutil.NewEndpointSliceTracker(),
		sliceTimes:     endpointsliceutil.NewTriggerTimeTracker(),
		endpointsTimes: endpointsliceutil.NewTriggerTimeTracker(),
		broadcaster:    broadcaster,
		recorder:       broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "endpoint-slice-controller"}),
		opts:           opts,
		log:            log,
		klog:           logr.FromSlogHandler(log.Handler()),
	}
	// No topology cache (topology-aware hints need zones skep does not
	// have yet); trafficDistribution hints as in Kubernetes 1.34, where
	// both gates are on by default.
	c.reconciler = endpointslicerec.NewReconciler(kube, nodes.Lister(), opts.MaxEndpointsPerSlice,
		c.tracker, nil, c.recorder, ControllerName, endpointslicerec.WithTrafficDistributionEnabled(true, true))

	_, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueService,
		UpdateFunc: func(_, cur any) { c.enqueueService(cur) },
		DeleteFunc: c.enqueueService,
	})
	if err != nil {
		return nil, err
	}
	_, err = pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.addPod,
		UpdateFunc: c.updatePod,
		DeleteFunc: func(obj any) {
			if pod := endpointsliceutil.GetPodFromDeleteAction(obj); pod != nil {
				c.addPod(pod)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	_, err = slices.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.onSliceAdd,
		UpdateFunc: c.onSliceUpdate,
		DeleteFunc: c.onSliceDelete,
	})
	if err != nil {
		return nil, err
	}
	// Endpoints: a deleted one is rewritten if its Service still wants it.
	_, err = endpoints.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: c.enqueueService,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Run waits for the caches, then syncs Services with opts.Workers workers
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer c.broadcaster.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return nil // ctx ended
	}
	c.log.Info("started", "workers", c.opts.Workers)
	c.enqueueLeftoverEndpoints()
	workers.Run(ctx, c.opts.Workers, c.queue, c.process)
	return nil
}

// process syncs one Service and retries it, with backoff, when that fails.
func (c *Controller) process(ctx context.Context, key string) {
	err := c.syncService(ctx, key)
	switch {
	case err == nil:
		c.queue.Forget(key)
	case c.queue.NumRequeues(key) < maxRetries:
		c.log.Debug("sync failed; retrying", "service", key, "err", err)
		c.queue.AddRateLimited(key)
	default:
		c.log.Error("sync failed; giving up on the service until it changes", "service", key, "err", err)
		c.queue.Forget(key)
	}
}

// errStaleCache says the slice cache lags behind this controller's own
// writes: the sync is retried once the cache has caught up.
var errStaleCache = errors.New("endpointslice informer cache is out of date")

// syncService brings one Service's slices and Endpoints up to date with its
// pods, as the listers see them.
func (c *Controller) syncService(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		c.log.Error("bad queue key", "key", key, "err", err)
		return nil
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Gone: its slices go with it through their ownerReference (the
		// garbage collector); its Endpoints carry none, so they are
		// deleted here.
		c.sliceTimes.DeleteService(ns, name)
		c.endpointsTimes.DeleteService(ns, name)
		c.reconciler.DeleteService(ns, name)
		c.tracker.DeleteService(ns, name)
		return c.deleteEndpoints(ctx, ns, name)
	}
	if err != nil {
		return err
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.Selector == nil {
		return nil
	}
	pods, err := c.pods.Pods(ns).List(labels.Set(svc.Spec.Selector).AsSelectorPreValidated())
	if err != nil {
		return err
	}
	return errors.Join(c.syncSlices(svc, pods), c.syncEndpoints(ctx, svc, pods))
}

func (c *Controller) syncSlices(svc *corev1.Service, pods []*corev1.Pod) error {
	sel := labels.Set{
		discoveryv1.LabelServiceName: svc.Name,
		discoveryv1.LabelManagedBy:   ControllerName,
	}.AsSelectorPreValidated()
	listed, err := c.slices.EndpointSlices(svc.Namespace).List(sel)
	if err != nil {
		return err
	}
	// Slices marked for deletion are on their way out: reconciling them
	// could wait forever on their finalizers.
	slices := listed[:0:0]
	for _, s := range listed {
		if s.DeletionTimestamp == nil {
			slices = append(slices, s)
		}
	}
	if c.tracker.StaleSlices(svc, slices) {
		return errStaleCache
	}
	trigger := c.sliceTimes.ComputeEndpointLastChangeTriggerTime(svc.Namespace, svc, pods)
	if err := c.reconciler.Reconcile(c.klog, svc, pods, slices, trigger); err != nil {
		c.recorder.Eventf(svc, corev1.EventTypeWarning, "FailedToUpdateEndpointSlices",
			"Error updating Endpoint Slices for Service %s/%s: %v", svc.Namespace, svc.Name, err)
		return fmt.Errorf("endpoint slices: %w", err)
	}
	return nil
}

func (c *Controller) enqueueService(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(key)
}

// addPod enqueues the Services selecting the pod.
func (c *Controller) addPod(obj any) {
	pod := obj.(*corev1.Pod)
	services, err := endpointsliceutil.GetPodServiceMemberships(c.services, pod)
	if err != nil {
		utilruntime.HandleError(fmt.Errorf("services of pod %s/%s: %w", pod.Namespace, pod.Name, err))
		return
	}
	for key := range services {
		c.queue.AddAfter(key, c.opts.BatchPeriod)
	}
}

// updatePod enqueues the Services a pod change can matter to: those it
// is, or was, selected by, when its readiness, addresses, labels,
// hostname or deletion changed.
func (c *Controller) updatePod(old, cur any) {
	for key := range endpointsliceutil.GetServicesToUpdateOnPodChange(c.services, old, cur) {
		c.queue.AddAfter(key, c.opts.BatchPeriod)
	}
}

// onSliceAdd resyncs a Service when a slice of ours appears that this
// controller did not write (or not in this version).
func (c *Controller) onSliceAdd(obj any) {
	s := obj.(*discoveryv1.EndpointSlice)
	if c.reconciler.ManagedByController(s) && c.tracker.ShouldSync(s) {
		c.enqueueForSlice(s)
	}
}

// onSliceUpdate resyncs the Service(s) of a slice someone else changed,
// relabelled to another Service, or took from or gave to this controller.
func (c *Controller) onSliceUpdate(old, cur any) {
	prev, s := old.(*discoveryv1.EndpointSlice), cur.(*discoveryv1.EndpointSlice)
	if prev.Labels[discoveryv1.LabelServiceName] != s.Labels[discoveryv1.LabelServiceName] {
		c.enqueueForSlice(s)
		c.enqueueForSlice(prev)
		return
	}
	if c.reconciler.ManagedByChanged(prev, s) || (c.reconciler.ManagedByController(s) && c.tracker.ShouldSync(s)) {
		c.enqueueForSlice(s)
	}
}

// onSliceDelete resyncs a Service whose slice was deleted by someone else.
func (c *Controller) onSliceDelete(obj any) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		tomb, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if s, ok = tomb.Obj.(*discoveryv1.EndpointSlice); !ok {
			return
		}
	}
	if c.reconciler.ManagedByController(s) && c.tracker.Has(s) && !c.tracker.HandleDeletion(s) {
		c.enqueueForSlice(s)
	}
}

func (c *Controller) enqueueForSlice(s *discoveryv1.EndpointSlice) {
	key, err := endpointslicerec.ServiceControllerKey(s)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.AddAfter(key, max(sliceChangeMinDelay, c.opts.BatchPeriod))
}
