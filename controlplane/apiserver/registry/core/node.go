package core

import (
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func nodeResource() *registry.Resource {
	st := nodeStrategy{SpecStatus: registry.SpecStatus{Status: true}}
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Node"), Plural: "nodes", ShortNames: []string{"no"},
		New:      func() runtime.Object { return &corev1.Node{} },
		Strategy: st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: registry.StatusStrategy(st)},
		},
		Fields: func(o runtime.Object) fields.Set {
			return fields.Set{"spec.unschedulable": strconv.FormatBool(o.(*corev1.Node).Spec.Unschedulable)}
		},
		Columns: []registry.Column{
			{Name: "Status", Type: "string", Description: "The status of the node"},
			{Name: "Roles", Type: "string", Description: "The roles of the node"},
			{Name: "Version", Type: "string", Description: "Kubelet Version reported by the node."},
			{Name: "Internal-IP", Type: "string", Description: "List of internal IPs for the node.", Priority: 1},
			{Name: "External-IP", Type: "string", Description: "List of external IPs for the node.", Priority: 1},
			{Name: "OS-Image", Type: "string", Description: "OS image reported by the node.", Priority: 1},
			{Name: "Kernel-Version", Type: "string", Description: "Kernel version reported by the node.", Priority: 1},
			{Name: "Container-Runtime", Type: "string", Description: "Container runtime reported by the node.", Priority: 1},
		},
		Row: nodeRow,
	}
}

// nodeStrategy: as in Kubernetes, a node may be created with its status
// (an agent registers with its addresses and conditions); updates through
// the object keep the stored status.
type nodeStrategy struct{ registry.SpecStatus }

func (nodeStrategy) PrepareForCreate(runtime.Object) {}

func nodeRow(o runtime.Object) []interface{} {
	n := o.(*corev1.Node)
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	var roles []string
	for k := range n.Labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	rolesStr := "<none>"
	if len(roles) > 0 {
		rolesStr = strings.Join(roles, ",")
	}
	internal, external := "<none>", "<none>"
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && internal == "<none>" {
			internal = a.Address
		}
		if a.Type == corev1.NodeExternalIP && external == "<none>" {
			external = a.Address
		}
	}
	ni := n.Status.NodeInfo
	return []interface{}{status, rolesStr, ni.KubeletVersion, internal, external, ni.OSImage, ni.KernelVersion, ni.ContainerRuntimeVersion}
}
