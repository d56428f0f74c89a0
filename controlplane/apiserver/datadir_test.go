package apiserver

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/testutil"
)

// TestSecondServerOnDataDirInUse: a second server on a data dir a running
// server holds fails fast with a clear error and leaves the running
// server's kubeconfig alone.
func TestSecondServerOnDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	srv, stop := runIn(t, dir)
	defer stop()
	before, err := os.ReadFile(srv.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = New(Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: testutil.QuietLogger()})
	took := time.Since(start)
	if err == nil {
		t.Fatal("second server on a data dir in use started")
	}
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), "data dir "+dir+" is in use by another skep server") {
		t.Errorf("error = %q, want it to say the data dir is in use", err)
	}
	if took > 3*time.Second {
		t.Errorf("second server took %v to fail", took)
	}
	after, err := os.ReadFile(srv.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("failed second server rewrote admin.kubeconfig:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
