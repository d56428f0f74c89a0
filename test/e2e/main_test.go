// Package e2e is skep's acceptance suite: it drives a real `skep server`
// process the way users and components do — kubectl, client-go informers, raw
// HTTPS — and checks what they see.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// skepBin is the skep binary built once for the whole package.
var skepBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skep-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	skepBin, err = harness.BuildSkep(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startServer starts a fresh `skep server` on a free loopback port with a
// temporary data dir, waits until /readyz answers 200, and stops it (SIGTERM,
// which must exit cleanly) when the test ends. On failure the server's log
// tail is printed.
func startServer(t *testing.T) *harness.Server {
	t.Helper()
	// The port is free when picked but another process may take it before
	// the server binds it: then retry on a new port and data dir.
	for attempt := 1; ; attempt++ {
		addr, err := harness.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		dataDir := filepath.Join(t.TempDir(), "data")
		srv := harness.NewServer(skepBin, dataDir, addr)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		_, err = srv.WaitReady(30 * time.Second)
		if err != nil && attempt < 3 && !srv.Running() && strings.Contains(srv.LogTail(20), "address already in use") {
			t.Logf("port %s was taken meanwhile; retrying", addr)
			continue
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("skep server log (tail):\n%s", srv.LogTail(40))
			}
			if srv.Running() {
				if err := srv.Stop(15 * time.Second); err != nil {
					t.Errorf("stop server: %v", err)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
}

// restart starts srv again on its data dir and address and waits for ready.
func restart(t *testing.T, srv *harness.Server) time.Duration {
	t.Helper()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	d, err := srv.WaitReady(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func restConfig(t *testing.T, srv *harness.Server) *rest.Config {
	t.Helper()
	cfg, err := srv.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func clientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
