package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// childEnv marks a process started by the harness as a client child: it
// reads one Job as JSON on stdin and writes one JobResult as JSON on stdout.
const childEnv = "SKEP_BENCH_CHILD"

// IsChild reports whether this process is a client child. A test binary calls
// it from TestMain (`if bench.IsChild() { os.Exit(bench.ChildMain()) }`);
// the skep binary reaches ChildMain through `skep bench client`.
func IsChild() bool { return os.Getenv(childEnv) == "client" }

// ChildMain runs one job from stdin and prints its result; the exit code is
// non-zero when the job could not run at all.
func ChildMain() int {
	var j Job
	if err := json.NewDecoder(os.Stdin).Decode(&j); err != nil {
		fmt.Fprintf(os.Stderr, "bench client: read job: %v\n", err)
		return 2
	}
	res, err := RunJob(j)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench client: %v\n", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "bench client: write result: %v\n", err)
		return 1
	}
	return 0
}

// childRunner starts client children inside a netns (and optionally a
// cgroup). Each job is its own process: nsenter moves the whole
// process (every thread, before any socket exists) into the pod netns, and
// CLONE_INTO_CGROUP places it in the bench cgroup from its first instruction,
// so the socket-LB sees every socket it makes.
type childRunner struct {
	argv []string // the program and arguments that reach ChildMain
}

func (r childRunner) run(ctx context.Context, pod *Pod, cgroupFD int, j Job) (JobResult, error) {
	in, err := json.Marshal(j)
	if err != nil {
		return JobResult{}, err
	}
	// The child stops by itself after j.Duration; this bound only catches a
	// wedged child.
	ctx, cancel := context.WithTimeout(ctx, j.Duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + pod.Path, "--"}, r.argv...)...)
	cmd.Env = append(os.Environ(), childEnv+"=client")
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &limitedWriter{w: &errb, n: 4096}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cgroupFD >= 0 {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = cgroupFD
	}
	if err := cmd.Run(); err != nil {
		return JobResult{}, fmt.Errorf("client in %s: %w: %s", pod.Name, err, strings.TrimSpace(errb.String()))
	}
	var res JobResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return JobResult{}, fmt.Errorf("client result: %w", err)
	}
	return res, nil
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if len(q) > l.n {
		q = q[:l.n]
	}
	l.n -= len(q)
	_, err := l.w.Write(q)
	return len(p), err
}
