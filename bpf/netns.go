package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// NetnsInCgroup lists the network namespaces of the processes in a cgroup
// v2 subtree (one /proc/PID/ns/net path per distinct namespace): the pods
// whose connected UDP sockets the socket terminator must visit. It is the
// default of Options.PodNetns once AttachCgroup ran.
func NetnsInCgroup(cgroupPath string) ([]string, error) {
	seen := map[uint64]bool{}
	var out []string
	err := filepath.WalkDir(cgroupPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a pod cgroup went away meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		f, err := os.Open(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			ns := "/proc/" + strings.TrimSpace(sc.Text()) + "/ns/net"
			var st syscall.Stat_t
			if err := syscall.Stat(ns, &st); err != nil {
				continue // the process exited
			}
			if !seen[st.Ino] {
				seen[st.Ino] = true
				out = append(out, ns)
			}
		}
		return sc.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list netns in %s: %w", cgroupPath, err)
	}
	return out, nil
}
