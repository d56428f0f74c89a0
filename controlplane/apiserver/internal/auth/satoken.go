package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/skep-dev/skep/internal/pki"
)

// Issuer is the iss of the ServiceAccount tokens skep issues, and the
// audience they carry by default: the API server's in-cluster name, as
// kube-apiserver's --service-account-issuer is usually set.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// ServiceAccountTokens signs and verifies ServiceAccount tokens: JWTs
// (ES256) in Kubernetes' shape, audience-bound and expiring, bound to a
// Pod, Node or Secret whose existence is checked on every use (through
// Lookup), so a pod's token dies with the pod.
type ServiceAccountTokens struct {
	key    *ecdsa.PrivateKey
	keyID  string
	signer jose.Signer
	// Lookup tells whether the objects a token is bound to still exist
	// with the uids the token names.
	Lookup BoundObjects
}

// BoundObjects is what the authenticator asks of the server.
type BoundObjects interface {
	// ServiceAccountUID is the uid of ns/name, or "" when it does not exist.
	ServiceAccountUID(ctx context.Context, ns, name string) (types.UID, error)
	// Live reports whether the object of kind (Pod, Node, Secret) named
	// (ns, name) exists with uid and is not being deleted.
	Live(ctx context.Context, kind, ns, name string, uid types.UID) (bool, error)
}

// LoadOrCreateServiceAccountKey reads (or makes, mode 0600) the signing key.
func LoadOrCreateServiceAccountKey(path string) (*ServiceAccountTokens, error) {
	var key *ecdsa.PrivateKey
	if b, err := os.ReadFile(path); err == nil {
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("service account key %s: no PEM", path)
		}
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("service account key %s: %w", path, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := pki.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("write service account key: %w", err)
		}
	} else {
		return nil, fmt.Errorf("read service account key: %w", err)
	}
	// The key id is a hash of the public key, as kube-apiserver makes it.
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	return &ServiceAccountTokens{key: key, keyID: kid, signer: signer}, nil
}

// ref is a bound object's name and uid in a token.
type ref struct {
	Name string    `json:"name"`
	UID  types.UID `json:"uid"`
}

// k8sClaims are the kubernetes.io private claims.
type k8sClaims struct {
	Namespace      string `json:"namespace"`
	ServiceAccount ref    `json:"serviceaccount"`
	Pod            *ref   `json:"pod,omitempty"`
	Node           *ref   `json:"node,omitempty"`
	Secret         *ref   `json:"secret,omitempty"`
	WarnAfter      int64  `json:"warnafter,omitempty"`
}

type claims struct {
	jwt.Claims
	Kubernetes k8sClaims `json:"kubernetes.io"`
}

// TokenRequest is what a token is issued for.
type TokenRequest struct {
	Namespace, ServiceAccount string
	ServiceAccountUID         types.UID
	Audiences                 []string
	Expiration                time.Duration
	// Bound is the kind (Pod, Node, Secret), name and uid of the object
	// the token lives with; empty kind for none.
	BoundKind, BoundName string
	BoundUID             types.UID
	// NodeName and NodeUID, for a pod-bound token, name the pod's node.
	NodeName string
	NodeUID  types.UID
}

// Issue signs a token and returns it with its expiry.
func (t *ServiceAccountTokens) Issue(req TokenRequest) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(req.Expiration)
	c := claims{
		Claims: jwt.Claims{
			Issuer: Issuer, Subject: serviceaccount.MakeUsername(req.Namespace, req.ServiceAccount),
			Audience: jwt.Audience(req.Audiences), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			Expiry: jwt.NewNumericDate(exp), ID: string(uuid.NewUUID()),
		},
		Kubernetes: k8sClaims{Namespace: req.Namespace, ServiceAccount: ref{Name: req.ServiceAccount, UID: req.ServiceAccountUID}},
	}
	switch req.BoundKind {
	case "Pod":
		c.Kubernetes.Pod = &ref{Name: req.BoundName, UID: req.BoundUID}
		if req.NodeName != "" {
			c.Kubernetes.Node = &ref{Name: req.NodeName, UID: req.NodeUID}
		}
	case "Node":
		c.Kubernetes.Node = &ref{Name: req.BoundName, UID: req.BoundUID}
	case "Secret":
		c.Kubernetes.Secret = &ref{Name: req.BoundName, UID: req.BoundUID}
	}
	tok, err := jwt.Signed(t.signer).Claims(c).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return tok, exp, nil
}

