package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/nodeagent/netns"
)

// Up makes the lab: guard routes, cgroups, API server, underlay and nodes,
// the API relay, Node objects, one proxy per node. A half-made lab (one a
// crash left behind) is removed first; a running one is refused. When a
// step fails, everything made so far is removed again.
func Up(ctx context.Context, c Config) (err error) {
	c = c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	// The demo's pods need the plugin: say so now rather than half-way.
	if _, err := invoke.FindInPath("skep-cni", c.CNIPath); err != nil {
		return fmt.Errorf("skep-cni plugin not found in %v (build it next to skep: make build): %w", c.CNIPath, err)
	}
	if pid, ok := c.running(); ok {
		return fmt.Errorf("a lab is already up in %s (server pid %d); run `skep lab down` first", c.Dir, pid)
	}
	// A lab made in this dir under another prefix would be forgotten once
	// lab.json is overwritten: remove it first.
	if old, err := Load(c.Dir, c.Binary, c.Logger); err == nil && old.Prefix != c.Prefix {
		if _, ok := old.running(); ok {
			return fmt.Errorf("lab %q is up in %s; run `skep lab down` first", old.Prefix, c.Dir)
		}
		if t := old.Traces(); len(t) > 0 {
			c.Logger.Info("removing what an earlier lab left behind", "prefix", old.Prefix, "traces", t)
			if err := Down(old, false); err != nil {
				return fmt.Errorf("clean up the earlier lab %q: %w", old.Prefix, err)
			}
		}
	}
	if t := c.Traces(); len(t) > 0 {
		c.Logger.Info("removing what an earlier lab left behind", "traces", t)
		if err := Down(c, false); err != nil {
			return fmt.Errorf("clean up the earlier lab: %w", err)
		}
	}
	// Another server on the address would answer our readiness probe.
	if ln, err := net.Listen("tcp", c.Listen); err != nil {
		return fmt.Errorf("API server address %s: %w (pick another with --listen)", c.Listen, err)
	} else {
		ln.Close()
	}
	defer func() {
		if err != nil {
			c.Logger.Error("lab up failed; removing what it made", "err", err, "logs", c.logDir())
			if derr := Down(c, false); derr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
			}
		}
	}()
	if err := os.MkdirAll(c.dataDir(), 0o700); err != nil {
		return fmt.Errorf("lab dir: %w", err)
	}
	if err := c.save(); err != nil {
		return fmt.Errorf("lab state: %w", err)
	}

	// Safety first: nothing for a lab address leaves the machine.
	if err := c.addGuardRoutes(); err != nil {
		return err
	}
	root, err := c.labCgroup()
	if err != nil {
		return err
	}
	system := filepath.Join(root, "system")
	if err := cgroup2.Create(system); err != nil {
		return err
	}
	for _, n := range c.AllNodes() {
		if err := cgroup2.Create(filepath.Join(root, n.Short)); err != nil {
			return err
		}
	}

	c.Logger.Info("starting the API server", "listen", c.Listen)
	cmd, exited, err := c.start(daemon{name: "server", cgroup: system,
		argv: []string{c.Binary, "server", "--data-dir", c.dataDir(), "--listen", c.Listen,
			// The kubernetes service's endpoint and a certificate SAN:
			// the relay serves the API there (see the package doc).
			"--advertise-address", c.SwitchIP().String()}})
	if err != nil {
		return err
	}
	if err := writePid(c.pidFile(), cmd.Process.Pid); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := waitReady(ctx, c.Listen, exited); err != nil {
		return fmt.Errorf("server not ready (see %s): %w", c.logFile(), err)
	}

	c.Logger.Info("making the underlay and nodes", "underlay", c.Underlay, "nodes", c.Nodes)
	if err := c.makeUnderlay(); err != nil {
		return err
	}
	// The API on the underlay: the relay listens at the switch's address
	// (the control plane's address on the node network) and the nodes use
	// a kubeconfig that points there.
	apiAddr, err := c.apiAddr()
	if err != nil {
		return err
	}
	_, exited, err = c.start(daemon{name: "relay", cgroup: system, argv: []string{c.Binary, "lab", "relay",
		"--listen", apiAddr, "--target", c.Listen, "--netns", c.netnsPath(c.switchNetns())}})
	if err != nil {
		return err
	}
	if err := c.writeNodeKubeconfig(apiAddr); err != nil {
		return err
	}
	if err := c.writeProxyKubeconfig(); err != nil {
		return err
	}
	for _, n := range c.AllNodes() {
		dial := dialerIn(c.netnsPath(n.Name))
		err := poll(ctx, 10*time.Second, exited, func() bool {
			conn, err := dial("tcp", apiAddr)
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("API relay at %s not reachable from %s (see %s): %w", apiAddr, n.Name, filepath.Join(c.logDir(), "relay.log"), err)
		}
	}

	cs, err := c.Client()
	if err != nil {
		return err
	}
	if err := deleteDemoObjects(ctx, cs); err != nil {
		return err
	}
	if err := c.registerNodes(ctx, cs); err != nil {
		return err
	}

	for _, n := range c.AllNodes() {
		c.Logger.Info("starting the proxy", "node", n.Name, "ip", n.IP, "podCIDR", n.PodCIDR)
		_, exited, err := c.start(daemon{name: "proxy-" + n.Short, cgroup: system, netns: c.netnsPath(n.Name),
			argv: []string{c.Binary, "proxy",
				"--kubeconfig", c.proxyKubeconfig(),
				"--node-name", n.Name,
				"--node-ip", n.IP.String(),
				"--pod-cidr", n.PodCIDR.String(),
				"--cgroup", filepath.Join(root, n.Short),
				"--uplink", uplinkName,
				"--pin-dir", bpf.PinDirFor(n.Name),
			}})
		if err != nil {
			return err
		}
		if err := waitProxy(ctx, c.netnsPath(n.Name), exited); err != nil {
			return fmt.Errorf("proxy of %s not healthy (see %s): %w", n.Name, filepath.Join(c.logDir(), "proxy-"+n.Short+".log"), err)
		}
	}
	return nil
}

