package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/skep-dev/skep/cni"
	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/nodeagent/podnet"
)

// podPort is where every lab pod's server listens.
const podPort = 8080

// networkName is the CNI network of the lab's nodes.
const networkName = "skeplab"

// labPod is a pod the lab runs by hand, as a runtime would: a netns, a
// skep-cni ADD, a process in that netns and in a cgroup under its node's.
type labPod struct {
	Name  string     `json:"name"`
	App   string     `json:"app"`
	Node  string     `json:"node"` // short node name (n1)
	Netns string     `json:"netns"`
	IP    netip.Addr `json:"ip"`
	Pid   int        `json:"pid"`
}

func (c Config) podRecord(name string) string {
	return filepath.Join(c.podsDir(), name+".json")
}

func (c Config) podCgroup(node Node, pod string) (string, error) {
	root, err := c.labCgroup()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, node.Short, pod), nil
}

// podNetwork is node's pod network, as its agent will hold it: skep-cni
// through libcni, run in the node's netns, with the node's IPAM and libcni
// records under the lab's CNI dir, and its pods' namespaces named
// <node>-<pod>.
func (c Config) podNetwork(node Node) (*podnet.Network, error) {
	dir := filepath.Join(c.cniDir(), node.Short)
	return podnet.New(podnet.Config{
		Network: cni.NetConf{
			PluginConf: types.PluginConf{Name: networkName},
			Subnet:     node.PodCIDR.String(),
			DataDir:    dir,
		},
		PluginDirs:  c.CNIPath,
		CacheDir:    filepath.Join(dir, "libcni"),
		NetnsPrefix: c.podNetnsPrefix(node),
		NodeNetns:   c.netnsPath(node.Name),
	})
}

// runPod starts a pod on node: its network (podnet: netns and CNI ADD in
// the node's netns, where a runtime, and so the plugin, runs), its cgroup,
// its server process. Whatever fails part-way is left for removePod, which
// the caller runs.
func (c Config) runPod(ctx context.Context, node Node, name, app string) (*labPod, error) {
	p := &labPod{Name: name, App: app, Node: node.Short}
	if err := os.MkdirAll(c.podsDir(), 0o755); err != nil {
		return nil, err
	}
	// The record first: removePod can then undo a half-made pod.
	if err := p.save(c.podRecord(name)); err != nil {
		return nil, err
	}
	pn, err := c.podNetwork(node)
	if err != nil {
		return p, err
	}
	sb, err := pn.Setup(ctx, podnet.Pod{ID: name, Namespace: demoNamespace, Name: name})
	if err != nil {
		return p, err
	}
	p.Netns = filepath.Base(sb.Netns)
	p.IP = sb.IPs[0]
	cg, err := c.podCgroup(node, name)
	if err != nil {
		return p, err
	}
	if err := cgroup2.Create(cg); err != nil {
		return p, err
	}
	cmd, exited, err := c.start(daemon{
		name:   "pod-" + name,
		argv:   []string{c.Binary, "lab", "serve", "--pod", name, "--node", node.Name, "--listen", ":" + strconv.Itoa(podPort)},
		netns:  sb.Netns,
		cgroup: cg,
	})
	if err != nil {
		return p, err
	}
	p.Pid = cmd.Process.Pid
	if err := p.save(c.podRecord(name)); err != nil {
		return p, err
	}
	// Ready when it accepts on its pod address from inside its netns.
	dial := dialerIn(sb.Netns)
	addr := net.JoinHostPort(p.IP.String(), strconv.Itoa(podPort))
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := dial("tcp", addr)
		if err == nil {
			conn.Close()
			return p, nil
		}
		select {
		case err := <-exited:
			return p, fmt.Errorf("pod %s exited (see %s): %v", name, c.logDir(), err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("pod %s not serving on %s after 10s: %v", name, addr, err)
		}
	}
}

// removePod undoes runPod: kill its processes and remove its cgroup, tear
// its network down (CNI DEL frees the address and the host veth; then the
// netns goes), remove its record. Each step tolerates what is already
// gone.
func (c Config) removePod(ctx context.Context, p *labPod) error {
	var errs []error
	node, ok := c.nodeByShort(p.Node)
	if !ok {
		return fmt.Errorf("pod %s: unknown node %q", p.Name, p.Node)
	}
	cg, err := c.podCgroup(node, p.Name)
	if err == nil {
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		errs = append(errs, cgroup2.Kill(kctx, cg), cgroup2.Remove(cg))
		cancel()
	}
	if pn, err := c.podNetwork(node); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, pn.Teardown(ctx, p.Name))
	}
	if err := os.Remove(c.podRecord(p.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pods lists the pod records in the lab dir.
func (c Config) pods() []*labPod {
	ents, _ := os.ReadDir(c.podsDir())
	var out []*labPod
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.podsDir(), e.Name()))
		if err != nil {
			continue
		}
		p := &labPod{}
		if json.Unmarshal(b, p) == nil && p.Name != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c Config) nodeByShort(short string) (Node, bool) {
	for _, n := range c.AllNodes() {
		if n.Short == short {
			return n, true
		}
	}
	return Node{}, false
}

func (p *labPod) save(path string) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
