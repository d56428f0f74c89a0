// Package auth is who the API server's callers are and what they may do:
// authenticators turn a request into a User, authorizers decide on its
// Attributes.
package auth

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
)

// User is an authenticated identity.
type User struct {
	Name   string
	Groups []string
}

// Authenticator identifies the caller of a request. The admin token is the
// only credential today; node credentials (issued when a node joins with the
// cluster join token) plug in as another Authenticator.
type Authenticator interface {
	AuthenticateRequest(r *http.Request) (*User, error)
}

// Attributes describe what a request wants to do, for authorization.
type Attributes struct {
	User            *User
	Verb            string
	APIGroup        string
	Resource        string
	Subresource     string
	Namespace       string
	Name            string
	Path            string
	ResourceRequest bool
}

// Authorizer decides whether a user may do what a request asks. Today every
// authenticated user is the admin; the node authorizer (a node may touch
// only its own Node, Lease and its pods' status) is the planned second one.
type Authorizer interface {
	Authorize(a Attributes) (allowed bool, reason string)
}

// ErrUnauthorized is returned for a request without a credential the
// authenticator knows.
var ErrUnauthorized = errors.New("unauthorized")

// Tokens maps static bearer tokens to users.
type Tokens struct {
	mu     sync.RWMutex
	tokens map[string]*User
}

// NewTokens returns an authenticator that knows no token yet.
func NewTokens() *Tokens { return &Tokens{tokens: map[string]*User{}} }

// Add registers a bearer token for u.
func (t *Tokens) Add(token string, u *User) {
	t.mu.Lock()
	t.tokens[token] = u
	t.mu.Unlock()
}

func (t *Tokens) AuthenticateRequest(r *http.Request) (*User, error) {
	// As kube-apiserver reads it: the scheme in any case, one space, the
	// token (an empty token, or a second space before it, is none).
	parts := strings.SplitN(strings.TrimSpace(r.Header.Get("Authorization")), " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "bearer") || parts[1] == "" {
		return nil, ErrUnauthorized
	}
	tok := parts[1]
	t.mu.RLock()
	defer t.mu.RUnlock()
	for known, u := range t.tokens {
		if subtle.ConstantTimeCompare([]byte(known), []byte(tok)) == 1 {
			return u, nil
		}
	}
	return nil, ErrUnauthorized
}

// AllowAuthenticated allows every authenticated request: today every
// caller is an administrator.
type AllowAuthenticated struct{}

func (AllowAuthenticated) Authorize(a Attributes) (bool, string) {
	if a.User == nil {
		return false, "not authenticated"
	}
	return true, ""
}
