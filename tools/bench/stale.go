package bench

import (
	"errors"
	"os"
	"path/filepath"
)

// DefaultSkep attaches skep's own data path; nil until the bpf package
// provides a loader (see skep_bpf.go).
var DefaultSkep SkepAttach

// pinRoot holds the bench runs' pin directories (<pinRoot>/<prefix>).
const pinRoot = "/sys/fs/bpf/skep"

// uninstallPins detaches and removes a pin directory; set with the loader.
var uninstallPins func(pinDir string) error

// CleanupStale removes what killed runs left (a run removes its own on every
// path it controls; SIGKILL is the one it cannot): cgroups and pin
// directories named after a pid that no longer exists. Namespaces need no
// sweep: they are anonymous and die with the process.
func CleanupStale() ([]string, error) {
	var removed []string
	var errs []error
	if ents, err := os.ReadDir(pinRoot); err == nil && uninstallPins != nil {
		for _, e := range ents {
			if pid, ok := prefixPID(e.Name()); ok && !pidAlive(pid) {
				p := filepath.Join(pinRoot, e.Name())
				if err := uninstallPins(p); err != nil {
					errs = append(errs, err)
					continue
				}
				removed = append(removed, p)
			}
		}
	}
	for _, p := range staleCgroups() {
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}
