package apibench

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// serverMetrics scrapes the server's /metrics and returns the value of
// every sample line without labels (histogram _sum and _count included), by
// name. Enough to derive means of the store's commit histograms.
func serverMetrics(s *harness.Server) (map[string]float64, error) {
	c, token, err := s.HTTPClient()
	if err != nil {
		return nil, err
	}
	code, body, err := harness.Do(context.Background(), c, token, http.MethodGet, "https://"+s.Addr+"/metrics", "", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, nil
}

// commitStats is the mean group size and commit time of the store's group
// commits between two scrapes, and the share of that time its checkpoints
// (bbolt transactions, which hold up the commits) took.
func commitStats(before, after map[string]float64, elapsed float64) (meanBatch, meanCommitMs, checkpointShare float64) {
	delta := func(name string) float64 { return after[name] - before[name] }
	n := delta("skep_store_commit_batch_writes_count")
	if n <= 0 {
		return 0, 0, 0
	}
	meanBatch = delta("skep_store_commit_batch_writes_sum") / n
	meanCommitMs = delta("skep_store_commit_duration_seconds_sum") / n * 1000
	if elapsed > 0 {
		checkpointShare = delta("skep_store_checkpoint_duration_seconds_sum") / elapsed
	}
	return meanBatch, meanCommitMs, checkpointShare
}
