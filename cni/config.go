package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/skep-dev/skep/cni/ipam"
)

// Defaults for the optional fields of the network configuration.
const (
	DefaultBridge  = "skep0"
	DefaultMTU     = 1500
	DefaultDataDir = "/var/lib/skep/cni"
)

// NetConf is skep-cni's plugin configuration, e.g.
//
//	{"cniVersion": "1.1.0", "name": "skep", "type": "skep-cni",
//	 "subnet": "10.244.1.0/24", "bridge": "skep0", "mtu": 1500,
//	 "dataDir": "/var/lib/skep/cni"}
//
// subnet is the node's podCIDR and the only required field. The bridge gets
// its first address; pods get the rest but the broadcast address.
type NetConf struct {
	types.PluginConf
	Bridge  string `json:"bridge,omitempty"`
	Subnet  string `json:"subnet,omitempty"`
	MTU     int    `json:"mtu,omitempty"`
	DataDir string `json:"dataDir,omitempty"`
	// HairpinMode lets a pod reach itself through a service address that
	// load-balances back to it. On unless set to false.
	HairpinMode *bool `json:"hairpinMode,omitempty"`

	pool ipam.Pool
}

// Hairpin reports whether host veths get hairpin mode.
func (c *NetConf) Hairpin() bool { return c.HairpinMode == nil || *c.HairpinMode }

// Pool is the node's pod range.
func (c *NetConf) Pool() ipam.Pool { return c.pool }

// StoreDir is where the network's allocation database lives:
// <dataDir>/<network name>/.
func (c *NetConf) StoreDir() string { return filepath.Join(c.DataDir, c.Name) }

// GatewayNet is the bridge's address with the pod range's prefix length.
func (c *NetConf) GatewayNet() *net.IPNet {
	return &net.IPNet{IP: c.pool.Gateway().AsSlice(), Mask: net.CIDRMask(c.pool.Prefix().Bits(), 32)}
}

// invalidConfig is the CNI error for a configuration that fails validation.
func invalidConfig(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// LoadConf decodes and validates stdin data. Errors are CNI errors: 6 for
// undecodable JSON, 7 for a configuration that is wrong.
func LoadConf(data []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network config", err.Error())
	}
	if c.Name == "" {
		return nil, invalidConfig("missing network name")
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if len(c.Bridge) > 15 {
		return nil, invalidConfig("bridge name %q longer than 15 characters", c.Bridge)
	}
	if c.Subnet == "" {
		return nil, invalidConfig("missing subnet (the node's pod CIDR)")
	}
	prefix, err := netip.ParsePrefix(c.Subnet)
	if err != nil {
		return nil, invalidConfig("subnet %q: %v", c.Subnet, err)
	}
	if prefix != prefix.Masked() {
		return nil, invalidConfig("subnet %q has host bits set (did you mean %s?)", c.Subnet, prefix.Masked())
	}
	if c.pool, err = ipam.NewPool(prefix); err != nil {
		return nil, invalidConfig("%v", err)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return nil, invalidConfig("mtu %d out of range 576..65535", c.MTU)
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if !filepath.IsAbs(c.DataDir) {
		return nil, invalidConfig("dataDir %q is not an absolute path", c.DataDir)
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
		}
	}
	return c, nil
}

// prevResult returns the chained result as the current result version, or
// nil when this plugin is the first in the chain.
func (c *NetConf) prevResult() (*current.Result, error) {
	if c.PrevResult == nil {
		return nil, nil
	}
	r, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
	}
	return r, nil
}

// ConfList renders the network configuration list a node hands its runtime
// (e.g. /etc/cni/net.d/10-skep.conflist) for skep-cni with c's settings:
// Name and Subnet are required; CNIVersion defaults to 1.1.0 (containerd 1.6
// needs "1.0.0"). The result is validated as the plugin would.
func ConfList(c NetConf) ([]byte, error) {
	if c.CNIVersion == "" {
		c.CNIVersion = "1.1.0"
	}
	plugin := map[string]any{"type": "skep-cni", "subnet": c.Subnet}
	if c.Bridge != "" {
		plugin["bridge"] = c.Bridge
	}
	if c.MTU != 0 {
		plugin["mtu"] = c.MTU
	}
	if c.DataDir != "" {
		plugin["dataDir"] = c.DataDir
	}
	if c.HairpinMode != nil {
		plugin["hairpinMode"] = *c.HairpinMode
	}
	check := map[string]any{"name": c.Name, "cniVersion": c.CNIVersion}
	for k, v := range plugin {
		check[k] = v
	}
	b, err := json.Marshal(check)
	if err != nil {
		return nil, err
	}
	if _, err := LoadConf(b); err != nil {
		return nil, err
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": c.CNIVersion,
		"name":       c.Name,
		"plugins":    []any{plugin},
	}, "", "  ")
}
