// Package controllertest helps the unit tests of the workload controllers
// drive their sync functions with client-go's fake clientset: it makes the
// fake do on create what the API server does (a name from generateName, a
// uid, a creation timestamp, generation 1), and lists what a test's sync
// wrote.
package controllertest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

// NewClientset is a fake clientset holding objs whose creates get what
// the API server would give them.
func NewClientset(objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objs...)
	var n atomic.Int64
	cs.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetSubresource() != "" {
			return false, nil, nil
		}
		m, err := meta.Accessor(ca.GetObject())
		if err != nil {
			return false, nil, nil
		}
		i := n.Add(1)
		if m.GetName() == "" && m.GetGenerateName() != "" {
			m.SetName(fmt.Sprintf("%s%05d", m.GetGenerateName(), i))
		}
		if m.GetUID() == "" {
			m.SetUID(types.UID(fmt.Sprintf("uid-%d", i)))
		}
		if ts := m.GetCreationTimestamp(); ts.IsZero() {
			m.SetCreationTimestamp(metav1.NewTime(time.Now()))
		}
		if m.GetGeneration() == 0 {
			m.SetGeneration(1)
		}
		return false, nil, nil
	})
	return cs
}

// Add puts objects into an informer's store, as if it had listed them.
func Add(inf cache.SharedIndexInformer, objs ...runtime.Object) {
	for _, o := range objs {
		if err := inf.GetIndexer().Add(o); err != nil {
			panic(err)
		}
	}
}

// Fake is a fake clientset holding objects, and an informer factory on it
// whose stores hold them too. Nothing runs: a test builds its controller
// on Informers and drives its sync function.
type Fake struct {
	*fake.Clientset
	Informers informers.SharedInformerFactory
	objs      []runtime.Object
}

// NewFake makes a Fake holding objs.
func NewFake(objs ...runtime.Object) *Fake {
	cs := NewClientset(objs...)
	return &Fake{Clientset: cs, Informers: informers.NewSharedInformerFactory(cs, 0), objs: objs}
}

// Build makes a Fake holding objs, builds a controller on it with newC,
// and fills the stores of the informers it asked for.
func Build[C any](t testing.TB, objs []runtime.Object, newC func(*Fake) (C, error)) (*Fake, C) {
	t.Helper()
	f := NewFake(objs...)
	c, err := newC(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Fill()
	return f, c
}

// Fill puts the objects into the stores of the informers the controller
// asked for (call it after building the controller).
func (f *Fake) Fill() {
	for _, o := range f.objs {
		var inf cache.SharedIndexInformer
		switch o.(type) {
		case *corev1.Pod:
			inf = f.Informers.Core().V1().Pods().Informer()
		case *corev1.Node:
			inf = f.Informers.Core().V1().Nodes().Informer()
		case *appsv1.ReplicaSet:
			inf = f.Informers.Apps().V1().ReplicaSets().Informer()
		case *appsv1.Deployment:
			inf = f.Informers.Apps().V1().Deployments().Informer()
		case *appsv1.DaemonSet:
			inf = f.Informers.Apps().V1().DaemonSets().Informer()
		case *appsv1.ControllerRevision:
			inf = f.Informers.Apps().V1().ControllerRevisions().Informer()
		case *batchv1.Job:
			inf = f.Informers.Batch().V1().Jobs().Informer()
		case *batchv1.CronJob:
			inf = f.Informers.Batch().V1().CronJobs().Informer()
		default:
			panic(fmt.Sprintf("no informer for %T", o))
		}
		Add(inf, o)
	}
}

// Actions are the verb/resource[/subresource] of the writes cs saw, in
// order ("create pods", "update replicasets/status", "patch pods").
func Actions(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		r := a.GetResource().Resource
		if s := a.GetSubresource(); s != "" {
			r += "/" + s
		}
		out = append(out, a.GetVerb()+" "+r)
	}
	return out
}

// Creates counts the creates of resource cs saw. (The fake records an
// action before its reactors run: read what was created back through cs.)
func Creates(cs *fake.Clientset, resource string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == resource && a.GetSubresource() == "" {
			n++
		}
	}
	return n
}

// Deleted returns the names of the objects of resource deleted through
// cs, in order.
func Deleted(cs *fake.Clientset, resource string) []string {
	var out []string
	for _, a := range cs.Actions() {
		if da, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == resource {
			out = append(out, da.GetName())
		}
	}
	return out
}
