package auth

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// populated is an RBAC authorizer with 200 ClusterRoles of 8 rules each and
// 1,000 RoleBindings over 100 namespaces (users u0..u999), plus a
// ClusterRoleBinding of view to a group.
func populated() *RBAC {
	r := NewRBAC()
	for i := 0; i < 200; i++ {
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("role-%d", i)}}
		for j := 0; j < 8; j++ {
			cr.Rules = append(cr.Rules, rbacv1.PolicyRule{Verbs: []string{"get", "list", "watch", "create"}, APIGroups: []string{"", "apps"},
				Resources: []string{fmt.Sprintf("kind%d", j), fmt.Sprintf("kind%d/status", j)}})
		}
		r.Set(cr)
	}
	r.Set(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "edit"}, Rules: []rbacv1.PolicyRule{
		{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{""}, Resources: []string{"pods", "services", "secrets"}},
		{Verbs: []string{"create", "update", "patch", "delete"}, APIGroups: []string{""}, Resources: []string{"pods", "configmaps", "secrets"}},
	}})
	for i := 0; i < 1000; i++ {
		role := fmt.Sprintf("role-%d", i%200)
		if i%10 == 0 {
			role = "edit"
		}
		r.Set(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b-%d", i), Namespace: fmt.Sprintf("ns-%d", i%100)},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: fmt.Sprintf("u%d", i)}}})
	}
	r.Set(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewers"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "role-0"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "viewers"}}})
	return r
}

// BenchmarkAuthorize: one decision of the whole chain (system:masters,
// Node, RBAC) for a user with a binding among 1,000 RoleBindings and 200
// ClusterRoles, allowed and denied. The goal: p50 under 2 µs.
// Run: go test -run '^$' -bench Authorize ./controlplane/apiserver/internal/auth
func BenchmarkAuthorize(b *testing.B) {
	r := populated()
	az := NewAuthorizer(NewNodeAuthorizer(nil), r)
	u := &user.DefaultInfo{Name: "u510", Groups: []string{"viewers", user.AllAuthenticated}} // edit in ns-10
	for _, tc := range []struct {
		name string
		a    authorizer.AttributesRecord
		want authorizer.Decision
	}{
		{"allowed", authorizer.AttributesRecord{User: u, Verb: "create", Resource: "configmaps", Namespace: "ns-10", ResourceRequest: true}, authorizer.DecisionAllow},
		{"denied", authorizer.AttributesRecord{User: u, Verb: "create", Resource: "configmaps", Namespace: "ns-11", ResourceRequest: true}, authorizer.DecisionNoOpinion},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				d, _, _ := az.Authorize(ctx, tc.a)
				lat = append(lat, time.Since(t0))
				if d != tc.want {
					b.Fatalf("decision %v, want %v", d, tc.want)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// TestAuthorizeAmongMany: the indexed decision is the one a scan of every
// binding would give, for users with and without bindings.
func TestAuthorizeAmongMany(t *testing.T) {
	r := populated()
	for i := 0; i < 1000; i += 37 {
		u := &user.DefaultInfo{Name: fmt.Sprintf("u%d", i)}
		ns := fmt.Sprintf("ns-%d", i%100)
		other := fmt.Sprintf("ns-%d", (i+1)%100)
		res := "kind3"
		if i%10 == 0 {
			res = "pods"
		}
		for _, tc := range []struct {
			ns   string
			want authorizer.Decision
		}{{ns, authorizer.DecisionAllow}, {other, authorizer.DecisionNoOpinion}} {
			d, _, _ := r.Authorize(context.Background(), authorizer.AttributesRecord{User: u, Verb: "get", Resource: res, Namespace: tc.ns, ResourceRequest: true})
			if d != tc.want {
				t.Errorf("u%d get %s in %s: %v, want %v", i, res, tc.ns, d, tc.want)
			}
		}
	}
	// Removing a binding removes its grant.
	r.Delete(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "b-37", Namespace: "ns-37"}})
	d, _, _ := r.Authorize(context.Background(), authorizer.AttributesRecord{User: &user.DefaultInfo{Name: "u37"}, Verb: "get", Resource: "kind3", Namespace: "ns-37", ResourceRequest: true})
	if d != authorizer.DecisionNoOpinion {
		t.Errorf("after deleting the binding: %v", d)
	}
}
