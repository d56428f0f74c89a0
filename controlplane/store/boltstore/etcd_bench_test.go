package boltstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/testutil"
)

// BenchmarkEtcdPut is the second reference: Debian's etcd-server on
// loopback (its own fsync'd WAL, the store every Kubernetes API server sits
// on), 16 clients doing plain puts through etcd's JSON gateway. gRPC clients
// would be a little faster; no etcd client module is needed this way.
func BenchmarkEtcdPut(b *testing.B) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		b.Skip("etcd not installed")
	}
	dir := b.TempDir()
	client, peer := freePort(b), freePort(b)
	clientURL := "http://127.0.0.1:" + client
	peerURL := "http://127.0.0.1:" + peer
	cmd := exec.Command(bin,
		"--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "bench="+peerURL, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	testutil.Eventually(b, 20*time.Second, "etcd healthy", func() error {
		resp, err := hc.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	value := base64.StdEncoding.EncodeToString(benchValue)
	ctx := context.Background()
	runRounds(b, 16, func(key string) error {
		body := fmt.Sprintf(`{"key":%q,"value":%q}`, base64.StdEncoding.EncodeToString([]byte(key)), value)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, clientURL+"/v3/kv/put", bytes.NewReader([]byte(body)))
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd put: %s", resp.Status)
		}
		return nil
	})
}

func freePort(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
