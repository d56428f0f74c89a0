// Package controller holds what the controllers of pods share, as
// kube-controller-manager's pkg/controller does for its own: expectations
// (what a controller waits to see in its cache after its own writes),
// pod creation and deletion with events, the controller-ref manager that
// adopts and releases by selector, the ranking of pods for scale-down,
// slow-start batches, the pod-template hash, and the pod readiness rules.
package controller
