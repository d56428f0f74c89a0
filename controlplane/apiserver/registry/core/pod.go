package core

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func podResource() *registry.Resource {
	st := podStrategy{registry.SpecStatus{Status: true, Generation: true}}
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Pod"), Plural: "pods", ShortNames: []string{"po"}, Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Pod{} },
		Strategy:   st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
			{Name: "binding", Kind: corev1.SchemeGroupVersion.WithKind("Binding"), Verbs: []string{"create"}, Handler: bindPod(st)},
			{Name: "log", Kind: corev1.SchemeGroupVersion.WithKind("Pod"), Verbs: []string{"get"}, Handler: podLog},
		},
		Fields: podFields,
		Columns: []registry.Column{
			{Name: "Ready", Type: "string", Description: "The aggregate readiness state of this pod for accepting traffic."},
			{Name: "Status", Type: "string", Description: "The aggregate status of the containers in this pod."},
			{Name: "Restarts", Type: "string", Description: "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."},
			{Name: "IP", Type: "string", Description: "IP address allocated to the pod.", Priority: 1},
			{Name: "Node", Type: "string", Description: "Name of the Node this pod is assigned to.", Priority: 1},
			{Name: "Nominated Node", Type: "string", Description: "Name of the node the pod is nominated to.", Priority: 1},
			{Name: "Readiness Gates", Type: "string", Description: "Readiness gates of the pod.", Priority: 1},
		},
		Row: podRow,
	}
}

// podStrategy: a pod's spec is nearly immutable; a pod bound to a node is
// deleted gracefully (its node's agent removes it after the grace period).
type podStrategy struct{ registry.SpecStatus }

func (podStrategy) Default(o runtime.Object) {
	p := o.(*corev1.Pod)
	DefaultPodSpec(&p.Spec)
	if p.Spec.EnableServiceLinks == nil {
		p.Spec.EnableServiceLinks = ptr.To(true)
	}
	if p.Spec.Priority == nil {
		p.Spec.Priority = ptr.To(int32(0))
	}
	if p.Spec.ServiceAccountName == "" {
		p.Spec.ServiceAccountName = "default"
	}
	if p.Status.Phase == "" {
		p.Status.Phase = corev1.PodPending
	}
	if p.Status.QOSClass == "" {
		p.Status.QOSClass = podQOS(&p.Spec)
	}
}

func (podStrategy) Validate(o runtime.Object) field.ErrorList {
	return ValidatePodSpec(&o.(*corev1.Pod).Spec, field.NewPath("spec"))
}

func (st podStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	errs := st.Validate(o)
	// Only a few fields of a pod's spec may change after creation.
	a, b := o.(*corev1.Pod).Spec.DeepCopy(), old.(*corev1.Pod).Spec.DeepCopy()
	for i := range a.Containers {
		if i < len(b.Containers) {
			a.Containers[i].Image = b.Containers[i].Image
		}
	}
	a.ActiveDeadlineSeconds = b.ActiveDeadlineSeconds
	a.Tolerations = b.Tolerations
	a.TerminationGracePeriodSeconds = b.TerminationGracePeriodSeconds
	if b.NodeName == "" {
		a.NodeName = ""
	}
	if !registry.EqualSemantic(a, b) {
		errs = append(errs, field.Forbidden(field.NewPath("spec"), "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"))
	}
	return errs
}

// BeginDelete: a pod bound to a node and not finished is only marked for
// deletion, for its grace period; an unbound or finished pod goes at once.
func (podStrategy) BeginDelete(o runtime.Object, opts *metav1.DeleteOptions) (int64, bool, error) {
	p := o.(*corev1.Pod)
	g := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if p.Spec.TerminationGracePeriodSeconds != nil {
		g = *p.Spec.TerminationGracePeriodSeconds
	}
	if opts.GracePeriodSeconds != nil {
		g = *opts.GracePeriodSeconds
	}
	if p.Spec.NodeName == "" || g <= 0 {
		return 0, false, nil
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return 0, false, nil
	}
	return g, true, nil
}

// Removable: a pod in its grace period waits for its node's agent.
func (podStrategy) Removable(o runtime.Object) bool {
	g := o.(*corev1.Pod).DeletionGracePeriodSeconds
	return g == nil || *g == 0
}

func podFields(o runtime.Object) fields.Set {
	p := o.(*corev1.Pod)
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

// podQOS is a simplified version of the real QoS classification.
func podQOS(s *corev1.PodSpec) corev1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range s.Containers {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			l, ok := c.Resources.Limits[r]
			if !ok {
				guaranteed = false
				continue
			}
			if q, ok := c.Resources.Requests[r]; ok && q.Cmp(l) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

func podRow(o runtime.Object) []interface{} {
	p := o.(*corev1.Pod)
	ready, total, restarts := 0, len(p.Spec.Containers), int64(0)
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	for i := len(p.Status.InitContainerStatuses) - 1; i >= 0; i-- {
		cs := p.Status.InitContainerStatuses[i]
		restarts += int64(cs.RestartCount)
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
		case cs.State.Terminated != nil:
			reason = "Init:" + cs.State.Terminated.Reason
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + cs.State.Waiting.Reason
		}
	}
	for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
		cs := p.Status.ContainerStatuses[i]
		restarts += int64(cs.RestartCount)
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			reason = cs.State.Waiting.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			reason = cs.State.Terminated.Reason
		case cs.State.Terminated != nil:
			reason = fmt.Sprintf("ExitCode:%d", cs.State.Terminated.ExitCode)
		case cs.Ready && cs.State.Running != nil:
			ready++
		}
	}
	if p.DeletionTimestamp != nil {
		reason = "Terminating"
		if p.Status.Reason == "NodeLost" {
			reason = "Unknown"
		}
	}
	node, ip := p.Spec.NodeName, p.Status.PodIP
	if node == "" {
		node = "<none>"
	}
	if ip == "" {
		ip = "<none>"
	}
	nominated := p.Status.NominatedNodeName
	if nominated == "" {
		nominated = "<none>"
	}
	gates := "<none>"
	if len(p.Spec.ReadinessGates) > 0 {
		gates = fmt.Sprintf("0/%d", len(p.Spec.ReadinessGates))
	}
	return []interface{}{fmt.Sprintf("%d/%d", ready, total), reason, restarts, ip, node, nominated, gates}
}
