package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"syscall"
	"time"
)

// RandSuffix is 8 random hex digits for the names of namespaces, cgroups,
// links and bpffs pins, which tests running at the same time (in this
// process or another engineer's) must not share.
func RandSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CPUTime is the user+system CPU time this process has used: on a machine
// shared with other work it says more about a benchmark's cost than the
// wall clock does.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
