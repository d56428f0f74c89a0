package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// NodesGroup is the group every node's credential is in.
const NodesGroup = "system:nodes"

// NodeName returns the node a user is (system:node:<name> in
// system:nodes), or false.
func NodeName(u user.Info) (string, bool) {
	if u == nil || !slices.Contains(u.GetGroups(), NodesGroup) {
		return "", false
	}
	name, ok := strings.CutPrefix(u.GetName(), "system:node:")
	return name, ok && name != ""
}

// NodeAuthorizer is Kubernetes' Node authorizer: a node may do what the
// system:node role grants, except that Secrets, ConfigMaps,
// PersistentVolumeClaims and ServiceAccount tokens are limited to those of
// the pods bound to it, and Leases to its own. What the graph of pods says
// is kept current by the server (SetPod, DeletePod).
type NodeAuthorizer struct {
	rules []rbacv1.PolicyRule

	mu   sync.RWMutex
	pods map[string]*podRefs       // namespace/name → what the pod uses
	refs map[string]map[string]int // node → "kind/ns/name" → pods referencing it
}

// podRefs is what one pod binds its node to.
type podRefs struct {
	node string
	refs []string // "kind/ns/name"
}

// NewNodeAuthorizer returns an authorizer granting nodes rules (the
// system:node role's).
func NewNodeAuthorizer(rules []rbacv1.PolicyRule) *NodeAuthorizer {
	return &NodeAuthorizer{rules: rules, pods: map[string]*podRefs{}, refs: map[string]map[string]int{}}
}

// SetPod records a pod's node and the objects it references.
func (n *NodeAuthorizer) SetPod(p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	refs := &podRefs{node: p.Spec.NodeName}
	if refs.node != "" {
		refs.refs = podReferences(p)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forget(key)
	if refs.node == "" {
		return
	}
	n.pods[key] = refs
	byRef := n.refs[refs.node]
	if byRef == nil {
		byRef = map[string]int{}
		n.refs[refs.node] = byRef
	}
	for _, r := range refs.refs {
		byRef[r]++
	}
}

// DeletePod forgets a deleted pod.
func (n *NodeAuthorizer) DeletePod(ns, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forget(ns + "/" + name)
}

func (n *NodeAuthorizer) forget(key string) {
	old := n.pods[key]
	if old == nil {
		return
	}
	delete(n.pods, key)
	byRef := n.refs[old.node]
	for _, r := range old.refs {
		if byRef[r]--; byRef[r] <= 0 {
			delete(byRef, r)
		}
	}
	if len(byRef) == 0 {
		delete(n.refs, old.node)
	}
}

// podReferences lists what a pod's node needs to read to run it.
func podReferences(p *corev1.Pod) []string {
	ns := p.Namespace
	set := map[string]bool{"serviceaccount/" + ns + "/" + p.Spec.ServiceAccountName: true}
	add := func(kind, name string) {
		if name != "" {
			set[kind+"/"+ns+"/"+name] = true
		}
	}
	for _, s := range p.Spec.ImagePullSecrets {
		add("secret", s.Name)
	}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.Secret != nil:
			add("secret", v.Secret.SecretName)
		case v.ConfigMap != nil:
			add("configmap", v.ConfigMap.Name)
		case v.PersistentVolumeClaim != nil:
			add("persistentvolumeclaim", v.PersistentVolumeClaim.ClaimName)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					add("secret", src.Secret.Name)
				}
				if src.ConfigMap != nil {
					add("configmap", src.ConfigMap.Name)
				}
			}
		}
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil {
					add("secret", e.SecretRef.Name)
				}
				if e.ConfigMapRef != nil {
					add("configmap", e.ConfigMapRef.Name)
				}
			}
			for _, e := range c.Env {
				if vf := e.ValueFrom; vf != nil {
					if vf.SecretKeyRef != nil {
						add("secret", vf.SecretKeyRef.Name)
					}
					if vf.ConfigMapKeyRef != nil {
						add("configmap", vf.ConfigMapKeyRef.Name)
					}
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	return out
}

// related reports whether a pod bound to node references kind ns/name.
func (n *NodeAuthorizer) related(node, kind, ns, name string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.refs[node][kind+"/"+ns+"/"+name] > 0
}

// graphKinds are the resources a node reaches only through its pods.
var graphKinds = map[string]string{"secrets": "secret", "configmaps": "configmap", "persistentvolumeclaims": "persistentvolumeclaim"}

// Authorize implements authorizer.Authorizer for nodes; for anyone else it
// has no opinion.
func (n *NodeAuthorizer) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	node, ok := NodeName(a.GetUser())
	if !ok {
		return authorizer.DecisionNoOpinion, "", nil
	}
	if a.IsResourceRequest() {
		group, resource, sub := a.GetAPIGroup(), a.GetResource(), a.GetSubresource()
		if kind, limited := graphKinds[resource]; limited && group == "" && sub == "" {
			switch {
			case a.GetName() == "":
				return authorizer.DecisionNoOpinion, "can only read individual " + resource, nil
			case !slices.Contains([]string{"get", "list", "watch"}, a.GetVerb()):
				return authorizer.DecisionNoOpinion, "can only read " + resource, nil
			case !n.related(node, kind, a.GetNamespace(), a.GetName()):
				return authorizer.DecisionNoOpinion, fmt.Sprintf("no relationship found between node '%s' and this object", node), nil
			}
			return authorizer.DecisionAllow, "", nil
		}
		if group == "" && resource == "serviceaccounts" && sub == "token" {
			if a.GetVerb() != "create" || !n.related(node, "serviceaccount", a.GetNamespace(), a.GetName()) {
				return authorizer.DecisionNoOpinion, fmt.Sprintf("no relationship found between node '%s' and this object", node), nil
			}
			return authorizer.DecisionAllow, "", nil
		}
		if group == "" && resource == "persistentvolumes" {
			return authorizer.DecisionNoOpinion, "persistent volumes are not served to nodes", nil
		}
		if group == "coordination.k8s.io" && resource == "leases" {
			if a.GetNamespace() != corev1.NamespaceNodeLease || (a.GetName() != "" && a.GetName() != node) {
				return authorizer.DecisionNoOpinion, "can only access its own lease in " + corev1.NamespaceNodeLease, nil
			}
		}
	}
	if rulesAllow(a, n.rules) {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}
