package bpf

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/skep-dev/skep/internal/testutil"
)

// newTestLB loads a data path pinned under a pin directory of its own,
// removed (links detached, pins gone) when the test ends.
func newTestLB(t testing.TB, opts Options) *LB {
	t.Helper()
	testutil.RequireRoot(t)
	if opts.PinDir == "" {
		opts.PinDir = filepath.Join(PinRoot, "test-"+testutil.RandSuffix())
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

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
