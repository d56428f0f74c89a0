package boltstore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skep-dev/skep/controlplane/store"

	bolt "go.etcd.io/bbolt"
)

const (
	crashChildEnv   = "SKEP_STORE_CRASH_CHILD_DB"
	crashWALOnlyEnv = "SKEP_STORE_CRASH_CHILD_WAL_ONLY"
)

// TestMain runs the crash child instead of the tests when
// TestCrashDurability re-executes this binary.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

// crashChild writes from several goroutines and prints each key only after
// Create acknowledged it, until it is killed (or 30 s pass).
func crashChild(path string) {
	var opts []Option
	if os.Getenv(crashWALOnlyEnv) == "1" {
		// No checkpoint before the kill: every acknowledged write is only
		// in the WAL, so the reopen must replay all of them.
		opts = append(opts, WithCheckpoint(time.Hour, 1<<30))
	}
	s, err := Open(path, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(30 * time.Second) // bounded even if nobody kills us
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				key := fmt.Sprintf("/crash/%d/%06d", w, i)
				if _, err := s.Create(context.Background(), key, []byte("value-of-"+key)); err != nil {
					fmt.Fprintln(os.Stderr, "create:", err)
					os.Exit(2)
				}
				mu.Lock()
				os.Stdout.WriteString(key + "\n") // unbuffered: what is printed was acknowledged
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// TestCrashDurability kills a writing process with SIGKILL mid-stream and
// checks that every write it had acknowledged is in the reopened file: with
// the default checkpoints (the kill lands between or during them), and with
// none at all (everything comes back from the WAL).
func TestCrashDurability(t *testing.T) {
	t.Run("checkpoints", func(t *testing.T) { crashDurability(t, false) })
	t.Run("wal-only", func(t *testing.T) { crashDurability(t, true) })
}

func crashDurability(t *testing.T, walOnly bool) {
	path := filepath.Join(t.TempDir(), "state.db")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	if walOnly {
		cmd.Env = append(cmd.Env, crashWALOnlyEnv+"=1")
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	var acked []string
	const killAfter = 1500
	r := bufio.NewReader(stdout)
	timeout := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timeout.Stop()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // EOF after the kill; a partial last line was never complete
		}
		acked = append(acked, strings.TrimSuffix(line, "\n"))
		if len(acked) == killAfter && !killed {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	werr := cmd.Wait()
	killed = true
	if len(acked) < killAfter {
		t.Fatalf("child wrote only %d keys before exiting (%v): %s", len(acked), werr, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v", werr)
	}

	if walOnly {
		// The test only proves replay if the database file itself had
		// none of the writes.
		if rev := boltRevision(t, path); rev != 0 {
			t.Fatalf("database file at revision %d before replay; want 0 (no checkpoint ran)", rev)
		}
	}
	s, err := Open(path)
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	res, err := s.List(context.Background(), "/crash/", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	present := make(map[string]string, len(res.Items))
	for _, kv := range res.Items {
		present[kv.Key] = string(kv.Value)
	}
	for _, k := range acked {
		if v, ok := present[k]; !ok || v != "value-of-"+k {
			t.Fatalf("acknowledged key %s lost after SIGKILL (value %q)", k, v)
		}
	}
	if s.Revision() != int64(len(res.Items)) {
		t.Fatalf("revision %d but %d keys: revision and data disagree", s.Revision(), len(res.Items))
	}
	t.Logf("%d acknowledged before the kill, %d in the file", len(acked), len(res.Items))
	// The reopened store keeps working.
	if _, err := s.Create(context.Background(), "/crash/after", nil); err != nil {
		t.Fatal(err)
	}
}

// boltRevision reads the revision stored in the bbolt file itself, without
// the WAL.
func boltRevision(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rev int64
	if err := db.View(func(tx *bolt.Tx) error {
		if root := tx.Bucket(bucketRoot); root != nil {
			rev = int64(beUint64(root.Bucket(bucketMeta).Get(keyRevision)))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return rev
}
