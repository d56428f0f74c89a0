// Package proxy is the control loop of skep's service proxy: it watches
// Services and EndpointSlices, computes for each Service the frontends and
// backends this node's data path must serve (desiredState), and applies only
// the difference from what it applied before (applier). The data path itself
// sits behind datapath.Datapath (the eBPF maps in package bpf).
//
// The loop follows kubernetes/sample-controller: informer event handlers
// only enqueue a service key (namespace/name); workers read the listers and
// sync one key at a time. At start the proxy adopts what the data path has
// programmed (pinned maps survive a restart) and reconciles it once the
// informers have synced, so a restart never flushes a working data path.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/proxy/datapath"
)

// labelServiceProxyName marks a Service as handled by another proxy; like
// kube-proxy, skep leaves such services alone.
const labelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// serviceIndex indexes EndpointSlices by the key of the Service they belong to.
const serviceIndex = "service"

// unhealthyAfter is how long a service may keep failing to sync before the
// proxy reports itself unhealthy (on /healthz and health-check node ports).
const unhealthyAfter = 30 * time.Second

// Config configures a Proxy.
type Config struct {
	Client   kubernetes.Interface
	Datapath datapath.Datapath
	// Node is this node. IPs and PodCIDRs left empty are taken from the
	// Node object named Node.Name (InternalIPs, spec.podCIDRs).
	Node Node
	// IPv6 programs IPv6 frontends too; off, they are left out (the eBPF
	// data path is IPv4-only for now and would refuse them).
	IPv6 bool
	// ResyncPeriod, when > 0, is how often the proxy re-reads what the data
	// path holds and re-syncs the services whose frontends differ from what
	// it applied: a safety net against writes it did not make.
	ResyncPeriod time.Duration
	// Workers sync distinct services in parallel (default 2). Data path
	// writes are serialised either way.
	Workers int
	// Registerer receives the proxy's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// OnApplied, when set, is called after a service's desired state has
	// been applied, with the time the informer handler saw the first event
	// that led to it. Benchmarks and tests use it to time the loop.
	OnApplied func(key string, event, applied time.Time)
}

// Proxy is the service proxy's control loop for one node.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	applier *applier
	health  *healthServer
	queue   workqueue.TypedRateLimitingInterface[string]

	sliceFactory informers.SharedInformerFactory
	svcFactory   informers.SharedInformerFactory
	nodeFactory  informers.SharedInformerFactory
	services     corelisters.ServiceLister
	slices       cache.Indexer
	synced       []cache.InformerSynced

	mu      sync.Mutex
	pending map[string]time.Time // key → first unhandled event
	failing map[string]time.Time // key → first failure of its current streak
	node    Node                 // cfg.Node completed from the Node object

	ready atomic.Bool
}

// New builds a proxy; Run starts it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Client == nil || cfg.Datapath == nil {
		return nil, errors.New("proxy: a client and a data path are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: newMetrics(cfg.Registerer),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "proxy"}),
		pending: map[string]time.Time{},
		failing: map[string]time.Time{},
		node:    cfg.Node,
	}
	p.applier = newApplier(cfg.Datapath, p.metrics)
	p.health = newHealthServer(func() []netip.Addr { return p.currentNode().IPs }, p.Healthy, p.log)
	if c, ok := cfg.Datapath.(datapath.Counters); ok && cfg.Registerer != nil {
		cfg.Registerer.MustRegister(newCountersCollector(c, p.frontendNames, p.log))
	}

	// Services labelled for another proxy never reach the cache.
	notOurs, err := labels.NewRequirement(labelServiceProxyName, selection.DoesNotExist, nil)
	if err != nil {
		return nil, fmt.Errorf("service selector: %w", err)
	}
	// Only slices that name their service; a headless service's slices
	// would program nothing.
	sliceSel := labels.NewSelector()
	for _, r := range []struct {
		key string
		op  selection.Operator
	}{{discoveryv1.LabelServiceName, selection.Exists}, {corev1.IsHeadlessService, selection.DoesNotExist}} {
		req, err := labels.NewRequirement(r.key, r.op, nil)
		if err != nil {
			return nil, fmt.Errorf("endpointslice selector: %w", err)
		}
		sliceSel = sliceSel.Add(*req)
	}
	p.sliceFactory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sliceSel.String() }))
	// One factory per resource: each has its own selector.
	p.svcFactory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.NewSelector().Add(*notOurs).String()
		}))
	services := p.svcFactory.Core().V1().Services()
	p.services = services.Lister()
	if _, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.enqueueObject(obj) },
		UpdateFunc: func(_, obj any) { p.enqueueObject(obj) },
		DeleteFunc: func(obj any) { p.enqueueObject(obj) },
	}); err != nil {
		return nil, fmt.Errorf("service handler: %w", err)
	}

	sliceInformer := p.sliceFactory.Discovery().V1().EndpointSlices().Informer()
	if err := sliceInformer.AddIndexers(cache.Indexers{serviceIndex: sliceServiceKeys}); err != nil {
		return nil, fmt.Errorf("endpointslice index: %w", err)
	}
	p.slices = sliceInformer.GetIndexer()
	if _, err := sliceInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { p.enqueueSlice(obj) },
		UpdateFunc: func(old, obj any) {
			// A slice moved to another service (label edit) leaves the old one.
			p.enqueueSlice(old)
			p.enqueueSlice(obj)
		},
		DeleteFunc: func(obj any) { p.enqueueSlice(obj) },
	}); err != nil {
		return nil, fmt.Errorf("endpointslice handler: %w", err)
	}
	p.synced = append(p.synced, services.Informer().HasSynced, sliceInformer.HasSynced)

	if cfg.Node.Name != "" && (len(cfg.Node.IPs) == 0 || len(cfg.Node.PodCIDRs) == 0) {
		p.nodeFactory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.Node.Name).String()
			}))
		nodeInformer := p.nodeFactory.Core().V1().Nodes().Informer()
		if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { p.nodeChanged(obj) },
			UpdateFunc: func(_, obj any) { p.nodeChanged(obj) },
		}); err != nil {
			return nil, fmt.Errorf("node handler: %w", err)
		}
		p.synced = append(p.synced, nodeInformer.HasSynced)
	}
	return p, nil
}

