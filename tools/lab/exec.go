package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// Command returns a command that runs argv where target lives, like
// `kubectl exec` or `docker exec` for the lab: a pod name runs it in the
// pod's netns and cgroup (so ClusterIPs work through the node's
// socket-LB), a node name in the node's netns, "switch" in the switch
// netns (outside the cluster). The caller runs it; close the returned
// cleanup afterwards.
func (c Config) Command(ctx context.Context, target string, argv []string) (*exec.Cmd, func(), error) {
	c = c.Defaults()
	if len(argv) == 0 {
		return nil, nil, errors.New("nothing to run")
	}
	netns, cgroup := "", ""
	switch {
	case target == "switch" || target == c.switchNetns():
		netns = c.switchNetns()
	default:
		for _, n := range c.AllNodes() {
			if target == n.Name || target == n.Short {
				netns = n.Name
			}
		}
		for _, p := range c.pods() {
			if p.Name == target {
				node, ok := c.nodeByShort(p.Node)
				if !ok {
					return nil, nil, fmt.Errorf("pod %s: unknown node %s", p.Name, p.Node)
				}
				cg, err := c.podCgroup(node, p.Name)
				if err != nil {
					return nil, nil, err
				}
				netns, cgroup = p.Netns, cg
			}
		}
	}
	if netns == "" {
		return nil, nil, fmt.Errorf("no pod or node %q in lab %q (nodes: %s-n1…, \"switch\", or a pod of `skep lab demo`)", target, c.Prefix, c.Prefix)
	}
	if _, err := os.Stat(c.netnsPath(netns)); err != nil {
		return nil, nil, fmt.Errorf("%s: %w (is the lab up?)", target, err)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.netnsPath(netns), "--"}, argv...)...)
	cleanup := func() {}
	if cgroup != "" {
		fd, err := syscall.Open(cgroup, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("open cgroup: %w", err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		cleanup = func() { syscall.Close(fd) }
	}
	return cmd, cleanup, nil
}
