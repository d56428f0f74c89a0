package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// daemon is a long-running lab process: the server, the relay, a node's
// proxy, a pod's server.
type daemon struct {
	name   string   // for logs: <logDir>/<name>.log
	argv   []string // program and arguments
	netns  string   // path of the netns to run in; empty: the caller's
	cgroup string   // cgroup v2 directory it starts in
}

// start starts d in its own session (it outlives `skep lab up`, and a
// Ctrl-C in the user's terminal does not reach it). nsenter --net moves the
// whole process into the netns before it runs; `ip netns exec` would not
// do, as it also remounts /sys and so hides bpffs and the cgroup2 mount
// from the proxy. CLONE_INTO_CGROUP puts it in its cgroup from its first
// instruction, so the socket-LB sees every socket a pod makes and `skep
// lab down` finds every process through the cgroup tree even after a crash.
func (c Config) start(d daemon) (*exec.Cmd, <-chan error, error) {
	if err := os.MkdirAll(c.logDir(), 0o755); err != nil {
		return nil, nil, err
	}
	logPath := filepath.Join(c.logDir(), d.name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("%s log: %w", d.name, err)
	}
	defer logf.Close()
	argv := d.argv
	if d.netns != "" {
		argv = append([]string{"nsenter", "--net=" + d.netns, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if d.cgroup != "" {
		fd, err := unix.Open(d.cgroup, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: open cgroup: %w", d.name, err)
		}
		defer unix.Close(fd)
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", d.name, err)
	}
	// Reap it if it exits while this process lives (tests); after `skep
	// lab up` exits, init does.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, exited, nil
}

func writePid(path string, pid int) error {
	return os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o600)
}
