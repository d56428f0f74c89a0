package auth

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// BootstrapTokens authenticates the join tokens `skep token create` makes
// (kubeadm's bootstrap tokens): <id>.<secret>, checked against the Secret
// kube-system/bootstrap-token-<id> of type bootstrap.kubernetes.io/token,
// allowed for authentication and not expired. The caller becomes
// system:bootstrap:<id> in system:bootstrappers (and the token's extra
// groups), which may ask for a node certificate and nothing else.
type BootstrapTokens struct {
	// Secret reads kube-system's Secret of that name; nil when absent.
	Secret func(ctx context.Context, name string) (*corev1.Secret, error)
	Now    func() time.Time
}

// AuthenticateToken implements authenticator.Token.
func (b *BootstrapTokens) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	m := bootstraputil.BootstrapTokenRegexp.FindStringSubmatch(token)
	if len(m) != 3 {
		return nil, false, nil // not a bootstrap token: not ours to judge
	}
	id, secret := m[1], m[2]
	s, err := b.Secret(ctx, bootstraputil.BootstrapTokenSecretName(id))
	if err != nil {
		return nil, false, err
	}
	if s == nil || s.Type != bootstrapapi.SecretTypeBootstrapToken || s.DeletionTimestamp != nil {
		return nil, false, nil
	}
	if string(s.Data[bootstrapapi.BootstrapTokenIDKey]) != id ||
		subtle.ConstantTimeCompare(s.Data[bootstrapapi.BootstrapTokenSecretKey], []byte(secret)) != 1 {
		return nil, false, nil
	}
	if string(s.Data[bootstrapapi.BootstrapTokenUsageAuthentication]) != "true" {
		return nil, false, fmt.Errorf("bootstrap token %s may not be used for authentication", id)
	}
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
		t, err := time.Parse(time.RFC3339, exp)
		if err != nil {
			return nil, false, fmt.Errorf("bootstrap token %s: bad expiration %q", id, exp)
		}
		if !now().Before(t) {
			return nil, false, fmt.Errorf("bootstrap token %s expired at %s", id, exp)
		}
	}
	groups := []string{bootstrapapi.BootstrapDefaultGroup}
	if extra := strings.TrimSpace(string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey])); extra != "" {
		for _, g := range strings.Split(extra, ",") {
			if g = strings.TrimSpace(g); bootstraputil.ValidateBootstrapGroupName(g) == nil {
				groups = append(groups, g)
			}
		}
	}
	return &authenticator.Response{User: &user.DefaultInfo{Name: bootstrapapi.BootstrapUserPrefix + id, Groups: groups}}, true, nil
}
