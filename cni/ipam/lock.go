package ipam

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLockTimeout means another invocation held the store for longer than the
// caller was willing to wait. It is transient: the runtime should retry.
var ErrLockTimeout = errors.New("ipam store is locked by another invocation")

// fileLock is an exclusive flock(2) on a file next to the database. bbolt
// takes its own flock too, but it polls every 50 ms while waiting; a blocking
// flock wakes the next waiter the moment the holder lets go, which is what
// keeps p99 low when a runtime starts many pods at once.
type fileLock struct{ fd int }

func acquireLock(path string, timeout time.Duration) (*fileLock, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	// Fast path: nobody holds it.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return &fileLock{fd: fd}, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}

	got := make(chan error, 1)
	go func() { got <- flockRetryEINTR(fd) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return &fileLock{fd: fd}, nil
	case <-timer.C:
		// The waiting goroutine owns the descriptor from now on: when it
		// finally gets the lock it closes the descriptor, which drops the lock.
		go func() {
			<-got
			unix.Close(fd)
		}()
		return nil, ErrLockTimeout
	}
}

func flockRetryEINTR(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// release drops the lock by closing the descriptor.
func (l *fileLock) release() error {
	return unix.Close(l.fd)
}
