package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns nil and fails the test if timeout
// passes first, with what and cond's last error: cond says why the condition
// does not hold yet. The timeout is a sanity bound, not a timing target.
// Polls start 1 ms apart and back off to 50 ms.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}
