package cgroup2

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Create makes the cgroup at path and its parents. path must lie below the
// cgroup2 mount: nothing here ever acts on the root cgroup.
func Create(path string) error {
	if err := below(path); err != nil {
		return err
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("make cgroup %s: %w", path, err)
	}
	return nil
}

// Kill kills every process in the cgroup subtree at path (cgroup.kill,
// Linux 5.14+; else SIGKILL to each listed process) and waits until the
// subtree is empty or ctx ends. A cgroup that does not exist is empty.
func Kill(ctx context.Context, path string) error {
	if err := below(path); err != nil {
		return err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0o644); err != nil {
		for _, pid := range Pids(path) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	for {
		// cgroup.events says "populated 0" once no process is left in the
		// subtree; a cgroup removed meanwhile has none either.
		b, err := os.ReadFile(filepath.Join(path, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup %s: processes still running after SIGKILL: %v", path, Pids(path))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Pids lists the processes of the cgroup subtree at path.
func Pids(path string) []int {
	var pids []int
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// Remove removes the cgroup subtree at path, deepest first; one already
// gone is fine. Its processes must be gone (see Kill); the kernel may take
// a moment to let go of just-killed tasks, so rmdir is retried for up to
// two seconds per cgroup.
func Remove(path string) error {
	if err := below(path); err != nil {
		return err
	}
	var dirs []string
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		var err error
		for range 100 {
			if err = os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
	}
	return nil
}

// below refuses a path that is not strictly below the cgroup2 mount: the
// root cgroup (the machine's) and paths outside the hierarchy.
func below(path string) error {
	mnt, err := Mount()
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(mnt, filepath.Clean(path))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || !filepath.IsAbs(path) {
		return fmt.Errorf("cgroup %s: not below the cgroup2 mount %s", path, mnt)
	}
	return nil
}
