package cgroup2

import (
	"context"
	"path/filepath"
	"testing"
)

func TestRefusesRootAndOutside(t *testing.T) {
	mnt, err := Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mnt, mnt + "/", mnt + "/x/..", filepath.Dir(mnt), "/tmp/x", "relative/x", mnt + "/../x"} {
		if err := below(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	if err := below(filepath.Join(mnt, "skep-x", "y")); err != nil {
		t.Errorf("a cgroup below the mount refused: %v", err)
	}
	if err := Kill(context.Background(), mnt); err == nil {
		t.Error("Kill of the root cgroup accepted")
	}
	if err := Remove(mnt); err == nil {
		t.Error("Remove of the root cgroup accepted")
	}
}

// TestKillRemove starts processes in a nested cgroup subtree of the
// test's own, kills the subtree and removes it.
