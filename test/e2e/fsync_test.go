package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/test/e2e/harness"
)

// TestEveryAcknowledgedWriteIsSynced closes the hole a SIGKILL test leaves:
// the page cache outlives a killed process, so a store that never synced
// would pass it. Here strace counts the server's fsync/fdatasync calls while
// one client makes N creates one after another: no two writes can share a
// commit, so a store that makes each write durable before acknowledging it
// syncs at least N times. Then 16 clients write at once, and group commit
// must make fewer syncs than writes.
func TestEveryAcknowledgedWriteIsSynced(t *testing.T) {
	testutil.RequireRoot(t) // ptrace of a process that is not our child
	straceBin := testutil.RequireBinary(t, "strace")
	srv := startServer(t)
	cs := clientset(t, restConfig(t, srv))
	ctx := context.Background()
	// Warm up (first-write allocations, namespace lookups) outside the count.
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", "warm"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(t.TempDir(), "strace.out")
	cmd := exec.Command(straceBin, "-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range,syncfs,sync", "-o", out, "-p", strconv.Itoa(srv.Pid()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	defer stop()
	// strace attaches to the threads one by one: write until a sync shows up
	// in its output, and count only what follows.
	countSyncs := func() int {
		b, _ := os.ReadFile(out)
		syncs := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "sync") && !strings.Contains(l, "resumed>") {
				syncs++
			}
		}
		return syncs
	}
	for i := 0; countSyncs() == 0; i++ {
		if i == 100 {
			t.Fatalf("strace traced no sync in 100 creates (stderr: %s)", stderr.String())
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", fmt.Sprintf("probe-%03d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	before := countSyncs()

	const n = 100
	for i := 0; i < n; i++ {
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", fmt.Sprintf("synced-%03d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %d under strace: %v", i, err)
		}
	}
	syncs := countSyncs() - before
	t.Logf("%d sequential creates: %d sync calls traced", n, syncs)
	if syncs < n {
		t.Errorf("%d sequential acknowledged creates made only %d fsync/fdatasync calls: some writes were acknowledged before they were durable", n, syncs)
	}

	// 16 concurrent clients: writes that arrive together share a commit,
	// so there are fewer syncs than writes (the group commit).
	const m = 800
	before = countSyncs()
	err := harness.Parallel(ctx, m, 16, func(ctx context.Context, _, i int) error {
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", fmt.Sprintf("grouped-%03d", i)), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("concurrent creates under strace: %v", err)
	}
	stop()
	grouped := countSyncs() - before
	t.Logf("%d creates from 16 clients: %d sync calls traced (%.2f per write)", m, grouped, float64(grouped)/m)
	if grouped >= m {
		t.Errorf("%d creates from 16 concurrent clients made %d sync calls: writes are not grouped into shared commits", m, grouped)
	}
}
