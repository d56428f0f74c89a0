package e2e

// Regression tests for defects this suite found in the server, fixed since:
// each failed against the server as it was reported.

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// A second `skep server` on a data dir in use fails (store locked) but first
// rewrites admin.kubeconfig with its own --listen address, so kubectl no
// longer reaches the server that is running.
func TestFailedSecondServerKeepsKubeconfig(t *testing.T) {
	srv := startServer(t)
	before, err := os.ReadFile(srv.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, skepBin, "server", "--data-dir", srv.DataDir, "--listen", addr).Run(); err == nil {
		t.Fatal("second server exited 0")
	}
	after, err := os.ReadFile(srv.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("a second server that failed to start rewrote admin.kubeconfig of the running one:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// PUT with a body whose name differs from the URL's is 400 BadRequest in
// Kubernetes whatever exists (the name is checked before storage); skep
// answers 404 when the URL's name does not exist.
func TestUpdateNameMismatchOnMissingObjectIs400(t *testing.T) {
	srv := startServer(t)
	c, token, err := srv.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	code, resp, err := harness.Do(context.Background(), c, token, "PUT",
		"https://"+srv.Addr+"/api/v1/namespaces/default/configmaps/other", "application/json", []byte(validConfigMap))
	if err != nil {
		t.Fatal(err)
	}
	checkStatus(t, code, resp, 400)
}
