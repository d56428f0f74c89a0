package testutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skep-dev/skep/internal/cgroup2"
)

// NewCgroup makes a cgroup of the test's own under the cgroup2 mount (never
// the root cgroup) and removes it when the test ends. Removal retries for a
// second: a child that has just exited leaves the cgroup only once reaped.
func NewCgroup(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	root, err := cgroup2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "skep-test-"+RandSuffix())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make cgroup: %v", err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.Remove(dir)
			if err == nil {
				return
			}
			if i == 50 {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}
