package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/internal/testutil"
)

// TestServiceAccounts: a namespace gets its default ServiceAccount and CA
// ConfigMap; a pod gets the kube-api-access volume; a token bound to the
// pod (what the node agent asks for) is an identity RBAC governs, verifiable
// with the issuer's published keys, and dies with the pod.
func TestServiceAccounts(t *testing.T) {
	srv := startServer(t)
	admin := clientset(t, restConfig(t, srv))
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "default ServiceAccount and kube-root-ca.crt", func() error {
		if _, err := admin.CoreV1().ServiceAccounts("apps").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		cm, err := admin.CoreV1().ConfigMaps("apps").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !strings.Contains(cm.Data["ca.crt"], "BEGIN CERTIFICATE") {
			return errors.New("no CA in kube-root-ca.crt")
		}
		return nil
	})

	pod, err := admin.CoreV1().Pods("apps").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].Projected == nil || !strings.HasPrefix(pod.Spec.Volumes[0].Name, "kube-api-access-") ||
		len(pod.Spec.Containers[0].VolumeMounts) != 1 || pod.Spec.Containers[0].VolumeMounts[0].MountPath != "/var/run/secrets/kubernetes.io/serviceaccount" {
		t.Fatalf("pod's kube-api-access volume: %+v / %+v", pod.Spec.Volumes, pod.Spec.Containers[0].VolumeMounts)
	}
	optOut, err := admin.CoreV1().Pods("apps").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "no-token"},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil || len(optOut.Spec.Volumes) != 0 {
		t.Fatalf("automountServiceAccountToken false: %v %+v", err, optOut.Spec.Volumes)
	}

	// The token a node agent asks for the pod.
	tr, err := admin.CoreV1().ServiceAccounts("apps").CreateToken(ctx, "default", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(int64(3607)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "client", UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status.Token == "" || time.Until(tr.Status.ExpirationTimestamp.Time) < time.Hour {
		t.Fatalf("token request: %+v", tr.Status)
	}
	// A wrong uid, or too short a life, is refused.
	if _, err := admin.CoreV1().ServiceAccounts("apps").CreateToken(ctx, "default", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "client", UID: "0000"}}}, metav1.CreateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("token for a pod uid that is not the pod's: %v, want 409", err)
	}
	if _, err := admin.CoreV1().ServiceAccounts("apps").CreateToken(ctx, "default", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(int64(60))}}, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("a one-minute token: %v, want 422", err)
	}

	// The pod's client: the token and the CA, as rest.InClusterConfig reads them.
	cfg := restConfig(t, srv)
	asPod := &rest.Config{Host: cfg.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.TLSClientConfig.CAData, CAFile: cfg.TLSClientConfig.CAFile}}
	podClient := clientset(t, asPod)
	who, err := podClient.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ui := who.Status.UserInfo; ui.Username != "system:serviceaccount:apps:default" || !contains(ui.Groups, "system:serviceaccounts:apps") ||
		len(ui.Extra["authentication.kubernetes.io/pod-name"]) != 1 || ui.Extra["authentication.kubernetes.io/pod-name"][0] != "client" {
		t.Fatalf("pod token identity: %+v", ui)
	}
	if _, err := podClient.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("pod lists pods with no binding: %v, want 403", err)
	}
	if _, err := admin.RbacV1().RoleBindings("apps").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "default-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: "apps"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the pod may list pods", func() error {
		_, err := podClient.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{})
		return err
	})

	// The issuer's keys verify the token (what an external verifier does).
	hc, tok, err := srv.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, bearer string) []byte {
		req, _ := http.NewRequest(http.MethodGet, cfg.Host+path, nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	var oidc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(get("/.well-known/openid-configuration", tr.Status.Token), &oidc); err != nil || oidc.Issuer != "https://kubernetes.default.svc.cluster.local" {
		t.Fatalf("openid-configuration: %v %+v", err, oidc)
	}
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(get("/openid/v1/jwks", tok), &keys); err != nil || len(keys.Keys) != 1 {
		t.Fatalf("jwks: %v %+v", err, keys)
	}
	parsed, err := jwt.ParseSigned(tr.Status.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := parsed.Claims(keys.Keys[0].Key, &claims); err != nil || claims.Subject != "system:serviceaccount:apps:default" {
		t.Fatalf("token does not verify with the published key: %v %+v", err, claims)
	}

	// Bad tokens: malformed, signed by another key, of a deleted pod.
	for name, bad := range map[string]string{
		"malformed":   "not.a.jwt",
		"garbage":     strings.Repeat("x", 40),
		"another key": forgedToken(t, claims),
	} {
		if _, err := clientset(t, &rest.Config{Host: asPod.Host, BearerToken: bad, TLSClientConfig: asPod.TLSClientConfig}).CoreV1().Pods("apps").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("%s token: %v, want 401", name, err)
		}
	}
	if err := admin.CoreV1().Pods("apps").Delete(ctx, "client", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}
	// Authentication answers are cached for up to 10 s, as kube-apiserver's.
	testutil.Eventually(t, 20*time.Second, "the deleted pod's token is refused", func() error {
		_, err := podClient.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{})
		if !apierrors.IsUnauthorized(err) {
			return fmt.Errorf("list with the deleted pod's token: %v", err)
		}
		return nil
	})
}

// forgedToken is a token with the same claims signed by a key of its own.
func forgedToken(t *testing.T, c jwt.Claims) string {
	t.Helper()
	jwk := newECKey(t)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// newECKey is a P-256 key for the forgery.
func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
