package controllers_test

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/controlplane/controllers"
	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/internal/testutil/apitest"
)

// workloadCluster is an in-process API server with the controller-manager
// and fake nodes: there is no scheduler and no node agent yet, so the test
// plays both, minimally (see fakeNodes).
type workloadCluster struct {
	cs    kubernetes.Interface
	cfg   *rest.Config
	kcfg  string // admin kubeconfig, for kubectl
	nodes *fakeNodes
}

// startWorkloads runs a server, the controllers (with opts) and fake
// nodes (with fo) until the test ends.
func startWorkloads(t testing.TB, opts controllers.Options, fo fakeNodeOptions) *workloadCluster {
	t.Helper()
	srv, cfg := apitest.Start(t)
	if opts.Logger == nil {
		opts.Logger = testutil.QuietLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controllers.RunWithOptions(ctx, cfg, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controllers run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("controllers did not stop")
		}
	})
	cs, err := kubernetes.NewForConfig(fastClient(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return &workloadCluster{cs: cs, cfg: cfg, kcfg: srv.KubeconfigPath(), nodes: startFakeNodes(t, cs, fo)}
}

// kubectls are the kubectl binaries the workload tests drive: the one on
// PATH (1.33) and 1.27, the oldest the project supports, when installed.
func kubectls(t *testing.T) []string {
	t.Helper()
	out := []string{testutil.RequireBinary(t, "kubectl")}
	if _, err := exec.LookPath(kubectl127); err == nil {
		out = append(out, kubectl127)
	} else {
		t.Logf("no %s: testing with %s only", kubectl127, out[0])
	}
	return out
}

const kubectl127 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"

// kubectl returns a function running the kubectl binary k against the
// cluster, failing the test on an error.
func (w *workloadCluster) kubectl(t *testing.T, k string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, k, append([]string{"--kubeconfig", w.kcfg}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", k, args, err, out)
		}
		return string(out)
	}
}

// fastClient lifts client-go's default 5 qps: the server is local.
func fastClient(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 5000, 10000
	return cfg
}

// fakeNodeOptions say what the fake agents do with a pod once bound.
type fakeNodeOptions struct {
	// Phase is the phase a bound pod reaches (default Running and
	// Ready); Succeeded and Failed end its one container with exit code 0
	// or 1.
	Phase func(*corev1.Pod) corev1.PodPhase
	// NoAgent binds pods but never reports their status (the benchmark's
	// binder, standing in for the scheduler only).
	NoAgent bool
	// Workers process pods in parallel (default 4).
	Workers int
}

// fakeNodes plays the scheduler and the node agents of the Node objects:
//   - a pod without a node is bound (pods/binding) to the node its required
//     node affinity names with matchFields metadata.name (a DaemonSet's
//     pods), else to the next Ready, schedulable node round-robin;
//   - a bound Pending pod is reported Running and Ready (or what Phase
//     says) through pods/status;
//   - a pod marked for deletion is deleted with grace 0, as its agent
//     would once its containers stopped.
type fakeNodes struct {
	cs    kubernetes.Interface
	opts  fakeNodeOptions
	pods  cache.Indexer
	nodes cache.Indexer
	queue workqueue.TypedInterface[string]
	next  atomic.Uint64
	// bound records when each pod was bound (the benchmark reads it).
	mu    sync.Mutex
	bound map[string]time.Time
}

func startFakeNodes(t testing.TB, cs kubernetes.Interface, opts fakeNodeOptions) *fakeNodes {
	t.Helper()
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	pi, ni := factory.Core().V1().Pods().Informer(), factory.Core().V1().Nodes().Informer()
	f := &fakeNodes{cs: cs, opts: opts, pods: pi.GetIndexer(), nodes: ni.GetIndexer(),
		queue: workqueue.NewTyped[string](), bound: map[string]time.Time{}}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			f.queue.Add(key)
		}
	}
	if _, err := pi.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }}); err != nil {
		t.Fatal(err)
	}
	// A node that appears may be the one a waiting pod needs; the pods of
	// a node that goes are deleted, as the pod garbage collector does.
	if _, err := ni.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) {
		for _, k := range f.pods.ListKeys() {
			f.queue.Add(k)
		}
	}, DeleteFunc: func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		for _, o := range f.pods.List() {
			if p := o.(*corev1.Pod); p.Spec.NodeName == n.Name {
				zero := int64(0)
				_ = f.cs.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
		}
	}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key, quit := f.queue.Get()
				if quit {
					return
				}
				if err := f.handle(ctx, key); err != nil && ctx.Err() == nil {
					// Conflicts with the controllers' writes: look again.
					go func() { time.Sleep(20 * time.Millisecond); f.queue.Add(key) }()
				}
				f.queue.Done(key)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		f.queue.ShutDown()
		wg.Wait()
		factory.Shutdown()
	})
	return f
}