// waitReady polls /readyz until it answers 200, the server exits, or 30 s pass.
func waitReady(ctx context.Context, listen string, exited <-chan error) error {
	// /readyz is only a readiness probe: certificate checks belong to kubectl.
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	return poll(ctx, 30*time.Second, exited, func() bool {
		resp, err := client.Get("https://" + listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitProxy polls the proxy's /healthz (inside its node's netns) until it
// says the proxy has synced.
func waitProxy(ctx context.Context, netns string, exited <-chan error) error {
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{Dial: dialerIn(netns), DisableKeepAlives: true},
	}
	return poll(ctx, 30*time.Second, exited, func() bool {
		resp, err := client.Get("http://127.0.0.1:10256/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func poll(ctx context.Context, limit time.Duration, exited <-chan error, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if ok() {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s", limit)
}

// Down removes every trace of the lab, whatever state it is in: processes
// (all of them live in the lab's cgroup subtree), bpffs pins (links first,
// so no program stays attached), namespaces (their links go with them),
// cgroups, the unreachable routes, CNI state and pod records; purge also
// removes the server's data. Running it again is harmless.
func Down(c Config, purge bool) error {
	c = c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	var errs []error
	// The server first, gently, so bbolt closes cleanly.
	if pid, ok := c.running(); ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && alive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	root, err := c.labCgroup()
	if err != nil {
		errs = append(errs, err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, cgroup2.Kill(ctx, root))
		cancel()
	}
	for _, dir := range c.pinDirs() {
		if err := bpf.Uninstall(dir); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", dir, err))
		}
	}
	for _, name := range labNetns(c.Prefix) {
		errs = append(errs, netns.Remove(netns.DefaultDir, name))
	}
	if root != "" {
		errs = append(errs, cgroup2.Remove(root))
	}
	errs = append(errs, c.delGuardRoutes())
	for _, p := range []string{c.cniDir(), c.podsDir(), c.pidFile(), c.nodeKubeconfig(), c.proxyKubeconfig(), c.caFile()} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if purge {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("purge %s: %w", c.Dir, err))
		}
	}
	return errors.Join(errs...)
}

// pinDirs lists the bpffs pin directories of this lab's nodes.
func (c Config) pinDirs() []string {
	dirs, _ := filepath.Glob(filepath.Join(bpf.PinRoot, c.Prefix+"-*"))
	return dirs
}

// Traces lists what of this lab exists on the machine: processes,
// namespaces, pins, cgroups, routes. Empty after Down.
func (c Config) Traces() []string {
	c = c.Defaults()
	var out []string
	if pid, ok := c.running(); ok {
		out = append(out, "server pid "+strconv.Itoa(pid))
	}
	if root, err := c.labCgroup(); err == nil {
		if _, err := os.Stat(root); err == nil {
			out = append(out, "cgroup "+root)
			for _, pid := range cgroup2.Pids(root) {
				out = append(out, "process "+strconv.Itoa(pid))
			}
		}
	}
	for _, n := range labNetns(c.Prefix) {
		out = append(out, "netns "+n)
	}
	for _, d := range c.pinDirs() {
		out = append(out, "bpf pins "+d)
	}
	if rs, err := c.guardRoutes(); err == nil {
		for _, r := range rs {
			out = append(out, "route unreachable "+r.Dst.String())
		}
	}
	for _, p := range []string{c.cniDir(), c.podsDir()} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			out = append(out, "state "+p)
		}
	}
	return out
}

// Status reports the server's pid when the lab is up.
func Status(c Config) (int, bool) { return c.Defaults().running() }

func (c Config) running() (int, bool) {
	b, err := os.ReadFile(c.pidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(pid) {
		return 0, false
	}
	// A recycled pid would belong to another program: check it is ours.
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), c.dataDir()) {
		return 0, false
	}
	return pid, true
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie still answers kill 0; it is not serving.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
