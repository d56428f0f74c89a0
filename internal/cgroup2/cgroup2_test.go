package cgroup2

import (
	"os"
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	if got := unescape(`/sys/fs/cgroup\040x`); got != "/sys/fs/cgroup x" {
		t.Errorf("got %q", got)
	}
}

func TestMountIn(t *testing.T) {
	hybrid := `25 1 254:0 / / rw - ext4 /dev/vda rw
29 28 0:26 / /sys/fs/cgroup/memory rw shared:8 - cgroup cgroup rw,memory
36 28 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw
`
	if got, err := mountIn(strings.NewReader(hybrid)); err != nil || got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %q %v", got, err)
	}
	if _, err := mountIn(strings.NewReader("25 1 254:0 / / rw - ext4 /dev/vda rw\n")); err == nil {
		t.Error("no cgroup2 mount, no error")
	}
}

func TestMount(t *testing.T) {
	p, err := Mount()
	if err != nil {
		t.Fatalf("find the cgroup2 mount: %v", err)
	}
	if _, err := os.Stat(p + "/cgroup.procs"); err != nil {
		t.Errorf("%s is not a cgroup2 root: %v", p, err)
	}
}
