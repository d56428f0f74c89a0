package controller

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
)

// Base is the frame around a controller's sync function, the
// kubernetes/sample-controller shape: handlers put keys (namespace/name)
// on a rate-limited queue, workers take them off and sync them, a failed
// sync is retried with backoff, events go to the API server.
type Base struct {
	Kube     kubernetes.Interface
	Queue    workqueue.TypedRateLimitingInterface[string]
	Recorder record.EventRecorder
	Log      *slog.Logger
	Workers  int
	// MaxRetries drops a key after that many failed syncs in a row, until
	// it is queued again (0: retry forever).
	MaxRetries int

	synced      []cache.InformerSynced
	broadcaster record.EventBroadcaster
}

// NewBase makes the frame of the controller name (its logs and queue),
// whose events come from component.
func NewBase(kube kubernetes.Interface, name, component string, workers int, log *slog.Logger) *Base {
	if log == nil {
		log = slog.Default()
	}
	b := record.NewBroadcaster()
	return &Base{
		Kube: kube, Queue: NewQueue(name, nil), Workers: workers, Log: log.With("controller", name),
		Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component}), broadcaster: b,
	}
}

// NewQueue is a queue with client-go's default controller rate limiter
// (per-key exponential backoff, 5ms to 1000s, within 10 qps overall),
// on clk (nil: the real clock).
func NewQueue(name string, clk clock.WithTicker) workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name, Clock: clk})
}

// WaitFor adds informers Run waits for.
func (b *Base) WaitFor(synced ...cache.InformerSynced) { b.synced = append(b.synced, synced...) }

// Run records events, waits for the informers, starts the extra loops,
// then syncs the queue's keys with Workers workers until ctx ends.
func (b *Base) Run(ctx context.Context, sync func(context.Context, string) error, extra ...func(context.Context)) error {
	defer utilruntime.HandleCrash()
	defer b.Queue.ShutDown()
	b.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: b.Kube.CoreV1().Events("")})
	defer b.broadcaster.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), b.synced...) {
		return nil // ctx ended
	}
	b.Log.Info("started", "workers", b.Workers)
	for _, f := range extra {
		go f(ctx)
	}
	workers.Run(ctx, b.Workers, b.Queue, func(ctx context.Context, key string) { b.Process(ctx, b.Queue, key, sync) })
	return nil
}

// Process syncs one key of queue: forgotten on success, retried with
// backoff on failure (up to MaxRetries).
func (b *Base) Process(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], key string, sync func(context.Context, string) error) {
	err := sync(ctx, key)
	switch {
	case err == nil:
		queue.Forget(key)
	case b.MaxRetries == 0 || queue.NumRequeues(key) < b.MaxRetries:
		b.Log.Debug("sync failed; retrying", "key", key, "err", err)
		queue.AddRateLimited(key)
	default:
		b.Log.Error("sync failed; dropping it until it changes", "key", key, "err", err)
		queue.Forget(key)
	}
}

// Enqueue queues the key of an object (or of a deleted one's tombstone).
func (b *Base) Enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	b.Queue.Add(key)
}

// ForgetDeleted is the delete handler of a controller with expectations:
// it queues the key and forgets what the key awaited, so a new object of
// that name starts without expectations.
func (b *Base) ForgetDeleted(e *Expectations) func(obj any) {
	return func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			utilruntime.HandleError(err)
			return
		}
		e.Delete(key)
		b.Queue.Add(key)
	}
}

// Get splits a queue key and gets its object with get. ok is false when
// there is nothing to sync: the object is gone (err nil; the gone
// functions forget what the controller kept about it), the key is bad
// (logged, err nil), or get failed (err set).
func Get[T any](b *Base, key string, get func(ns, name string) (T, error), gone ...func()) (obj T, ok bool, err error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		b.Log.Error("bad queue key", "key", key, "err", err)
		return obj, false, nil
	}
	obj, err = get(ns, name)
	if apierrors.IsNotFound(err) {
		for _, f := range gone {
			f()
		}
		return obj, false, nil
	}
	return obj, err == nil, err
}

// Key is the queue key of an object.
func Key(m metav1.Object) string { return m.GetNamespace() + "/" + m.GetName() }

// Unwrap returns the object of a delete event, which may be a tombstone.
func Unwrap[T any](obj any) (T, bool) {
	if t, ok := obj.(T); ok {
		return t, true
	}
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		t, ok := tomb.Obj.(T)
		return t, ok
	}
	var zero T
	return zero, false
}

// Resolve returns what a controller reference names, if it is of kind
// and get finds it with the reference's uid.
func Resolve[T metav1.Object](ref *metav1.OwnerReference, kind string, get func(name string) (T, error)) (T, bool) {
	var zero T
	if ref == nil || ref.Kind != kind {
		return zero, false
	}
	o, err := get(ref.Name)
	if err != nil || o.GetUID() != ref.UID {
		return zero, false
	}
	return o, true
}

// RefChanged says two controller references name different controllers.
func RefChanged(a, b *metav1.OwnerReference) bool {
	if a == nil || b == nil {
		return a != b
	}
	return a.UID != b.UID
}

// Selecting returns the objects whose selector (non-empty) matches lbls.
func Selecting[T any](objs []T, selector func(T) *metav1.LabelSelector, lbls map[string]string) []T {
	if len(lbls) == 0 {
		return nil
	}
	var out []T
	for _, o := range objs {
		sel, err := metav1.LabelSelectorAsSelector(selector(o))
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(lbls)) {
			out = append(out, o)
		}
	}
	return out
}

// WriteStatus writes with write; if that fails it reads the object afresh
// once and writes again (a conflict with another writer). Further
// failures are left to the queue's backoff.
func WriteStatus[T any](obj T, write func(T) (T, error), reread func() (T, error)) (T, error) {
	out, err := write(obj)
	if err == nil {
		return out, nil
	}
	if obj, err = reread(); err != nil {
		return out, err
	}
	return write(obj)
}
