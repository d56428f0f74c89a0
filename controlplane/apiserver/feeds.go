package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/skep-dev/skep/controlplane/apiserver/internal/auth"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/rbac"
	"github.com/skep-dev/skep/controlplane/store"
)

// A feed keeps an in-memory view (the RBAC authorizer's roles, the Node
// authorizer's graph of pods) current with the objects stored under a
// prefix: it loads them, then applies every later write from the store's
// watch (so every server of a highly available control plane sees every
// other's writes), and loads again when the watch ends or expires, until
// the server closes.
type feed struct {
	s         *Server
	prefix    string
	resources []*registry.Resource
	set, del  func(runtime.Object)
}

// newFeed is a feed of the resources whose keys start with prefix.
func (s *Server) newFeed(prefix string, set, del func(runtime.Object)) *feed {
	f := &feed{s: s, prefix: prefix, set: set, del: del}
	for _, res := range s.reg.All {
		if strings.HasPrefix(res.KeyPrefix(), prefix) {
			f.resources = append(f.resources, res)
		}
	}
	return f
}

// load hands every stored object to set and returns the revision they
// were read at.
func (f *feed) load(ctx context.Context) (int64, error) {
	var rev int64
	for _, res := range f.resources {
		_, err := f.s.store.Range(ctx, res.KeyPrefix(), store.ListOptions{}, func(r int64) error {
			if rev == 0 || r < rev {
				rev = r
			}
			return nil
		}, func(kv store.KV) error {
			obj, err := f.s.decodeKV(res, kv)
			if err != nil {
				return err
			}
			f.set(obj)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return rev, nil
}

// run follows the store from rev until the server closes.
func (f *feed) run(rev int64) {
	ctx := f.s.lifetime
	for ctx.Err() == nil {
		ch, err := f.s.store.Watch(ctx, f.prefix, rev, store.WatchOptions{})
		if err == nil {
			for ev := range ch {
				f.apply(ev)
				rev = ev.Revision
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, store.ErrExpired) {
			f.s.log.Error("feed watch", "prefix", f.prefix, "err", err)
			time.Sleep(time.Second)
		}
		// Fell behind or expired: read everything again.
		if rev, err = f.load(ctx); err != nil && ctx.Err() == nil {
			f.s.log.Error("feed relist", "prefix", f.prefix, "err", err)
			time.Sleep(time.Second)
		}
	}
}

func (f *feed) apply(ev store.Event) {
	if ev.Type == store.EventProgress {
		return
	}
	for _, res := range f.resources {
		if !strings.HasPrefix(ev.KV.Key, res.KeyPrefix()) {
			continue
		}
		obj, err := f.s.decodeKV(res, ev.KV)
		if err != nil {
			f.s.log.Error("feed event", "key", ev.KV.Key, "err", err)
			return
		}
		if ev.Type == store.EventDelete {
			f.del(obj)
		} else {
			f.set(obj)
		}
		return
	}
}

// startFeeds loads the authorizers' views and keeps them current.
func (s *Server) startFeeds(ctx context.Context) error {
	feeds := []*feed{
		s.newFeed("/registry/"+rbacv1.GroupName+"/", func(o runtime.Object) { s.rbac.Set(o) }, func(o runtime.Object) { s.rbac.Delete(o) }),
		s.newFeed("/registry/pods/", func(o runtime.Object) { s.nodeAuthz.SetPod(o.(*corev1.Pod)) },
			func(o runtime.Object) {
				s.nodeAuthz.DeletePod(registry.Meta(o).GetNamespace(), registry.Meta(o).GetName())
			}),
	}
	for _, f := range feeds {
		rev, err := f.load(ctx)
		if err != nil {
			return fmt.Errorf("load %s: %w", f.prefix, err)
		}
		go f.run(rev)
	}
	return nil
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

// nodeRules are the system:node role's rules, which the Node authorizer
// grants nodes (narrowed to their own objects).
func nodeRules() []rbacv1.PolicyRule {
	for _, cr := range rbac.BootstrapClusterRoles() {
		if cr.Name == "system:node" {
			return cr.Rules
		}
	}
	return nil
}

// kubeSystemSecret reads a Secret of kube-system (bootstrap tokens), nil
// when it does not exist.
func (s *Server) kubeSystemSecret(ctx context.Context, name string) (*corev1.Secret, error) {
	obj, err := getter{s}.Get(ctx, corev1.SchemeGroupVersion.WithResource("secrets"), metav1.NamespaceSystem, name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.Secret), nil
}
