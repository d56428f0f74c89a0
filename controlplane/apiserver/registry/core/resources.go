// Package core is the registry of the core API group (v1): one file per
// kind with its strategy, Table columns and subresources, and the table
// rows in Resources.
package core

import (
	"fmt"
	"net/netip"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Options configures the core group's shared state.
type Options struct {
	// ServiceCIDR is the range of service cluster IPs (IPv4).
	ServiceCIDR netip.Prefix
	// NodePortMin and NodePortMax bound node ports.
	NodePortMin, NodePortMax int32
	// Tokens signs ServiceAccount tokens; nil serves no
	// serviceaccounts/token.
	Tokens TokenIssuer
}

// Resources returns the rows of the core group.
func Resources(opts Options) ([]*registry.Resource, error) {
	if !opts.ServiceCIDR.IsValid() || !opts.ServiceCIDR.Addr().Is4() {
		return nil, fmt.Errorf("service CIDR %s: must be an IPv4 prefix", opts.ServiceCIDR)
	}
	alloc := newServiceAllocator(opts.ServiceCIDR, opts.NodePortMin, opts.NodePortMax)
	return []*registry.Resource{
		namespaceResource(),
		nodeResource(),
		podResource(),
		serviceResource(alloc),
		endpointsResource(),
		configMapResource(),
		secretResource(),
		eventResource(),
		serviceAccountResource(opts.Tokens),
	}, nil
}
