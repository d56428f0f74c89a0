package apiserver

import (
	"context"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/internal/testutil"
)

// TestSelfReviews: the admin asking about itself through client-go (which
// sends protobuf) gets allowed, full rules and its identity; kubectl auth
// can-i says yes and kubectl auth whoami names the admin.
func TestSelfReviews(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	ssar, err := ts.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: "default", Verb: "create", Resource: "pods"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("selfsubjectaccessreview: %v", err)
	}
	if !ssar.Status.Allowed || ssar.Spec.ResourceAttributes == nil || ssar.Spec.ResourceAttributes.Resource != "pods" {
		t.Errorf("selfsubjectaccessreview: %+v", ssar)
	}
	ssrr, err := ts.cs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: "default"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("selfsubjectrulesreview: %v", err)
	}
	// The admin is in system:masters, bound to cluster-admin.
	if len(ssrr.Status.ResourceRules) == 0 || ssrr.Status.ResourceRules[0].Verbs[0] != "*" || ssrr.Status.ResourceRules[0].Resources[0] != "*" {
		t.Errorf("selfsubjectrulesreview: %+v", ssrr.Status)
	}
	ssr, err := ts.cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("selfsubjectreview: %v", err)
	}
	if ssr.Status.UserInfo.Username != "skep-admin" {
		t.Errorf("selfsubjectreview: %+v", ssr.Status)
	}
	// With an unknown token: 401, as every other API.
	if code, data, _ := ts.do(t, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json", `{}`, "Authorization", "Bearer bogus"); code != 401 {
		t.Errorf("unauthenticated review: %d %s", code, data)
	}

	bin := testutil.RequireBinary(t, "kubectl")
	out, err := kubectl(t, bin, ts, "", "auth", "can-i", "create", "pods")
	if err != nil || strings.TrimSpace(out) != "yes" {
		t.Errorf("kubectl auth can-i create pods: %q %v", out, err)
	}
	out, err = kubectl(t, bin, ts, "", "auth", "can-i", "--list")
	if err != nil || !strings.Contains(out, "*.*") {
		t.Errorf("kubectl auth can-i --list: %q %v", out, err)
	}
	out, err = kubectl(t, bin, ts, "", "auth", "whoami")
	if err != nil || !strings.Contains(out, "skep-admin") {
		t.Errorf("kubectl auth whoami: %q %v", out, err)
	}
}
