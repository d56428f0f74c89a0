package apiserver

import (
	"context"
	"encoding/json"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/request"

	"github.com/skep-dev/skep/controlplane/apiserver/internal/auth"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// admit runs the admission checks every create passes: today
// NamespaceLifecycle, as kube-apiserver's plugin of that name — no new
// content in a namespace that does not exist or is being terminated.
func (s *Server) admit(ctx context.Context, res *registry.Resource, ns, name string) error {
	if !res.Namespaced {
		return nil
	}
	nsRes := s.reg.Lookup(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"})
	kv, err := s.store.Get(ctx, nsRes.Key("", ns))
	if err != nil {
		return storeErr(err, nsRes, ns)
	}
	terminating := func() error {
		return apierrors.NewForbidden(res.GroupResource(), name, fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	// This runs on every create: remember each namespace's state at its
	// last revision rather than decoding it again.
	if c, ok := s.nsState.Load(ns); ok && c.(nsState).rev == kv.ModRevision {
		if c.(nsState).terminating {
			return terminating()
		}
		return nil
	}
	// Only the lifecycle fields are decoded.
	var n struct {
		Metadata struct {
			DeletionTimestamp *metav1.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("decode namespace %s: %w", ns, err))
	}
	isTerminating := n.Metadata.DeletionTimestamp != nil || n.Status.Phase == "Terminating"
	s.nsState.Store(ns, nsState{rev: kv.ModRevision, terminating: isTerminating})
	if isTerminating {
		return terminating()
	}
	return nil
}

// nsState is what admit needs of a namespace at one revision.
type nsState struct {
	rev         int64
	terminating bool
}

// Mutating admission: what kube-apiserver's admission plugins set on an
// object before it is validated and stored: the ServiceAccount plugin for
// pods, and a CertificateSigningRequest's requester.
func (s *Server) mutate(ctx context.Context, res *registry.Resource, obj runtime.Object) error {
	switch o := obj.(type) {
	case *corev1.Pod:
		return s.admitServiceAccount(ctx, o)
	case *certificatesv1.CertificateSigningRequest:
		// Who asks is the server's to say, not the request's.
		o.Spec.Username, o.Spec.UID, o.Spec.Groups, o.Spec.Extra = "", "", nil, nil
		if u, ok := request.UserFrom(ctx); ok {
			o.Spec.Username, o.Spec.UID, o.Spec.Groups = u.GetName(), u.GetUID(), u.GetGroups()
			for k, v := range u.GetExtra() {
				if o.Spec.Extra == nil {
					o.Spec.Extra = map[string]certificatesv1.ExtraValue{}
				}
				o.Spec.Extra[k] = v
			}
		}
	}
	return nil
}

// serviceAccountMountPath is where a pod finds its API credentials, as
// client-go's rest.InClusterConfig expects them.
const serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// admitServiceAccount is Kubernetes' ServiceAccount admission: a pod runs
// as its ServiceAccount ("default" unless named) and, unless the pod or the
// account opts out, gets the projected kube-api-access volume (a bound
// token the node agent fetches and refreshes, the cluster CA, the
// namespace) mounted in every container. Unlike Kubernetes, a pod naming an
// account that does not exist yet is not refused: the account controller
// makes "default" moments after a namespace, and until it exists the
// agent cannot get the pod a token, which it reports.
func (s *Server) admitServiceAccount(ctx context.Context, p *corev1.Pod) error {
	if p.Spec.ServiceAccountName == "" {
		p.Spec.ServiceAccountName = "default"
	}
	automount := true
	if p.Spec.AutomountServiceAccountToken != nil {
		automount = *p.Spec.AutomountServiceAccountToken
	} else if obj, err := (getter{s}).Get(ctx, corev1.SchemeGroupVersion.WithResource("serviceaccounts"), p.Namespace, p.Spec.ServiceAccountName); err == nil {
		if sa := obj.(*corev1.ServiceAccount); sa.AutomountServiceAccountToken != nil {
			automount = *sa.AutomountServiceAccountToken
		}
	}
	if !automount {
		return nil
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for _, m := range c.VolumeMounts {
				if m.MountPath == serviceAccountMountPath {
					return nil // the pod mounts something of its own there
				}
			}
		}
	}
	name := "kube-api-access-" + generateNameSuffix()
	expiration, mode := int64(3607), int32(0o644)
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: &expiration, Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace",
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}}})
	mount := corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: serviceAccountMountPath}
	for i := range p.Spec.InitContainers {
		p.Spec.InitContainers[i].VolumeMounts = append(p.Spec.InitContainers[i].VolumeMounts, mount)
	}
	for i := range p.Spec.Containers {
		p.Spec.Containers[i].VolumeMounts = append(p.Spec.Containers[i].VolumeMounts, mount)
	}
	return nil
}

// restrictNode is Kubernetes' NodeRestriction admission: a node's
// credential changes only its own Node and Lease and the pods bound to it
// (their status, by RBAC's rules), and creates no pods (skep has no static
// pods to mirror). obj is nil for a delete, old nil for a create.
func restrictNode(ctx context.Context, res *registry.Resource, obj, old runtime.Object) error {
	u, ok := request.UserFrom(ctx)
	if !ok {
		return nil
	}
	node, isNode := auth.NodeName(u)
	if !isNode {
		return nil
	}
	target := obj
	if target == nil {
		target = old
	}
	m := registry.Meta(target)
	deny := func(format string, args ...any) error {
		return apierrors.NewForbidden(res.GroupResource(), m.GetName(), fmt.Errorf(format, args...))
	}
	switch {
	case res.GVK.Group == "" && res.Plural == "nodes":
		if m.GetName() != node {
			return deny("node %q is not allowed to modify node %q", node, m.GetName())
		}
	case res.GVK.Group == "" && res.Plural == "pods":
		if old == nil {
			return deny("node %q can only create mirror pods, which skep does not have", node)
		}
		if p := old.(*corev1.Pod); p.Spec.NodeName != node {
			return deny("node %q can only modify pods bound to it, not one bound to %q", node, p.Spec.NodeName)
		}
	case res.GVK.Group == "coordination.k8s.io" && res.Plural == "leases":
		if m.GetNamespace() != corev1.NamespaceNodeLease || m.GetName() != node {
			return deny("node %q can only modify its own lease in %s", node, corev1.NamespaceNodeLease)
		}
	}
	return nil
}
