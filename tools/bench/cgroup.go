package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroup2Mount finds the cgroup2 mount point from /proc/self/mountinfo:
// /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional…] - fstype source superopts
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if fs := strings.Fields(post); len(fs) > 0 && fs[0] == "cgroup2" {
			if f := strings.Fields(pre); len(f) >= 5 {
				return unescapeMountinfo(f[4]), nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 mount in /proc/self/mountinfo")
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// benchCgroup is a cgroup of our own under the cgroup2 mount, never the root:
// the socket-LB attaches here and only client children placed here see it.
type benchCgroup struct {
	Path string
	fd   int
}

func newBenchCgroup(name string) (*benchCgroup, error) {
	mnt, err := cgroup2Mount()
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
	mnt, err := cgroup2Mount()
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
