package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A test that needs a whole process — in a cgroup of its own, because the
// socket-LB hooks act on a cgroup's processes, or one it can SIGKILL —
// re-executes its own test binary as a child: StartChild starts one, and
// the binary's TestMain hands control to ChildMain before anything else.

// The child's role, JSON argument and netns travel in its environment.
const (
	childRoleEnv  = "SKEP_TEST_CHILD"
	childArgEnv   = "SKEP_TEST_CHILD_ARG"
	childNetnsEnv = "SKEP_TEST_CHILD_NETNS"
)

// ChildSpec says what a child does and where it runs.
type ChildSpec struct {
	Role string // its function among ChildMain's roles
	Arg  any    // handed to that function as JSON
	// Netns is the path of a network namespace the child's main thread
	// enters before the role runs: every socket the role makes on that
	// goroutine is in it. Empty: the test's own.
	Netns string
	// Cgroup is a cgroup v2 directory the child starts in from its first
	// instruction (clone3 CLONE_INTO_CGROUP). Empty: the test's own.
	Cgroup string
	// MaxLife kills the child after this long whatever the test does
	// (0: only the test's end does).
	MaxLife time.Duration
}

// Child is a running child. The test speaks to it over Stdin and Stdout;
// its stderr is the test's.
type Child struct {
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Stdout io.ReadCloser

	wait    sync.Once
	waitErr error
}

// StartChild starts this test binary as a child. When the test ends, a
// child not yet waited for is killed and reaped (before the cgroup and
// netns it runs in, made earlier, are removed). It reports failure as an
// error, not through t, so it may run on any goroutine.
func StartChild(t testing.TB, spec ChildSpec) (*Child, error) {
	arg, err := json.Marshal(spec.Arg)
	if err != nil {
		return nil, fmt.Errorf("%s child argument: %w", spec.Role, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"="+spec.Role, childArgEnv+"="+string(arg), childNetnsEnv+"="+spec.Netns)
	cmd.Stderr = os.Stderr
	if spec.Cgroup != "" {
		cg, err := os.Open(spec.Cgroup)
		if err != nil {
			return nil, fmt.Errorf("%s child cgroup: %w", spec.Role, err)
		}
		defer cg.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	}
	c := &Child{Cmd: cmd}
	if c.Stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if c.Stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s child: %w", spec.Role, err)
	}
	stop := func() {}
	if spec.MaxLife > 0 {
		timer := time.AfterFunc(spec.MaxLife, func() { _ = cmd.Process.Kill() })
		stop = func() { timer.Stop() }
	}
	t.Cleanup(func() {
		stop()
		c.Stdin.Close()
		_ = cmd.Process.Kill() // fails harmlessly once the child was reaped
		_ = c.Wait()
	})
	return c, nil
}

// Wait waits for the child to exit; later calls return the same result. As
// with exec.Cmd, Stdout must have been read to its end first.
func (c *Child) Wait() error {
	c.wait.Do(func() { c.waitErr = c.Cmd.Wait() })
	return c.waitErr
}

// ChildMain runs a child's role when this process is a child: TestMain calls
// it first. It enters the child's netns (locking the main goroutine to its
// thread), runs the role's function with the JSON argument and exits with
// what it returns. In the test process itself it returns at once.
func ChildMain(roles map[string]func(arg []byte) int) {
	role := os.Getenv(childRoleEnv)
	if role == "" {
		return
	}
	arg, netns := os.Getenv(childArgEnv), os.Getenv(childNetnsEnv)
	// Whatever the role starts is no child of ours.
	for _, k := range []string{childRoleEnv, childArgEnv, childNetnsEnv} {
		os.Unsetenv(k)
	}
	fn := roles[role]
	if fn == nil {
		fmt.Fprintln(os.Stderr, "child: unknown role", role)
		os.Exit(2)
	}
	if netns != "" {
		runtime.LockOSThread()
		fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s child: enter netns %s: %v\n", role, netns, err)
			os.Exit(2)
		}
	}
	os.Exit(fn([]byte(arg)))
}

// ChildRole adapts a role taking its argument as a T, decoded from JSON.
func ChildRole[T any](fn func(arg T) int) func([]byte) int {
	return func(b []byte) int {
		var arg T
		if err := json.Unmarshal(b, &arg); err != nil {
			fmt.Fprintln(os.Stderr, "child: argument:", err)
			return 2
		}
		return fn(arg)
	}
}
