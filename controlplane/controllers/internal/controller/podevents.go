package controller

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// PodEvents are the pod event handlers of a controller of pods
// (ReplicaSet, DaemonSet), as upstream's: a pod's controller is synced
// when the pod changes, and its expectations count the pod's creation
// and deletion; an orphan wakes the controllers whose selector matches
// it, which may adopt it.
type PodEvents struct {
	Queue        workqueue.TypedRateLimitingInterface[string]
	Expectations *Expectations
	// Owner resolves a pod's controller reference to one of this
	// controller's objects: its key and minReadySeconds.
	Owner func(ns string, ref *metav1.OwnerReference) (key string, minReadySeconds int32, ok bool)
	// Selecting are the keys of this controller's objects that select an
	// orphan pod.
	Selecting func(p *corev1.Pod) []string
}

// Handlers are the informer handlers.
func (h *PodEvents) Handlers() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{AddFunc: h.add, UpdateFunc: h.update, DeleteFunc: h.delete}
}

func (h *PodEvents) owner(p *corev1.Pod) (string, int32, bool) {
	ref := metav1.GetControllerOfNoCopy(p)
	if ref == nil {
		return "", 0, false
	}
	return h.Owner(p.Namespace, ref)
}

func (h *PodEvents) enqueueSelecting(p *corev1.Pod) {
	for _, k := range h.Selecting(p) {
		h.Queue.Add(k)
	}
}

func (h *PodEvents) add(obj any) {
	p := obj.(*corev1.Pod)
	if p.DeletionTimestamp != nil {
		// Seen first already terminating (a restart): not a creation.
		h.delete(p)
		return
	}
	if metav1.GetControllerOfNoCopy(p) != nil {
		if key, _, ok := h.owner(p); ok {
			h.Expectations.CreationObserved(key)
			h.Queue.Add(key)
		}
		return
	}
	h.enqueueSelecting(p)
}

func (h *PodEvents) update(old, cur any) {
	o, p := old.(*corev1.Pod), cur.(*corev1.Pod)
	if o.ResourceVersion == p.ResourceVersion {
		return // a resync
	}
	labelsChanged := !labels.Equals(o.Labels, p.Labels)
	if p.DeletionTimestamp != nil {
		// A graceful delete shows as an update setting the timestamp:
		// count it as the deletion now, so a replacement starts without
		// waiting out the grace period.
		h.delete(p)
		if labelsChanged {
			h.delete(o)
		}
		return
	}
	oref, ref := metav1.GetControllerOfNoCopy(o), metav1.GetControllerOfNoCopy(p)
	refChanged := RefChanged(oref, ref)
	if refChanged && oref != nil {
		if key, _, ok := h.owner(o); ok {
			h.Queue.Add(key)
		}
	}
	if ref != nil {
		key, minReady, ok := h.owner(p)
		if !ok {
			return
		}
		h.Queue.Add(key)
		// A pod that became ready is available only minReadySeconds later.
		if !IsPodReady(o) && IsPodReady(p) && minReady > 0 {
			h.Queue.AddAfter(key, time.Duration(minReady)*time.Second+time.Second)
		}
		return
	}
	if labelsChanged || refChanged {
		h.enqueueSelecting(p)
	}
}

func (h *PodEvents) delete(obj any) {
	p, ok := Unwrap[*corev1.Pod](obj)
	if !ok {
		return
	}
	if key, _, ok := h.owner(p); ok {
		h.Expectations.DeletionObserved(key, PodKey(p))
		h.Queue.Add(key)
	}
}
