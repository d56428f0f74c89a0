package apiserver

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

var errUnauthorized = errors.New("unauthorized")

// tokenAuthenticator maps static bearer tokens to users.
type tokenAuthenticator struct {
	mu     sync.RWMutex
	tokens map[string]*User
}

func (t *tokenAuthenticator) AuthenticateRequest(r *http.Request) (*User, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return nil, errUnauthorized
	}
	tok = strings.TrimSpace(tok)
	t.mu.RLock()
	defer t.mu.RUnlock()
	for known, u := range t.tokens {
		if subtle.ConstantTimeCompare([]byte(known), []byte(tok)) == 1 {
			return u, nil
		}
	}
	return nil, errUnauthorized
}

// AddToken registers another bearer token (e.g. a node's credential).
func (s *Server) AddToken(token string, u *User) {
	if ta, ok := s.authn.(*tokenAuthenticator); ok {
		ta.mu.Lock()
		ta.tokens[token] = u
		ta.mu.Unlock()
	}
}

// adminAuthorizer allows every authenticated request.
type adminAuthorizer struct{}

func (adminAuthorizer) Authorize(a Attributes) (bool, string) {
	if a.User == nil {
		return false, "not authenticated"
	}
	return true, ""
}
