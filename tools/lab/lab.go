// Package lab brings a skep cluster up on one machine. Today the lab is the
// control plane alone: a `skep server` process started in the background with
// its own data directory, so a user can point kubectl at it. Node namespaces,
// agents and proxies join it as those components land.
package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config says where the lab lives.
type Config struct {
	// Dir holds the server's data, its log and the pid file.
	Dir string
	// Listen is the API server's address.
	Listen string
	// Binary is the skep executable to start (normally os.Executable()).
	Binary string
}

func (c Config) pidFile() string    { return filepath.Join(c.Dir, "server.pid") }
func (c Config) logFile() string    { return filepath.Join(c.Dir, "server.log") }
func (c Config) dataDir() string    { return filepath.Join(c.Dir, "server") }
func (c Config) Kubeconfig() string { return filepath.Join(c.dataDir(), "admin.kubeconfig") }

// Up starts the control plane unless it already runs, and waits until it is
// ready to serve.
func Up(ctx context.Context, c Config) error {
	if pid, ok := c.running(); ok {
		return fmt.Errorf("lab already up (server pid %d); run `skep lab down` first", pid)
	}
	if err := os.MkdirAll(c.dataDir(), 0o700); err != nil {
		return fmt.Errorf("lab dir: %w", err)
	}
	logf, err := os.OpenFile(c.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("server log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(c.Binary, "server", "--data-dir", c.dataDir(), "--listen", c.Listen)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the server outlives `skep lab up` and a Ctrl-C in the
	// user's terminal does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := os.WriteFile(c.pidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("pid file: %w", err)
	}
	if err := waitReady(ctx, c.Listen, exited); err != nil {
		_ = cmd.Process.Kill()
		_ = os.Remove(c.pidFile())
		return fmt.Errorf("server not ready (see %s): %w", c.logFile(), err)
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
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("server exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := client.Get("https://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return errors.New("timed out after 30s")
}

// Down stops the control plane; purge also removes the lab's data.
func Down(c Config, purge bool) error {
	if pid, ok := c.running(); ok {
		p, _ := os.FindProcess(pid)
		_ = p.Signal(syscall.SIGTERM)
		for i := 0; i < 100 && alive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(pid) {
			_ = p.Signal(syscall.SIGKILL)
		}
	}
	_ = os.Remove(c.pidFile())
	if purge {
		if err := os.RemoveAll(c.Dir); err != nil {
			return fmt.Errorf("purge %s: %w", c.Dir, err)
		}
	}
	return nil
}

// Status reports the server's pid when the lab is up.
func Status(c Config) (int, bool) { return c.running() }

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
	if !strings.Contains(string(cmdline), "server") {
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
