package apiserver

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

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
// object before it is validated and stored. Today the ServiceAccount
// plugin for pods.
func (s *Server) mutate(ctx context.Context, res *registry.Resource, obj runtime.Object) error {
	if p, ok := obj.(*corev1.Pod); ok && res.GVK.Group == "" && res.Plural == "pods" {
		return s.admitServiceAccount(ctx, p)
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
