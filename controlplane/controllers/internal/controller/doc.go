// Package controller holds what the workload controllers share, as
// kube-controller-manager's pkg/controller does for its own: the frame
// around a sync function (Base: queue, events, run loop, retries), the
// pod event handlers of a controller of pods (PodEvents), expectations
// (what a controller waits to see in its cache after its own writes), pod
// creation and deletion with events, slow-start batches, the
// controller-ref manager that adopts and releases by selector, the pod
// index by controller, the ranking of pods for scale-down, the
// pod-template hash, and the pod readiness rules.
package controller
