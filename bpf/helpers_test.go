package bpf

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/internal/testutil"
)

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newTestLB loads a data path pinned under a pin directory of its own,
// removed (links detached, pins gone) when the test ends.
func newTestLB(t testing.TB, opts Options) *LB {
	t.Helper()
	testutil.RequireRoot(t)
	if opts.PinDir == "" {
		opts.PinDir = filepath.Join(PinRoot, "test-"+randSuffix())
	}
	lb, err := Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		if err := lb.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return lb
}

// newTestCgroup makes a cgroup of the test's own under the cgroup2 mount
// (never the root cgroup), removed when the test ends.
func newTestCgroup(t testing.TB) string {
	t.Helper()
	root, err := cgroup2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "skep-bpf-test-"+randSuffix())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	return dir
}

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
