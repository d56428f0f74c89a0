package boltstore

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data (and the metadata needed to read it back).
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// fallocate reserves n bytes of f from off without writing them (they read
// as zeros). ok is false when the file system cannot, and the caller writes
// zeros instead.
func fallocate(f *os.File, off, n int64) (ok bool, err error) {
	err = unix.Fallocate(int(f.Fd()), 0, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return false, nil
	}
	return err == nil, err
}
