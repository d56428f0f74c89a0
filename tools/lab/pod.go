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

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/skep-dev/skep/cni"
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

// cniRuntime is libcni as a runtime links it, running the plugin from
// c.CNIPath. The exec is explicit: with nil, CNIConfig fills it in lazily
// on first use (a data race when goroutines share one CNIConfig).
func (c Config) cniRuntime(node Node) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	conf, err := cni.ConfList(cni.NetConf{
		PluginConf: types.PluginConf{Name: networkName},
		Subnet:     node.PodCIDR.String(),
		DataDir:    filepath.Join(c.cniDir(), node.Short),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("conflist: %w", err)
	}
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return nil, nil, fmt.Errorf("conflist: %w", err)
	}
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir(c.CNIPath, filepath.Join(c.cniDir(), "cache"), exec), list, nil
}

func (c Config) runtimeConf(p *labPod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: c.Prefix + "-" + p.Name, NetNS: c.netnsPath(p.Netns), IfName: "eth0"}
}

// runPod starts a pod on node: netns, CNI ADD in the node's netns (where
// a runtime, and so the plugin, runs), its cgroup, its server process.
// Whatever fails part-way is left for removePod, which the caller runs.
func (c Config) runPod(ctx context.Context, node Node, name, app string) (*labPod, error) {
	p := &labPod{Name: name, App: app, Node: node.Short, Netns: c.podNetns(name)}
	if err := os.MkdirAll(c.podsDir(), 0o755); err != nil {
		return nil, err
	}
	// The record first: removePod can then undo a half-made pod.
	if err := p.save(c.podRecord(name)); err != nil {
		return nil, err
	}
	if err := addNetns(p.Netns); err != nil {
		return p, err
	}
	rt, list, err := c.cniRuntime(node)
	if err != nil {
		return p, err
	}
	var res types.Result
	err = inNetns(c.netnsPath(node.Name), func() (err error) {
		res, err = rt.AddNetworkList(ctx, list, c.runtimeConf(p))
		return err
	})
	if err != nil {
		return p, fmt.Errorf("cni add %s: %w", name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		return p, fmt.Errorf("cni add %s: no address in result (%v)", name, err)
	}
	p.IP, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	cg, err := c.podCgroup(node, name)
	if err != nil {
		return p, err
	}
	if err := mkCgroup(cg); err != nil {
		return p, err
	}
	cmd, exited, err := c.start(daemon{
		name:   "pod-" + name,
		argv:   []string{c.Binary, "lab", "serve", "--pod", name, "--node", node.Name, "--listen", ":" + strconv.Itoa(podPort)},
		netns:  c.netnsPath(p.Netns),
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
	dial := dialerIn(c.netnsPath(p.Netns))
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

// removePod undoes runPod: kill its processes, CNI DEL (frees the address
// and the host veth), remove its netns, cgroup and record. Each step
// tolerates what is already gone.
func (c Config) removePod(ctx context.Context, p *labPod) error {
	var errs []error
	node, ok := c.nodeByShort(p.Node)
	if !ok {
		return fmt.Errorf("pod %s: unknown node %q", p.Name, p.Node)
	}
	cg, err := c.podCgroup(node, p.Name)
	if err == nil {
		errs = append(errs, killCgroup(cg), rmCgroupTree(cg))
	}
	if _, err := os.Stat(c.netnsPath(node.Name)); err == nil {
		if rt, list, err := c.cniRuntime(node); err != nil {
			errs = append(errs, err)
		} else {
			err := inNetns(c.netnsPath(node.Name), func() error {
				return rt.DelNetworkList(ctx, list, c.runtimeConf(p))
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("cni del %s: %w", p.Name, err))
			}
		}
	}
	errs = append(errs, delNetns(p.Netns))
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