// Run adopts the data path's programmed state, starts the informers and
// workers, and blocks until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer p.queue.ShutDown()
	defer p.health.closeAll()

	adopted, err := p.applier.adopt()
	if err != nil {
		return err
	}
	p.log.Info("adopted programmed services", "services", len(adopted), "frontends", len(p.applier.snapshot()))
	// Services deleted while the proxy was away have no event to come: their
	// adopted frontends are reconciled (deleted) by key. Workers start only
	// once the caches have synced.
	for _, k := range adopted {
		p.enqueue(k)
	}

	p.sliceFactory.Start(ctx.Done())
	p.svcFactory.Start(ctx.Done())
	if p.nodeFactory != nil {
		p.nodeFactory.Start(ctx.Done())
	}
	defer p.sliceFactory.Shutdown()
	defer p.svcFactory.Shutdown()
	if p.nodeFactory != nil {
		defer p.nodeFactory.Shutdown()
	}
	// Polled faster than cache.WaitForCacheSync's 100 ms: a restarted proxy
	// applies the changes it missed that much sooner.
	err = wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(context.Context) (bool, error) {
		for _, synced := range p.synced {
			if !synced() {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for informer caches: %w", err)
	}
	want := p.desiredAll()
	p.applier.claim(want)
	if b, ok := p.cfg.Datapath.(datapath.BatchUpserter); ok {
		p.initialBatch(b, want)
	}
	p.ready.Store(true)

	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, func(context.Context) {
				for p.processNext() {
				}
			}, time.Second)
		}()
	}
	if p.cfg.ResyncPeriod > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(p.cfg.ResyncPeriod)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					p.resync()
				}
			}
		}()
	}
	p.log.Info("proxy running", "node", p.cfg.Node.Name, "workers", p.cfg.Workers)
	<-ctx.Done()
	p.queue.ShutDown()
	wg.Wait()
	return nil
}

// resync queues the services whose programmed state drifted.
func (p *Proxy) resync() {
	keys, err := p.applier.drift()
	if err != nil {
		p.log.Warn("resync", "err", err)
		return
	}
	if len(keys) > 0 {
		p.log.Warn("data path drifted from the applied state; re-syncing", "services", keys)
	}
	for _, k := range keys {
		p.enqueue(k)
	}
}

// Healthy reports whether the proxy has synced its caches and no service has
// been failing to apply for long.
func (p *Proxy) Healthy() bool {
	if !p.ready.Load() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, since := range p.failing {
		if time.Since(since) > unhealthyAfter {
			return false
		}
	}
	return true
}

// Applied returns a copy of the state the proxy believes is programmed.
func (p *Proxy) Applied() map[datapath.Frontend]datapath.Service { return p.applier.snapshot() }

func (p *Proxy) frontendNames() map[datapath.Frontend]string {
	snap := p.applier.snapshot()
	out := make(map[datapath.Frontend]string, len(snap))
	for f, s := range snap {
		out[f] = s.Name
	}
	return out
}

// enqueue records when the first not-yet-handled event for key arrived, for
// the sync latency metric, and queues the key.
func (p *Proxy) enqueue(key string) {
	now := time.Now()
	p.mu.Lock()
	if _, ok := p.pending[key]; !ok {
		p.pending[key] = now
	}
	p.mu.Unlock()
	p.queue.Add(key)
}

func (p *Proxy) enqueueObject(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	p.enqueue(key)
}

