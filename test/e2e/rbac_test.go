package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/skep-dev/skep/internal/pki"
	"github.com/skep-dev/skep/internal/testutil"
)

// canI runs `kubectl auth can-i` and returns its yes/no.
func (k *kubectl) canI(args ...string) string {
	k.t.Helper()
	out, _, _ := k.run(nil, append([]string{"auth", "can-i"}, args...)...)
	return strings.TrimSpace(out)
}

// TestRBAC: who may do what, with the real kubectl as the admin and, by
// impersonation (--as), as other users and ServiceAccounts.
func TestRBAC(t *testing.T) {
	srv := startServer(t)
	k := newKubectl(t, kubectls[0].path, srv)
	k.ok("create", "namespace", "team-a")
	k.ok("create", "namespace", "team-b")

	// The aggregated roles fill in from their parts.
	testutil.Eventually(t, 20*time.Second, "edit is aggregated", func() error {
		var cr rbacv1.ClusterRole
		if err := json.Unmarshal([]byte(k.ok("get", "clusterrole", "edit", "-o", "json")), &cr); err != nil {
			return err
		}
		if len(cr.Rules) == 0 {
			return errors.New("edit has no rules yet")
		}
		return nil
	})

	if got := k.canI("create", "pods", "--as", "jane", "-n", "team-a"); got != "no" {
		t.Fatalf("jane before any binding: can-i create pods = %q", got)
	}
	k.ok("create", "rolebinding", "jane-edit", "--clusterrole=edit", "--user=jane", "-n", "team-a")
	testutil.Eventually(t, 10*time.Second, "jane may create pods in team-a", func() error {
		if got := k.canI("create", "pods", "--as", "jane", "-n", "team-a"); got != "yes" {
			return fmt.Errorf("can-i = %q", got)
		}
		return nil
	})
	if got := k.canI("create", "pods", "--as", "jane", "-n", "team-b"); got != "no" {
		t.Errorf("edit in team-a reaches team-b: %q", got)
	}
	if got := k.canI("get", "secrets", "--as", "jane", "-n", "team-a"); got != "yes" {
		t.Errorf("edit gives secrets: %q", got)
	}
	if got := k.canI("create", "rolebindings", "--as", "jane", "-n", "team-a"); got != "no" {
		t.Errorf("edit gives rolebindings: %q", got)
	}
	errOut := k.fails("get", "pods", "-n", "team-b", "--as", "jane")
	wantContains(t, "forbidden list", errOut, `pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "team-b"`)

	// A ServiceAccount's rules, listed.
	k.ok("create", "rolebinding", "bot-view", "--clusterrole=view", "--serviceaccount=team-a:bot", "-n", "team-a")
	testutil.Eventually(t, 10*time.Second, "bot's rules", func() error {
		out := k.ok("auth", "can-i", "--list", "--as=system:serviceaccount:team-a:bot", "-n", "team-a")
		if !strings.Contains(out, "pods") || !strings.Contains(out, "[get list watch]") {
			return fmt.Errorf("can-i --list:\n%s", out)
		}
		return nil
	})

	// Escalation: an admin of team-a may bind roles there, but not one
	// granting more than it holds, and may not bind cluster-wide.
	k.ok("create", "rolebinding", "ann-admin", "--clusterrole=admin", "--user=ann", "-n", "team-a")
	testutil.Eventually(t, 10*time.Second, "ann may create rolebindings", func() error {
		if got := k.canI("create", "rolebindings", "--as", "ann", "-n", "team-a"); got != "yes" {
			return fmt.Errorf("can-i = %q", got)
		}
		return nil
	})
	k.ok("create", "rolebinding", "ann-grants-view", "--clusterrole=view", "--user=joe", "-n", "team-a", "--as", "ann")
	errOut = k.fails("create", "rolebinding", "ann-grants-all", "--clusterrole=cluster-admin", "--user=ann", "-n", "team-a", "--as", "ann")
	wantContains(t, "escalation", errOut, "is attempting to grant RBAC permissions not currently held")
	errOut = k.fails("create", "clusterrolebinding", "ann-root", "--clusterrole=cluster-admin", "--user=ann", "--as", "ann")
	wantContains(t, "cluster binding", errOut, `cannot create resource "clusterrolebindings"`)
	errOut = k.fails("create", "role", "ann-secrets-all", "--verb=*", "--resource=nodes", "-n", "team-a", "--as", "ann")
	wantContains(t, "role escalation", errOut, "is attempting to grant RBAC permissions not currently held")

	// The admin may act as jane.
	cfg := restConfig(t, srv)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "jane"}
	asJane := clientset(t, cfg)
	_, err := asJane.CoreV1().Pods("team-a").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("jane lists team-a pods: %v", err)
	}

	// A client certificate signed by the cluster CA is an identity: CN the
	// user, O the groups.
	ca, err := pki.LoadOrCreateCA(filepath.Join(srv.DataDir, "pki/ca.crt"), filepath.Join(srv.DataDir, "pki/ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueClient("jane", []string{"developers"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certCfg := restConfig(t, srv)
	certCfg.BearerToken, certCfg.BearerTokenFile = "", ""
	certCfg.CertData, certCfg.KeyData = certPEM, keyPEM
	janeCert := clientset(t, certCfg)
	who, err := janeCert.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if who.Status.UserInfo.Username != "jane" || !contains(who.Status.UserInfo.Groups, "developers") || !contains(who.Status.UserInfo.Groups, "system:authenticated") {
		t.Fatalf("client certificate identity: %+v", who.Status.UserInfo)
	}
	if _, err := janeCert.CoreV1().Pods("team-a").List(context.Background(), metav1.ListOptions{}); err != nil {
		t.Errorf("jane by certificate lists team-a pods: %v", err)
	}
	if _, err := janeCert.CoreV1().Secrets("team-b").List(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("jane by certificate lists team-b secrets: %v, want 403", err)
	}
	// jane may not impersonate.
	impCfg := rest.CopyConfig(certCfg)
	impCfg.Impersonate = rest.ImpersonationConfig{UserName: "ann"}
	if _, err := clientset(t, impCfg).CoreV1().Pods("team-a").List(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("jane impersonating ann: %v, want 403", err)
	}
	// A certificate from another CA is no identity.
	other, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca.crt"), filepath.Join(t.TempDir(), "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _ = other.IssueClient("system:admin", []string{"system:masters"}, time.Hour)
	forged := rest.CopyConfig(certCfg)
	forged.CertData, forged.KeyData = certPEM, keyPEM
	if _, err := clientset(t, forged).CoreV1().Pods("team-a").List(context.Background(), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("certificate of another CA: %v, want 401", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
