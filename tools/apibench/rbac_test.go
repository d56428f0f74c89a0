package apibench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skep-dev/skep/internal/pki"
	"github.com/skep-dev/skep/test/e2e/harness"
)

// certClients returns n clientsets (each its own connection) that present a
// client certificate for user in groups, signed by the server's CA.
func certClients(b *testing.B, s *harness.Server, user string, groups []string, n int) []*kubernetes.Clientset {
	b.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(s.DataDir, "pki/ca.crt"), filepath.Join(s.DataDir, "pki/ca.key"))
	if err != nil {
		b.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueClient(user, groups, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := s.RESTConfig()
	if err != nil {
		b.Fatal(err)
	}
	cfg.BearerToken, cfg.BearerTokenFile = "", ""
	cfg.CertData, cfg.KeyData, cfg.CertFile, cfg.KeyFile = certPEM, keyPEM, "", ""
	out := make([]*kubernetes.Clientset, n)
	for i := range out {
		if out[i], err = kubernetes.NewForConfig(harness.OwnConnection(cfg)); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// populateRBAC stores the issue's policy size: 200 ClusterRoles of 8 rules
// and 1,000 RoleBindings over 100 namespaces, then binds edit to user in ns.
func populateRBAC(b *testing.B, cs *kubernetes.Clientset, user, ns string) {
	b.Helper()
	ctx := context.Background()
	err := harness.Parallel(ctx, 200, 16, func(ctx context.Context, _, i int) error {
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-role-%d", i)}}
		for j := 0; j < 8; j++ {
			cr.Rules = append(cr.Rules, rbacv1.PolicyRule{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{"", "apps"},
				Resources: []string{fmt.Sprintf("kind%d", j), fmt.Sprintf("kind%d/status", j)}})
		}
		_, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	err = harness.Parallel(ctx, 100, 16, func(ctx context.Context, _, i int) error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-ns-%d", i)}}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	err = harness.Parallel(ctx, 1000, 16, func(ctx context.Context, _, i int) error {
		_, err := cs.RbacV1().RoleBindings(fmt.Sprintf("bench-ns-%d", i%100)).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b-%d", i)},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: fmt.Sprintf("bench-role-%d", i%200)},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: fmt.Sprintf("u%d", i)}},
		}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "editor"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// The authorizer learns bindings from the store's watch: wait until the
	// new one allows.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar(user, ns), metav1.CreateOptions{})
		if err == nil && r.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("edit binding for %s not in effect: %v %+v", user, err, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkRBACCreate: configmap creates/s at 16 clients by a user whose
// right comes from an edit RoleBinding among 1,000 RoleBindings and 200
// ClusterRoles, against the same server's admin (system:masters, the fast
// path), in alternating rounds so machine noise falls on both alike. Both
// present client certificates, so authentication costs the same. The issue's
// goal: the median ratio of rounds >= 0.95.
func BenchmarkRBACCreate(b *testing.B) {
	s := server(b, "rbac")
	admin := certClients(b, s, "bench-admin", []string{"system:masters"}, 16)
	const user, ns = "bench-editor", "rbac-bench"
	fixture(b, "rbac-policy", func() (struct{}, func(), error) {
		populateRBAC(b, admin[0], user, ns)
		return struct{}{}, func() {}, nil
	})
	editor := certClients(b, s, user, nil, 16)

	const rounds, ops = 6, 1500
	var withAdmin, withRBAC, ratio, cpuAdmin, cpuRBAC []float64
	// round returns creates/s and the server's CPU µs per create: the CPU
	// figure is steadier than the rate on a loaded machine.
	round := func(css []*kubernetes.Clientset) (float64, float64) {
		cpu0 := cpuOf(b, s.Pid())
		d := run(b, 16, ops, func(ctx context.Context, w, _ int) error {
			name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
			_, err := css[w].CoreV1().ConfigMaps(ns).Create(ctx, harness.ConfigMap(ns, name), metav1.CreateOptions{})
			return err
		})
		return ops / d.Seconds(), float64((cpuOf(b, s.Pid()) - cpu0).Microseconds()) / ops
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for r := 0; r < rounds; r++ {
			// Alternate which goes first, so neither always follows the
			// other's checkpoint.
			var a, e, ca, ce float64
			if r%2 == 0 {
				a, ca = round(admin)
				e, ce = round(editor)
			} else {
				e, ce = round(editor)
				a, ca = round(admin)
			}
			withAdmin, withRBAC, ratio = append(withAdmin, a), append(withRBAC, e), append(ratio, e/a)
			cpuAdmin, cpuRBAC = append(cpuAdmin, ca), append(cpuRBAC, ce)
		}
	}
	b.StopTimer()
	b.ReportMetric(median(withAdmin), "admin-creates/s")
	b.ReportMetric(median(withRBAC), "rbac-creates/s")
	b.ReportMetric(median(ratio), "rbac/admin")
	b.ReportMetric(median(cpuAdmin), "admin-server-cpu-us/create")
	b.ReportMetric(median(cpuRBAC), "rbac-server-cpu-us/create")
	summary.Set("rbac: creates/s, 16 clients, admin fast path (median)", median(withAdmin), "/s", "")
	summary.Set("rbac: creates/s, 16 clients, edit RoleBinding among 1,000 (median)", median(withRBAC), "/s", "")
	summary.Set("rbac: ratio rbac / admin (median of rounds)", median(ratio), "x", ">= 0.95")
	summary.Set("rbac: server CPU us/create, admin (median)", median(cpuAdmin), "us", "")
	summary.Set("rbac: server CPU us/create, rbac (median)", median(cpuRBAC), "us", "")
	fmt.Fprintf(os.Stderr, "apibench: rbac rounds admin %v rbac %v; server CPU us/create admin %v rbac %v\n", rounded(withAdmin), rounded(withRBAC), rounded(cpuAdmin), rounded(cpuRBAC))
}

// sar asks whether user may create configmaps in ns.
func sar(user, ns string) *authorizationv1.SubjectAccessReview {
	return &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "configmaps"},
	}}
}
