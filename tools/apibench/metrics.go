package apibench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// serverMetrics scrapes the server's /metrics and returns the value of
// every unlabelled counter, gauge and histogram sum/count by name (a
// histogram's as name_sum and name_count). Enough to derive means of the
// store's commit histograms.
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
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name+"_sum"] = m.GetHistogram().GetSampleSum()
				out[name+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
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