func (p *Proxy) enqueueSlice(obj any) {
	keys, err := sliceServiceKeys(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	for _, k := range keys {
		p.enqueue(k)
	}
}

// sliceServiceKeys returns the key of the service an EndpointSlice belongs to
// (its kubernetes.io/service-name label), also for delete tombstones.
func sliceServiceKeys(obj any) ([]string, error) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, fmt.Errorf("expected an EndpointSlice, got %T", obj)
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

// nodeChanged completes the node's addresses and pod CIDRs from its Node
// object and, when they changed, resyncs every service (NodePorts listen on
// the node's IPs).
func (p *Proxy) nodeChanged(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok || n.Name != p.cfg.Node.Name {
		return // the fake clientset ignores field selectors
	}
	next := p.cfg.Node.CompleteFrom(n)
	p.mu.Lock()
	changed := !slices.Equal(p.node.IPs, next.IPs) || !slices.Equal(p.node.PodCIDRs, next.PodCIDRs)
	p.node = next
	p.mu.Unlock()
	if !changed {
		return
	}
	p.log.Info("node addresses", "ips", next.IPs, "podCIDRs", next.PodCIDRs)
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	for _, s := range svcs {
		p.enqueueObject(s)
	}
}

func (p *Proxy) currentNode() Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.node
}

func (p *Proxy) processNext() bool {
	key, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(key)

	p.mu.Lock()
	event, hadEvent := p.pending[key]
	delete(p.pending, key)
	p.mu.Unlock()

	err := p.sync(key)
	now := time.Now()
	p.mu.Lock()
	if err != nil {
		// Keep the event time: the retry is what finally serves it.
		if cur, ok := p.pending[key]; hadEvent && (!ok || event.Before(cur)) {
			p.pending[key] = event
		}
		if _, ok := p.failing[key]; !ok {
			p.failing[key] = now
		}
	} else {
		delete(p.failing, key)
	}
	p.mu.Unlock()

	if err != nil {
		p.metrics.syncErrors.Inc()
		p.log.Warn("sync service", "service", key, "err", err)
		p.queue.AddRateLimited(key)
		return true
	}
	p.queue.Forget(key)
	if hadEvent {
		p.metrics.syncLatency.Observe(now.Sub(event).Seconds())
		if p.cfg.OnApplied != nil {
			p.cfg.OnApplied(key, event, now)
		}
	}
	return true
}

// desiredAll computes every service's desired frontends from the synced
// caches, for the start-up steps.
func (p *Proxy) desiredAll() map[string][]datapath.Service {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		p.log.Warn("list services", "err", err)
		return nil
	}
	want := make(map[string][]datapath.Service, len(svcs))
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		d, err := p.desiredFor(key, svc)
		if err != nil {
			p.log.Warn("desired state", "service", key, "err", err)
			continue
		}
		want[key] = d.services
	}
	return want
}

// initialBatch programs every service's upserts in one batched data path
// call once the caches have synced; the per-key syncs that follow then find
// (almost) nothing left to write. A failure only costs the speed-up.
func (p *Proxy) initialBatch(b datapath.BatchUpserter, want map[string][]datapath.Service) {
	start := time.Now()
	n, err := p.applier.applyBatch(b, want)
	if err != nil {
		p.log.Warn("initial batch; falling back to one service at a time", "err", err)
		return
	}
	p.log.Info("initial sync programmed", "services", len(want), "frontends written", n, "took", time.Since(start))
}

// desiredFor computes the desired state of service key; svc nil (gone) or
// labelled for another proxy desires nothing.
func (p *Proxy) desiredFor(key string, svc *corev1.Service) (desired, error) {
	if svc == nil || svc.Labels[labelServiceProxyName] != "" {
		return desired{}, nil
	}
	objs, err := p.slices.ByIndex(serviceIndex, key)
	if err != nil {
		return desired{}, fmt.Errorf("endpointslices of %s: %w", key, err)
	}
	eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		eps = append(eps, o.(*discoveryv1.EndpointSlice))
	}
	want := desiredState(svc, eps, p.currentNode())
	if !p.cfg.IPv6 {
		want.services = slices.DeleteFunc(want.services, func(s datapath.Service) bool { return !s.Frontend.IP.Is4() })
	}
	return want, nil
}

// sync applies one service's desired state. A service that is gone, or not
// ours, desires nothing: its frontends are deleted.
func (p *Proxy) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // a malformed key never becomes valid: drop it
	}
	svc, err := p.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		svc, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("get service: %w", err)
	}
	want, err := p.desiredFor(key, svc)
	if err != nil {
		return err
	}
	writes, handOver, err := p.applier.apply(key, want.services)
	for _, k := range handOver {
		p.enqueue(k)
	}
	if err != nil {
		return err
	}
	if writes > 0 {
		p.log.Debug("applied service", "service", key, "frontends", len(want.services), "writes", writes)
	}
	return p.health.sync(key, want.healthCheckPort, want.localReady)
}