// addNode creates a Ready node with capacity for 110 pods.
func (f *fakeNodes) addNode(t testing.TB, name string, lbls map[string]string, taints ...corev1.Taint) {
	t.Helper()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Capacity:   corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(110, resource.DecimalSI)},
		},
	}
	created, err := f.cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	created.Status = n.Status
	if _, err := f.cs.CoreV1().Nodes().UpdateStatus(context.Background(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node %s status: %v", name, err)
	}
	testutil.Eventually(t, 5*time.Second, "node "+name+" in the fake scheduler's cache", func() error {
		if _, ok, _ := f.nodes.GetByKey(name); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

func (f *fakeNodes) handle(ctx context.Context, key string) error {
	obj, ok, err := f.pods.GetByKey(key)
	if err != nil || !ok {
		return err
	}
	p := obj.(*corev1.Pod)
	switch {
	case p.DeletionTimestamp != nil:
		zero := int64(0)
		err := f.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	case p.Spec.NodeName == "":
		node := f.pick(p)
		if node == "" {
			return nil // no node fits yet; a node add requeues it
		}
		err := f.cs.CoreV1().Pods(p.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, UID: p.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}, metav1.CreateOptions{})
		if err == nil {
			f.mu.Lock()
			f.bound[key] = time.Now()
			f.mu.Unlock()
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	case p.Status.Phase == corev1.PodPending && !f.opts.NoAgent:
		return f.run(ctx, p)
	}
	return nil
}

// pick chooses a node for p.
func (f *fakeNodes) pick(p *corev1.Pod) string {
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, r := range term.MatchFields {
				if r.Key == "metadata.name" && r.Operator == corev1.NodeSelectorOpIn && len(r.Values) == 1 {
					if _, ok, _ := f.nodes.GetByKey(r.Values[0]); ok {
						return r.Values[0]
					}
					return ""
				}
			}
		}
	}
	var names []string
	for _, o := range f.nodes.List() {
		n := o.(*corev1.Node)
		if !n.Spec.Unschedulable && len(n.Spec.Taints) == 0 && labels.SelectorFromSet(p.Spec.NodeSelector).Matches(labels.Set(n.Labels)) {
			names = append(names, n.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return names[f.next.Add(1)%uint64(len(names))]
}

// run reports a bound pod as its agent would once its containers ran.
func (f *fakeNodes) run(ctx context.Context, p *corev1.Pod) error {
	phase := corev1.PodRunning
	if f.opts.Phase != nil {
		phase = f.opts.Phase(p)
	}
	now := metav1.Now()
	p = p.DeepCopy()
	p.Status.Phase = phase
	p.Status.StartTime = &now
	p.Status.PodIP = "10.244.0.1"
	ready := corev1.ConditionFalse
	var cs []corev1.ContainerStatus
	for _, c := range p.Spec.Containers {
		st := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
		switch phase {
		case corev1.PodRunning:
			st.Ready, st.Started = true, ptrTrue()
			st.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
		case corev1.PodSucceeded:
			st.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: now}
		case corev1.PodFailed:
			st.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", FinishedAt: now}
		}
		cs = append(cs, st)
	}
	if phase == corev1.PodRunning {
		ready = corev1.ConditionTrue
	}
	p.Status.ContainerStatuses = cs
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
	}
	_, err := f.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func ptrTrue() *bool { t := true; return &t }

// boundAt is when the fake scheduler bound the pod ns/name.
func (f *fakeNodes) boundAt(key string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.bound[key]
	return t, ok
}
