// Package harness runs real `skep server` processes for the end-to-end tests
// and the API benchmarks, the way a user would: it builds the skep binary,
// starts `skep server --data-dir DIR --listen ADDR` on a free loopback port,
// waits for /readyz, and builds clients from the admin kubeconfig the server
// writes. Nothing here reaches into the server's packages.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ModuleRoot finds the repository root (the directory holding go.mod) from the
// working directory, which `go test` sets to the package's directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// BuildSkep builds ./cmd/skep into outDir and returns the binary's path.
func BuildSkep(outDir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(outDir, "skep")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/skep")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/skep: %w\n%s", err, out)
	}
	return bin, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Server is one `skep server` process (and its restarts on the same data dir).
type Server struct {
	Bin     string
	DataDir string
	Addr    string
	// LogPath collects the process's stdout and stderr across restarts.
	LogPath string
	// StartedAt is when the current process was started.
	StartedAt time.Time

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// NewServer describes a server; Start runs it.
func NewServer(bin, dataDir, addr string) *Server {
	return &Server{Bin: bin, DataDir: dataDir, Addr: addr, LogPath: dataDir + ".log"}
}

// Kubeconfig is the admin kubeconfig the server writes on first start.
func (s *Server) Kubeconfig() string { return filepath.Join(s.DataDir, "admin.kubeconfig") }

// Start starts the process without waiting for it to be ready.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("server already running")
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	fmt.Fprintf(logf, "=== skep server --data-dir %s --listen %s (%s)\n", s.DataDir, s.Addr, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.Bin, "server", "--data-dir", s.DataDir, "--listen", s.Addr)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The server must not outlive a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.StartedAt = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start skep server: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() {
		s.err = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// Running reports whether the process has been started and has not exited.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Pid is the running process's id (0 when not running).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// signal sends sig and waits up to timeout for the process to exit.
func (s *Server) signal(sig syscall.Signal, timeout time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		return fmt.Errorf("skep server did not exit within %v of %v; killed", timeout, sig)
	}
	s.mu.Lock()
	s.cmd = nil
	err := s.err
	s.mu.Unlock()
	if sig == syscall.SIGKILL {
		return nil
	}
	// A clean shutdown on SIGTERM exits 0.
	if err != nil {
		return fmt.Errorf("skep server exit after %v: %w", sig, err)
	}
	return nil
}

// Stop shuts the server down with SIGTERM and reports an unclean exit.
func (s *Server) Stop(timeout time.Duration) error { return s.signal(syscall.SIGTERM, timeout) }

// Kill ends the server with SIGKILL, as a crash or power loss would.
func (s *Server) Kill() error { return s.signal(syscall.SIGKILL, 10*time.Second) }

// Exited returns a channel closed when the current process exits.
func (s *Server) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.done
}

// RSSBytes reads VmRSS of the running process from /proc.
func (s *Server) RSSBytes() (int64, error) {
	pid := s.Pid()
	if pid == 0 {
		return 0, errors.New("server not running")
	}
	return ProcRSS(pid)
}

// ProcRSS reads VmRSS of a process from /proc/<pid>/status.
func ProcRSS(pid int) (int64, error) { return ProcStatusBytes(pid, "VmRSS") }

// ProcStatusBytes reads a size field of /proc/<pid>/status (VmRSS, RssAnon:
// the resident memory that is the process's own, not mapped files).
func ProcStatusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			fields := strings.Fields(v)
			if len(fields) != 2 || fields[1] != "kB" {
				return 0, fmt.Errorf("parse %q", line)
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("%s not found", field)
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RESTConfig builds a client config from the admin kubeconfig, pointed at
// s.Addr, with client-side rate limiting off (tests and benchmarks measure the
// server, not client-go's default 5 QPS).
func (s *Server) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load admin kubeconfig: %w", err)
	}
	cfg.Host = "https://" + s.Addr
	cfg.QPS = -1
	cfg.Burst = 0
	cfg.Timeout = 30 * time.Second
	// client-go's typed clients send protobuf for built-in kinds unless told
	// otherwise, as every Kubernetes component does; SKEP_CLIENT_JSON=1 makes
	// them send JSON instead (to compare encodings, or to look past a server
	// that lacks protobuf).
	if os.Getenv("SKEP_CLIENT_JSON") == "1" {
		cfg.ContentType = "application/json"
		cfg.AcceptContentTypes = "application/json"
	}
	return cfg, nil
}

// OwnConnection returns a copy of cfg whose clients get their own transport
// (client-go otherwise shares one connection between identical configs), so
// N clients are N TCP connections, as N processes would be.
func OwnConnection(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c.Dial = d.DialContext
	return c
}

// HTTPClient returns a plain net/http client that trusts the server's CA, and
// the admin bearer token from the kubeconfig.
func (s *Server) HTTPClient() (*http.Client, string, error) {
	cfg, err := s.RESTConfig()
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	ca := cfg.TLSClientConfig.CAData
	if len(ca) == 0 && cfg.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return nil, "", fmt.Errorf("read CA: %w", err)
		}
	}
	if !pool.AppendCertsFromPEM(ca) {
		return nil, "", errors.New("admin kubeconfig has no usable CA")
	}
	token := cfg.BearerToken
	if token == "" && cfg.BearerTokenFile != "" {
		b, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return nil, "", fmt.Errorf("read token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, "", errors.New("admin kubeconfig has no bearer token")
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: cfg.TLSClientConfig.ServerName},
		ForceAttemptHTTP2: true,
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}, token, nil
}

// WaitReady polls /readyz until it answers 200, the process exits, or timeout
// passes. It returns how long after process start the server became ready.
func (s *Server) WaitReady(timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	exited := s.Exited()
	var client *http.Client
	var token string
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return 0, fmt.Errorf("skep server exited before ready: %v\n%s", s.err, s.LogTail(30))
		default:
		}
		if client == nil {
			if _, err := os.Stat(s.Kubeconfig()); err == nil {
				c, tok, err := s.HTTPClient()
				if err == nil {
					c.Timeout = time.Second
					client, token = c, tok
				} else {
					last = err.Error()
				}
			}
		}
		if client != nil {
			req, _ := http.NewRequest(http.MethodGet, "https://"+s.Addr+"/readyz", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err == nil {
				body, _ := readAll(resp)
				if resp.StatusCode == http.StatusOK {
					client.CloseIdleConnections()
					return time.Since(s.StartedAt), nil
				}
				last = fmt.Sprintf("/readyz %d: %s", resp.StatusCode, body)
			} else {
				last = err.Error()
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("skep server not ready within %v (last: %s)\n%s", timeout, last, s.LogTail(30))
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(resp.Body)
	return b.Bytes(), err
}

// Do sends a raw request with the admin token (or none when token is empty)
// and returns the status code and body.
func Do(ctx context.Context, c *http.Client, token, method, url, contentType string, body []byte) (int, []byte, error) {
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequestWithContext(ctx, method, url, rd)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, url, nil)
	}
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := readAll(resp)
	return resp.StatusCode, b, err
}

// ProcCPU returns the user+system CPU time a process has used so far, from
// /proc/<pid>/stat (in USER_HZ ticks, which is 100 per second on Linux).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * (time.Second / 100), nil
}
