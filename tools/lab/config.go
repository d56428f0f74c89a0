package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/skep-dev/skep/nodeagent/netns"
)

// Defaults of a lab: the addresses of DESIGN.md.
const (
	DefaultDir         = "/var/lib/skep-lab"
	DefaultListen      = "127.0.0.1:6443"
	DefaultPrefix      = "skeplab"
	DefaultNodes       = 2
	DefaultUnderlay    = "172.31.77.0/24"
	DefaultPodCIDR     = "10.244.0.0/16"
	DefaultServiceCIDR = "10.96.0.0/12"
)

// Config says where the lab lives and how it is addressed. Up saves it in
// Dir/lab.json so that demo and down find the lab as it was made.
type Config struct {
	// Dir holds the server's data, logs, pid files, CNI state and lab.json.
	Dir string `json:"dir"`
	// Listen is the API server's address in the root netns; the relay
	// offers the same address inside every node netns.
	Listen string `json:"listen"`
	// Binary is the skep executable to start (normally os.Executable()).
	Binary string `json:"-"`
	// CNIPath lists directories searched for the skep-cni plugin.
	CNIPath []string `json:"-"`
	// Prefix names everything the lab makes outside Dir: netns
	// <prefix>-sw and <prefix>-n<i> (also the node names, so pins go to
	// /sys/fs/bpf/skep/<prefix>-n<i>), the cgroup <cgroup2>/<prefix>, the
	// route metric. Letters and digits only, so one lab's glob never
	// matches another's names.
	Prefix string `json:"prefix"`
	// Nodes is the number of worker nodes.
	Nodes int `json:"nodes"`
	// Underlay is the "physical" network of the nodes: .1 is the switch,
	// node i is .10+i.
	Underlay netip.Prefix `json:"underlay"`
	// PodCIDR is cut into /24s: node i gets the i-th.
	PodCIDR netip.Prefix `json:"podCIDR"`
	// ServiceCIDR is the API server's service range (it only gets an
	// unreachable route here; the server allocates from its own default).
	ServiceCIDR netip.Prefix `json:"serviceCIDR"`

	Logger *slog.Logger `json:"-"`
}

// Defaults fills in what is unset.
func (c Config) Defaults() Config {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Nodes == 0 {
		c.Nodes = DefaultNodes
	}
	if !c.Underlay.IsValid() {
		c.Underlay = netip.MustParsePrefix(DefaultUnderlay)
	}
	if !c.PodCIDR.IsValid() {
		c.PodCIDR = netip.MustParsePrefix(DefaultPodCIDR)
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = netip.MustParsePrefix(DefaultServiceCIDR)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.CNIPath) == 0 && c.Binary != "" {
		c.CNIPath = []string{filepath.Dir(c.Binary), "/opt/cni/bin", "/usr/lib/cni"}
	}
	return c
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// Validate checks the configuration a lab can be made from.
func (c Config) Validate() error {
	if !prefixRE.MatchString(c.Prefix) {
		return fmt.Errorf("prefix %q: want 1-10 lowercase letters and digits, starting with a letter", c.Prefix)
	}
	if c.Nodes < 1 || c.Nodes > 9 {
		return fmt.Errorf("nodes %d: want 1..9", c.Nodes)
	}
	for _, p := range []netip.Prefix{c.Underlay, c.PodCIDR, c.ServiceCIDR} {
		if !p.Addr().Is4() || p != p.Masked() {
			return fmt.Errorf("%s: want an IPv4 network address", p)
		}
	}
	if c.Underlay.Bits() > 27 {
		return fmt.Errorf("underlay %s: want /27 or larger", c.Underlay)
	}
	if c.PodCIDR.Bits() > 24-4 {
		return fmt.Errorf("pod CIDR %s: want /20 or larger (a /24 per node)", c.PodCIDR)
	}
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("lab dir %q: want an absolute path", c.Dir)
	}
	return nil
}

