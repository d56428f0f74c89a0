package apibench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is an etcd server started from a binary (Debian's /usr/bin/etcd) on
// loopback with its data in a temporary directory, for reference figures.
type Etcd struct {
	ClientURL string
	cmd       *exec.Cmd
	done      chan struct{}
	dataDir   string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartEtcd starts bin with a data dir under dir on two free loopback ports
// and waits until it answers a Get. fsync stays on (etcd's default).
func StartEtcd(bin, dir string) (*Etcd, error) {
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	dataDir, err := os.MkdirTemp(dir, "etcd-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(dataDir + ".log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--name", "bench",
		"--data-dir", dataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer, "--initial-cluster-state", "new",
		"--log-level", "warn", "--logger", "zap")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	e := &Etcd{ClientURL: client, cmd: cmd, done: make(chan struct{}), dataDir: dataDir}
	go func() { _ = cmd.Wait(); logf.Close(); close(e.done) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := e.Client()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.Get(ctx, "health")
			cancel()
			c.Close()
			if err == nil {
				return e, nil
			}
		}
		select {
		case <-e.done:
			return nil, errors.New("etcd exited during start; see " + dataDir + ".log")
		default:
		}
		if time.Now().After(deadline) {
			e.Stop()
			return nil, fmt.Errorf("etcd not serving within 20s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client opens a new client with its own gRPC connection.
func (e *Etcd) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{e.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Pid is the etcd process id.
func (e *Etcd) Pid() int { return e.cmd.Process.Pid }

// Stop kills etcd and removes its data.
func (e *Etcd) Stop() {
	_ = e.cmd.Process.Kill()
	<-e.done
	os.RemoveAll(e.dataDir)
	os.Remove(e.dataDir + ".log")
}
