package boltstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus series; registered only when Open is
// given WithMetrics, so tests can open many stores in one process.
type metrics struct {
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram
	commitErrors  prometheus.Counter

	checkpointSeconds prometheus.Histogram
	checkpointErrors  prometheus.Counter
	watchers          prometheus.Gauge
	watchersDropped   prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skep_store_commit_duration_seconds",
			Help: "Time of one group commit: checks, the WAL append and its fdatasync.",
			// 100 µs … ~3 s.
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skep_store_commit_batch_writes",
			Help:    "Writes grouped into one transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		checkpointSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skep_store_checkpoint_duration_seconds",
			Help:    "Time of one checkpoint: the bbolt transaction, with its fsyncs, that folds the WAL's writes into the database file.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}),
		checkpointErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skep_store_checkpoint_errors_total",
			Help: "Checkpoints that failed; their writes stay in the WAL and the next checkpoint retries.",
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skep_store_commit_errors_total",
			Help: "Transactions that failed to commit; each of their writes got the error.",
		}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skep_store_watchers",
			Help: "Open watches.",
		}),
		watchersDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skep_store_watchers_dropped_total",
			Help: "Watches closed because they fell behind the event log.",
		}),
	}
}

// register adds the series, plus the revision read at scrape time.
func (m *metrics) register(reg prometheus.Registerer, s *Store) error {
	revision := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "skep_store_revision",
		Help: "The store's current global revision.",
	}, func() float64 { return float64(s.Revision()) })
	for _, c := range []prometheus.Collector{m.commitSeconds, m.batchSize, m.commitErrors, m.checkpointSeconds, m.checkpointErrors, m.watchers, m.watchersDropped, revision} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register store metrics: %w", err)
		}
	}
	return nil
}
