// Package auth is who the API server's callers are and what they may do,
// in k8s.io/apiserver's terms (user.Info, authenticator.Request,
// authorizer.Authorizer), so its filters and helpers fit.
//
// Authentication, in order:
//   - a client certificate signed by the cluster CA: CN is the user, O the
//     groups (how nodes and the API server's own client to agents prove
//     themselves);
//   - a bearer token: the static admin and in-process tokens, then any
//     other token authenticators (ServiceAccount tokens, bootstrap tokens),
//     each answer cached for a few seconds as kube-apiserver caches them.
//
// Every authenticated user gets the group system:authenticated.
//
// Authorization: members of system:masters are allowed everything without
// a lookup (the admin and the in-process clients take this path, which is
// why enabling RBAC costs them nothing); the rest is asked of the Node
// authorizer and RBAC, in that order, the first decision wins.
package auth

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/request/union"
	x509request "k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/authentication/token/cache"
	tokenunion "k8s.io/apiserver/pkg/authentication/token/union"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	authzunion "k8s.io/apiserver/pkg/authorization/union"
)

// StaticTokens maps fixed bearer tokens to users: the admin's, and the
// in-process clients' (which exists only in memory).
type StaticTokens struct {
	mu     sync.RWMutex
	tokens map[string]user.Info
}

// NewStaticTokens returns an authenticator that knows no token yet.
func NewStaticTokens() *StaticTokens { return &StaticTokens{tokens: map[string]user.Info{}} }

// Add registers a bearer token for u.
func (t *StaticTokens) Add(token string, u user.Info) {
	t.mu.Lock()
	t.tokens[token] = u
	t.mu.Unlock()
}

// AuthenticateToken compares in constant time with every known token.
func (t *StaticTokens) AuthenticateToken(_ context.Context, token string) (*authenticator.Response, bool, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for known, u := range t.tokens {
		if subtle.ConstantTimeCompare([]byte(known), []byte(token)) == 1 {
			return &authenticator.Response{User: u}, true, nil
		}
	}
	return nil, false, nil
}

// AuthenticatorConfig says which credentials a server accepts.
type AuthenticatorConfig struct {
	// ClientCA verifies client certificates; nil accepts none.
	ClientCA *x509.CertPool
	// Static are the fixed tokens (admin, in-process).
	Static *StaticTokens
	// Tokens are the other token authenticators, tried in order after
	// the static ones; their answers are cached (successes 10 s,
	// failures 1 s).
	Tokens []authenticator.Token
}

// NewAuthenticator chains the configured credentials.
func NewAuthenticator(cfg AuthenticatorConfig) authenticator.Request {
	var reqs []authenticator.Request
	if cfg.ClientCA != nil {
		pool := cfg.ClientCA
		verify := func() (x509.VerifyOptions, bool) {
			return x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, true
		}
		reqs = append(reqs, x509request.NewDynamic(verify, x509request.CommonNameUserConversion))
	}
	tokens := []authenticator.Token{cfg.Static}
	if len(cfg.Tokens) > 0 {
		tokens = append(tokens, cache.New(tokenunion.New(cfg.Tokens...), false, 10*time.Second, time.Second))
	}
	reqs = append(reqs, bearertoken.New(tokenunion.New(tokens...)))
	return group.NewAuthenticatedGroupAdder(union.New(reqs...))
}

// NewAuthorizer is system:masters first, then the given authorizers (the
// Node authorizer, RBAC) in order.
func NewAuthorizer(authorizers ...authorizer.Authorizer) authorizer.Authorizer {
	all := append([]authorizer.Authorizer{authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup)}, authorizers...)
	return authzunion.New(all...)
}

// Allowed reports whether a is allowed, with the reason of a denial.
func Allowed(ctx context.Context, az authorizer.Authorizer, a authorizer.Attributes) (bool, string) {
	d, reason, err := az.Authorize(ctx, a)
	if err != nil && reason == "" {
		reason = err.Error()
	}
	return d == authorizer.DecisionAllow, reason
}
