package apibench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// BenchmarkPaired16 measures the API (16 clients), etcd (16 clients) and
// bbolt Update-per-write (16 writers) in alternating short rounds, so that
// the disk and CPU contention of a shared machine falls on all three alike;
// it reports the median rate of each and the median of the per-round ratios.
// A raw fdatasync latency of the same disk is measured in each round too.
func BenchmarkPaired16(b *testing.B) {
	_, ecs := etcdClients(b, 16)
	s := server(b, "paired")
	css := clients(b, s, 16)
	path := filepath.Join(workDir, "paired.bbolt")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { db.Close(); os.Remove(path) }()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("configmaps")); return err }); err != nil {
		b.Fatal(err)
	}

	const rounds, apiOps, etcdOps, boltOps = 5, 1500, 1500, 300
	var api, etcd, bb, ratioEtcd, ratioBolt, fsync []float64
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for r := 0; r < rounds; r++ {
			d := run(b, 16, apiOps, func(ctx context.Context, w, _ int) error {
				name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
				_, err := css[w].CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", name), metav1.CreateOptions{})
				return err
			})
			a := apiOps / d.Seconds()
			d = run(b, 16, etcdOps, func(ctx context.Context, w, _ int) error {
				name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
				_, err := ecs[w].Put(ctx, "/registry/configmaps/default/"+name, string(payload(name)))
				return err
			})
			et := etcdOps / d.Seconds()
			d = run(b, 16, boltOps, func(_ context.Context, _, _ int) error {
				name := "cm-" + strconv.FormatInt(seq.Add(1), 36)
				v := payload(name)
				return db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("configmaps")).Put([]byte("default/"+name), v) })
			})
			bo := boltOps / d.Seconds()
			f, err := fdatasyncLatency(workDir, 50)
			if err != nil {
				b.Fatal(err)
			}
			api, etcd, bb = append(api, a), append(etcd, et), append(bb, bo)
			ratioEtcd, ratioBolt = append(ratioEtcd, a/et), append(ratioBolt, a/bo)
			fsync = append(fsync, float64(f.Microseconds())/1000)
		}
	}
	b.StopTimer()
	b.ReportMetric(median(api), "api-creates/s")
	b.ReportMetric(median(etcd), "etcd-puts/s")
	b.ReportMetric(median(bb), "bbolt-writes/s")
	b.ReportMetric(median(ratioEtcd), "api/etcd")
	b.ReportMetric(median(fsync), "fdatasync-p50-ms")
	summary.Set("paired: api creates/s, 16 clients (median)", median(api), "/s", ">= 5000")
	summary.Set("paired: etcd 3.4 puts/s, 16 clients (median)", median(etcd), "/s", "")
	summary.Set("paired: bbolt Update/s, 16 writers (median)", median(bb), "/s", "")
	summary.Set("paired: ratio api / etcd (median of rounds)", median(ratioEtcd), "x", "towards 1")
	summary.Set("paired: ratio api / bbolt Update (median)", median(ratioBolt), "x", "")
	summary.Set("paired: disk fdatasync p50 ms", median(fsync), "ms", "")
	fmt.Fprintf(os.Stderr, "apibench: paired rounds api %v etcd %v bbolt %v fdatasync-ms %v\n", rounded(api), rounded(etcd), rounded(bb), fsync)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}

// fdatasyncLatency writes 4 KiB and fdatasyncs n times in a file under dir
// and returns the median latency: the disk's floor for one durable commit.
func fdatasyncLatency(dir string, n int) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			return 0, err
		}
		if err := fdatasync(f); err != nil {
			return 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	return Percentile(lat, 50), nil
}
