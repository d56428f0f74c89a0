package proxy

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skep-dev/skep/proxy/datapath"
)

// metrics are the proxy's own Prometheus series.
type metrics struct {
	syncLatency prometheus.Histogram
	frontends   prometheus.Gauge
	backends    prometheus.Gauge
	writes      *prometheus.CounterVec
	syncErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		syncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skep_proxy_sync_latency_seconds",
			Help: "Time from the first informer event for a service to its desired state applied to the data path.",
			// 50 µs … ~26 s: an endpoint change should land within 10 ms.
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 20),
		}),
		frontends: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skep_proxy_frontends_programmed",
			Help: "Frontends (VIP, port, protocol, scope) programmed in the data path.",
		}),
		backends: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skep_proxy_backends_programmed",
			Help: "Backends programmed, summed over frontends (active and terminating).",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skep_proxy_datapath_writes_total",
			Help: "Data path writes attempted, by operation.",
		}, []string{"op"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skep_proxy_sync_errors_total",
			Help: "Service syncs that failed and were retried.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.syncLatency, m.frontends, m.backends, m.writes, m.syncErrors)
	}
	return m
}

// countersCollector reads the data path's per-frontend counters at scrape
// time, so the proxy keeps no copy of them.
type countersCollector struct {
	counters datapath.Counters
	// names returns the service name of each applied frontend.
	names func() map[datapath.Frontend]string
	log   *slog.Logger

	connections, refused, packets, bytes *prometheus.Desc
}

func newCountersCollector(c datapath.Counters, names func() map[datapath.Frontend]string, log *slog.Logger) *countersCollector {
	labels := []string{"service", "frontend"}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("skep_proxy_service_"+name+"_total", help, labels, nil)
	}
	return &countersCollector{
		counters: c, names: names, log: log,
		connections: d("connections", "New flows balanced to a backend, per frontend."),
		refused:     d("refused", "Connects refused for want of an active backend, per frontend."),
		packets:     d("packets", "Packets through the per-packet path, per frontend."),
		bytes:       d("bytes", "Bytes through the per-packet path, per frontend."),
	}
}

func (c *countersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.connections
	ch <- c.refused
	ch <- c.packets
	ch <- c.bytes
}

func (c *countersCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.counters.ServiceCounters()
	if err != nil {
		c.log.Warn("read service counters", "err", err)
		return
	}
	names := c.names()
	for f, n := range counts {
		l := []string{names[f], f.String()}
		ch <- prometheus.MustNewConstMetric(c.connections, prometheus.CounterValue, float64(n.Connections), l...)
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n.Refused), l...)
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(n.Packets), l...)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(n.Bytes), l...)
	}
}
