package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/internal/cgroup2"
)

// benchCgroup is a cgroup of our own under the cgroup2 mount, never the root:
// the socket-LB attaches here and only client children placed here see it.
type benchCgroup struct {
	Path string
	fd   int
}

func newBenchCgroup(name string) (*benchCgroup, error) {
	mnt, err := cgroup2.Mount()
	if err != nil {
		return nil, err
	}
	p := filepath.Join(mnt, name)
	if p == filepath.Clean(mnt) {
		return nil, errors.New("refusing to use the root cgroup")
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	fd, err := unix.Open(p, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return &benchCgroup{Path: p, fd: fd}, nil
}

// Close removes the cgroup. Children are gone by then, but the kernel may
// take a moment to drop a dying task, so rmdir is retried briefly.
func (c *benchCgroup) Close() error {
	if c == nil {
		return nil
	}
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	var err error
	for range 50 {
		if err = os.Remove(c.Path); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", c.Path, err)
}

// staleCgroups lists bench cgroups left by runs whose process is gone.
func staleCgroups() []string {
	mnt, err := cgroup2.Mount()
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir(mnt)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if pid, ok := prefixPID(e.Name()); ok && e.IsDir() && !pidAlive(pid) {
			out = append(out, filepath.Join(mnt, e.Name()))
		}
	}
	return out
}
