package apiserver

import (
	"context"
	"errors"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/skep-dev/skep/controlplane/apiserver/internal/auth"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/store"
)

// rbacPrefix is where the RBAC kinds live in the store.
const rbacPrefix = "/registry/" + rbacv1.GroupName + "/"

// loadRBAC hands every stored Role, ClusterRole and binding to the RBAC
// authorizer and returns the revision they were read at.
func (s *Server) loadRBAC(ctx context.Context) (int64, error) {
	var rev int64
	for _, res := range s.rbacResources() {
		_, err := s.store.Range(ctx, res.KeyPrefix(), store.ListOptions{}, func(r int64) error {
			if rev == 0 || r < rev {
				rev = r
			}
			return nil
		}, func(kv store.KV) error {
			obj, err := s.decodeKV(res, kv)
			if err != nil {
				return err
			}
			s.rbac.Set(obj)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return rev, nil
}

func (s *Server) rbacResources() []*registry.Resource {
	var out []*registry.Resource
	for _, res := range s.reg.All {
		if res.GVK.Group == rbacv1.GroupName {
			out = append(out, res)
		}
	}
	return out
}

// feedRBAC keeps the RBAC authorizer current with every write of an RBAC
// object, from the store's watch (so every server of a highly available
// control plane sees every other's writes); it relists when the watch
// ends or expires, until the server closes.
func (s *Server) feedRBAC(rev int64) {
	ctx := s.lifetime
	for ctx.Err() == nil {
		ch, err := s.store.Watch(ctx, rbacPrefix, rev, store.WatchOptions{})
		if err == nil {
			for ev := range ch {
				s.applyRBAC(ev)
				rev = ev.Revision
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, store.ErrExpired) {
			s.log.Error("rbac watch", "err", err)
			time.Sleep(time.Second)
		}
		// Fell behind or expired: read everything again.
		if rev, err = s.loadRBAC(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("rbac relist", "err", err)
			time.Sleep(time.Second)
		}
	}
}

func (s *Server) applyRBAC(ev store.Event) {
	if ev.Type == store.EventProgress {
		return
	}
	for _, res := range s.rbacResources() {
		if !strings.HasPrefix(ev.KV.Key, res.KeyPrefix()) {
			continue
		}
		obj, err := s.decodeKV(res, ev.KV)
		if err != nil {
			s.log.Error("rbac event", "key", ev.KV.Key, "err", err)
			return
		}
		if ev.Type == store.EventDelete {
			s.rbac.Delete(obj)
		} else {
			s.rbac.Set(obj)
		}
		return
	}
}

// rbacChecker is what the RBAC kinds' escalation prevention asks of the
// server.
type rbacChecker struct{ s *Server }

func (c rbacChecker) Covers(u user.Info, ns string, rules []rbacv1.PolicyRule) (bool, []rbacv1.PolicyRule) {
	return c.s.rbac.Covers(u, ns, rules)
}

func (c rbacChecker) Allowed(ctx context.Context, a authorizer.Attributes) bool {
	ok, _ := auth.Allowed(ctx, c.s.authz, a)
	return ok
}

func (c rbacChecker) RoleRules(ns string, ref rbacv1.RoleRef) ([]rbacv1.PolicyRule, bool) {
	switch ref.Kind {
	case "ClusterRole":
		if cr := c.s.rbac.ClusterRole(ref.Name); cr != nil {
			return cr.Rules, true
		}
	case "Role":
		if r := c.s.rbac.Role(ns, ref.Name); r != nil {
			return r.Rules, true
		}
	}
	return nil, false
}

// boundObjects answers the ServiceAccount token authenticator from the
// store: does the account exist, is the pod (node, secret) a token is
// bound to still there with its uid and not being deleted.
type boundObjects struct{ s *Server }

func (b boundObjects) ServiceAccountUID(ctx context.Context, ns, name string) (types.UID, error) {
	obj, err := getter{b.s}.Get(ctx, corev1.SchemeGroupVersion.WithResource("serviceaccounts"), ns, name)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return registry.Meta(obj).GetUID(), nil
}

func (b boundObjects) Live(ctx context.Context, kind, ns, name string, uid types.UID) (bool, error) {
	resource := map[string]string{"Pod": "pods", "Node": "nodes", "Secret": "secrets"}[kind]
	obj, err := getter{b.s}.Get(ctx, corev1.SchemeGroupVersion.WithResource(resource), ns, name)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m := registry.Meta(obj)
	if m.GetUID() != uid {
		return false, nil
	}
	if dt := m.GetDeletionTimestamp(); dt != nil && !dt.Time.After(time.Now()) {
		return false, nil // a pod past its grace period
	}
	return true, nil
}