// Node is one worker of the lab.
type Node struct {
	Index   int          // 1-based
	Name    string       // Node object name, netns name, pin dir name
	Short   string       // n<i>: its cgroup and switch port
	IP      netip.Addr   // on the underlay
	PodCIDR netip.Prefix // a /24
}

// Node i (1-based).
func (c Config) Node(i int) Node {
	short := "n" + strconv.Itoa(i)
	return Node{
		Index:   i,
		Name:    c.Prefix + "-" + short,
		Short:   short,
		IP:      addrAdd(c.Underlay.Addr(), 10+i),
		PodCIDR: netip.PrefixFrom(addrAdd(c.PodCIDR.Addr(), i*256), 24),
	}
}

// AllNodes lists the lab's nodes.
func (c Config) AllNodes() []Node {
	out := make([]Node, 0, c.Nodes)
	for i := 1; i <= c.Nodes; i++ {
		out = append(out, c.Node(i))
	}
	return out
}

// SwitchIP is the switch netns's address on the underlay (the vantage
// point of a client outside the cluster).
func (c Config) SwitchIP() netip.Addr { return addrAdd(c.Underlay.Addr(), 1) }

func addrAdd(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Names of things the lab makes.
func (c Config) switchNetns() string { return c.Prefix + "-sw" }
func (c Config) netnsPath(name string) string {
	return filepath.Join(netns.DefaultDir, name)
}

// podNetnsPrefix starts the names of a node's pod namespaces
// (<prefix>-n<i>-<pod>): each node's podnet.Network lists and collects
// only its own.
func (c Config) podNetnsPrefix(n Node) string { return n.Name + "-" }

// Files in Dir.
func (c Config) stateFile() string       { return filepath.Join(c.Dir, "lab.json") }
func (c Config) pidFile() string         { return filepath.Join(c.Dir, "server.pid") }
func (c Config) logDir() string          { return filepath.Join(c.Dir, "log") }
func (c Config) logFile() string         { return filepath.Join(c.logDir(), "server.log") }
func (c Config) dataDir() string         { return filepath.Join(c.Dir, "server") }
func (c Config) cniDir() string          { return filepath.Join(c.Dir, "cni") }
func (c Config) podsDir() string         { return filepath.Join(c.Dir, "pods") }
func (c Config) Kubeconfig() string      { return filepath.Join(c.dataDir(), "admin.kubeconfig") }
func (c Config) nodeKubeconfig() string  { return filepath.Join(c.Dir, "node.kubeconfig") }
func (c Config) proxyKubeconfig() string { return filepath.Join(c.Dir, "proxy.kubeconfig") }
func (c Config) caFile() string          { return filepath.Join(c.Dir, "ca.crt") }
func (c Config) LogDir() string          { return c.logDir() }

// apiAddr is where nodes and pods reach the API: the switch's address on
// the underlay, with the server's port.
func (c Config) apiAddr() (string, error) {
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", c.Listen, err)
	}
	return net.JoinHostPort(c.SwitchIP().String(), port), nil
}

// routeMetric tags this lab's unreachable routes: two labs (a user's and
// a test's) may both hold one for the same prefix, each removes its own.
func (c Config) routeMetric() int {
	h := fnv.New32a()
	h.Write([]byte(c.Prefix))
	return 7000 + int(h.Sum32()%10000)
}

// save writes lab.json.
func (c Config) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(c.stateFile(), append(b, '\n'), 0o600)
}

// Load returns the configuration Up saved in dir, with binary and logger
// set; ErrNoLab when there is none.
func Load(dir, binary string, log *slog.Logger) (Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, ErrNoLab
	}
	if err != nil {
		return Config{}, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("read %s: %w", filepath.Join(dir, "lab.json"), err)
	}
	c.Dir, c.Binary, c.Logger = dir, binary, log
	return c.Defaults(), nil
}

// ErrNoLab says a lab dir holds no lab.json.
var ErrNoLab = errors.New("no lab here (no lab.json)")
