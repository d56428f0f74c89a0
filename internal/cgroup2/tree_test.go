package cgroup2_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/internal/testutil"
)

func TestKillRemove(t *testing.T) {
	testutil.RequireRoot(t)
	mnt, err := cgroup2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	root := filepath.Join(mnt, "skeptest-"+hex.EncodeToString(b))
	leaf := filepath.Join(root, "a", "b")
	if err := cgroup2.Create(leaf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cgroup2.Kill(ctx, root)
		_ = cgroup2.Remove(root)
	})
	var cmds []*exec.Cmd
	for _, cg := range []string{filepath.Join(root, "a"), leaf} {
		fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		err = cmd.Start()
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	if got := cgroup2.Pids(root); len(got) != 2 {
		t.Fatalf("pids in the subtree: %v, want 2", got)
	}
	exited := make(chan struct{})
	go func() {
		for _, c := range cmds {
			_ = c.Wait()
		}
		close(exited)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cgroup2.Kill(ctx, root); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("processes survived Kill")
	}
	if got := cgroup2.Pids(root); len(got) != 0 {
		t.Errorf("pids after kill: %v", got)
	}
	if err := cgroup2.Remove(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cgroup after remove: %v", err)
	}
	// Gone already: both are no-ops.
	if err := cgroup2.Kill(ctx, root); err != nil {
		t.Errorf("kill of a removed cgroup: %v", err)
	}
	if err := cgroup2.Remove(root); err != nil {
		t.Errorf("second remove: %v", err)
	}
}
