package core

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/apiserver/internal/auth"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// TokenIssuer signs ServiceAccount tokens (serviceaccounts/token).
type TokenIssuer interface {
	Issue(req auth.TokenRequest) (string, time.Time, error)
}

var tokenRequestKind = authenticationv1.SchemeGroupVersion.WithKind("TokenRequest")

func serviceAccountResource(issuer TokenIssuer) *registry.Resource {
	r := &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("ServiceAccount"), Plural: "serviceaccounts", ShortNames: []string{"sa"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.ServiceAccount{} },
		Columns:    []registry.Column{{Name: "Secrets", Type: "string", Description: "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", Priority: 1}},
		Row: func(o runtime.Object) []interface{} {
			return []interface{}{int64(len(o.(*corev1.ServiceAccount).Secrets))}
		},
	}
	if issuer != nil {
		r.Subresources = []*registry.Subresource{{Name: "token", Kind: tokenRequestKind, Verbs: []string{"create"}, Handler: tokenHandler(issuer)}}
	}
	return r
}

// Token lifetimes, as kube-apiserver bounds them.
const (
	minTokenExpiration     = 10 * time.Minute
	defaultTokenExpiration = time.Hour
)

// tokenHandler serves POST serviceaccounts/<name>/token (TokenRequest):
// a signed, audience-bound, expiring token, bound to a Pod, Secret or Node
// whose existence (with the named uid) the token then depends on.
func tokenHandler(issuer TokenIssuer) registry.Handler {
	return func(ctx context.Context, req *registry.Request) (runtime.Object, int, error) {
		tr := &authenticationv1.TokenRequest{}
		if err := req.Body.Decode(tr, tokenRequestKind); err != nil {
			return nil, 0, err
		}
		obj, err := req.Objects.Get(ctx, req.Namespace, req.Name)
		if err != nil {
			return nil, 0, err
		}
		sa := obj.(*corev1.ServiceAccount)
		if tr.Spec.ExpirationSeconds == nil {
			tr.Spec.ExpirationSeconds = ptr.To(int64(defaultTokenExpiration / time.Second))
		}
		if len(tr.Spec.Audiences) == 0 {
			tr.Spec.Audiences = []string{auth.Issuer}
		}
		var errs field.ErrorList
		sp := field.NewPath("spec")
		if exp := *tr.Spec.ExpirationSeconds; exp < int64(minTokenExpiration/time.Second) {
			errs = append(errs, field.Invalid(sp.Child("expirationSeconds"), exp, "may not specify a duration less than 10 minutes"))
		} else if exp > math.MaxUint32 {
			errs = append(errs, field.TooLong(sp.Child("expirationSeconds"), exp, math.MaxUint32))
		}
		issue := auth.TokenRequest{Namespace: sa.Namespace, ServiceAccount: sa.Name, ServiceAccountUID: sa.UID,
			Audiences: tr.Spec.Audiences, Expiration: time.Duration(*tr.Spec.ExpirationSeconds) * time.Second}
		if b := tr.Spec.BoundObjectRef; b != nil {
			bp := sp.Child("boundObjectRef")
			var gvr = corev1.SchemeGroupVersion.WithResource("pods")
			ns := sa.Namespace
			switch {
			case b.Kind == "Pod" && (b.APIVersion == "v1" || b.APIVersion == ""):
			case b.Kind == "Secret" && (b.APIVersion == "v1" || b.APIVersion == ""):
				gvr = corev1.SchemeGroupVersion.WithResource("secrets")
			case b.Kind == "Node" && (b.APIVersion == "v1" || b.APIVersion == ""):
				gvr, ns = corev1.SchemeGroupVersion.WithResource("nodes"), ""
			default:
				errs = append(errs, field.NotSupported(bp.Child("kind"), b.Kind, []string{"Pod", "Secret", "Node"}))
			}
			if len(errs) == 0 {
				bound, err := req.Others.Get(ctx, gvr, ns, b.Name)
				if err != nil {
					return nil, 0, err
				}
				m := registry.Meta(bound)
				if b.UID != "" && b.UID != m.GetUID() {
					return nil, 0, apierrors.NewConflict(gvr.GroupResource(), b.Name, fmt.Errorf("the UID in the bound object reference (%s) does not match the UID in record (%s); the object might have been deleted and then recreated", b.UID, m.GetUID()))
				}
				// NodeRestriction: a node asks tokens only for the pods bound to it.
				if u, ok := request.UserFrom(ctx); ok {
					if node, isNode := auth.NodeName(u); isNode {
						if p, ok := bound.(*corev1.Pod); !ok || p.Spec.NodeName != node {
							return nil, 0, apierrors.NewForbidden(corev1.Resource("serviceaccounts/token"), req.Name,
								fmt.Errorf("node %q can only get tokens bound to pods bound to it", node))
						}
					}
				}
				issue.BoundKind, issue.BoundName, issue.BoundUID = b.Kind, b.Name, m.GetUID()
				if p, ok := bound.(*corev1.Pod); ok && p.Spec.NodeName != "" {
					issue.NodeName = p.Spec.NodeName
					if node, err := req.Others.Get(ctx, corev1.SchemeGroupVersion.WithResource("nodes"), "", p.Spec.NodeName); err == nil {
						issue.NodeUID = registry.Meta(node).GetUID()
					}
				}
				tr.Spec.BoundObjectRef.UID = m.GetUID()
			}
		}
		if len(errs) > 0 {
			return nil, 0, registry.Invalid(tokenRequestKind.GroupKind(), req.Name, errs)
		}
		if u, ok := request.UserFrom(ctx); ok && issue.BoundKind == "" {
			if node, isNode := auth.NodeName(u); isNode {
				return nil, 0, apierrors.NewForbidden(corev1.Resource("serviceaccounts/token"), req.Name,
					fmt.Errorf("node %q can only get tokens bound to pods bound to it", node))
			}
		}
		if req.DryRun {
			return tr, http.StatusCreated, nil
		}
		tok, exp, err := issuer.Issue(issue)
		if err != nil {
			return nil, 0, apierrors.NewInternalError(err)
		}
		tr.ObjectMeta = metav1.ObjectMeta{Name: sa.Name, Namespace: sa.Namespace, CreationTimestamp: metav1.Now()}
		tr.Status = authenticationv1.TokenRequestStatus{Token: tok, ExpirationTimestamp: metav1.NewTime(exp)}
		tr.SetGroupVersionKind(tokenRequestKind)
		return tr, http.StatusCreated, nil
	}
}
