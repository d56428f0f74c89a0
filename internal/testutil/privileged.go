package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// skip skips the test with reason, except under CI where a skip would hide a
// test that never ran: there it fails instead.
func skip(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true: cannot skip: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips a privileged test (netns, BPF, containerd, mounts) when the
// test does not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "privileged test: needs root (netns, BPF, containerd)")
	}
}

// RequireBinary returns the path of an external program the test drives
// (kubectl, bpftool, cnitool, …), skipping when it is not installed.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skip(t, name+" not installed: run .ci/run or the README's set-up")
	}
	return p
}