// AuthenticateToken verifies a ServiceAccount token: our signature, our
// issuer, an audience of ours, not expired, and its account and bound
// object still there with the uids it names. Tokens that are not JWTs
// signed by us are not ours to judge (no opinion).
func (t *ServiceAccountTokens) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	if strings.Count(token, ".") != 2 {
		return nil, false, nil
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, false, nil
	}
	var c claims
	if err := parsed.Claims(&t.key.PublicKey, &c); err != nil {
		return nil, false, nil // another issuer's, or forged
	}
	if c.Issuer != Issuer {
		return nil, false, nil
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, Time: time.Now()}, 0); err != nil {
		return nil, false, fmt.Errorf("service account token: %w", err)
	}
	if !slices.ContainsFunc([]string(c.Audience), func(a string) bool { return a == Issuer }) {
		return nil, false, errors.New("service account token: not for this API server's audience")
	}
	k := c.Kubernetes
	ns, name, err := serviceaccount.SplitUsername(c.Subject)
	if err != nil || ns != k.Namespace || name != k.ServiceAccount.Name {
		return nil, false, errors.New("service account token: subject and claims disagree")
	}
	uid, err := t.Lookup.ServiceAccountUID(ctx, ns, name)
	if err != nil {
		return nil, false, err
	}
	if uid == "" || uid != k.ServiceAccount.UID {
		return nil, false, fmt.Errorf("service account %s/%s has been deleted", ns, name)
	}
	extra := map[string][]string{"authentication.kubernetes.io/credential-id": {"JTI=" + c.ID}}
	for kind, r := range map[string]*ref{"Pod": k.Pod, "Secret": k.Secret} {
		if r == nil {
			continue
		}
		live, err := t.Lookup.Live(ctx, kind, ns, r.Name, r.UID)
		if err != nil {
			return nil, false, err
		}
		if !live {
			return nil, false, fmt.Errorf("%s %s/%s the token is bound to is gone", strings.ToLower(kind), ns, r.Name)
		}
	}
	if k.Pod != nil {
		extra["authentication.kubernetes.io/pod-name"] = []string{k.Pod.Name}
		extra["authentication.kubernetes.io/pod-uid"] = []string{string(k.Pod.UID)}
	}
	if k.Node != nil {
		if k.Pod == nil { // a node-bound token lives with its node
			live, err := t.Lookup.Live(ctx, "Node", "", k.Node.Name, k.Node.UID)
			if err != nil {
				return nil, false, err
			}
			if !live {
				return nil, false, fmt.Errorf("node %s the token is bound to is gone", k.Node.Name)
			}
		}
		extra["authentication.kubernetes.io/node-name"] = []string{k.Node.Name}
		extra["authentication.kubernetes.io/node-uid"] = []string{string(k.Node.UID)}
	}
	return &authenticator.Response{
		Audiences: authenticator.Audiences(c.Audience),
		User:      &user.DefaultInfo{Name: c.Subject, UID: string(uid), Groups: serviceaccount.MakeGroupNames(ns), Extra: extra},
	}, true, nil
}

// JWKS is the public key set (/openid/v1/jwks).
func (t *ServiceAccountTokens) JWKS() ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &t.key.PublicKey, KeyID: t.keyID, Algorithm: string(jose.ES256), Use: "sig"}}}
	return json.Marshal(set)
}

// OpenIDConfiguration is the discovery document
// (/.well-known/openid-configuration) for an issuer whose keys are at
// jwksURI.
func OpenIDConfiguration(jwksURI string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"issuer":                                Issuer,
		"jwks_uri":                              jwksURI,
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(jose.ES256)},
	})
}
