package apiserver

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skep-dev/skep/controlplane/store"
)

// metrics are the server's Prometheus metrics, in their own registry so
// several servers can run in one test process.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	inflight  prometheus.Gauge
	storeOps  *prometheus.HistogramVec
	storeErrs *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "apiserver_request_total",
			Help: "API requests by verb, resource and HTTP code."}, []string{"verb", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "apiserver_request_duration_seconds",
			Help:    "API request latency by verb and resource (watches: until the stream ends).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60}}, []string{"verb", "resource"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "apiserver_current_inflight_requests", Help: "Requests being served."}),
		storeOps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "skep_store_operation_duration_seconds",
			Help:    "Store operation latency by operation.",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}}, []string{"operation"}),
		storeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skep_store_operation_errors_total",
			Help: "Store operations that returned an error, by operation."}, []string{"operation"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.inflight, m.storeOps, m.storeErrs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

type ctxKey int

const requestInfoKey ctxKey = 0

// reqLabels is filled by the router so the metrics middleware can label.
type reqLabels struct{ verb, resource string }

func setRequestInfo(r *http.Request, verb, resource string) {
	if l, ok := r.Context().Value(requestInfoKey).(*reqLabels); ok {
		l.verb, l.resource = verb, resource
	}
}

// statusRecorder remembers the response code; it unwraps for
// http.ResponseController (flush, deadlines).
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *Server) metricsMiddleware(next http.Handler) http.Handler {
	m := s.metrics
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		labels := &reqLabels{verb: r.Method, resource: ""}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey, labels))
		rec := &statusRecorder{ResponseWriter: w}
		m.inflight.Inc()
		defer func() {
			m.inflight.Dec()
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			m.requests.WithLabelValues(labels.verb, labels.resource, strconv.Itoa(code)).Inc()
			m.latency.WithLabelValues(labels.verb, labels.resource).Observe(time.Since(start).Seconds())
			s.log.Debug("request", "method", r.Method, "url", r.URL.RequestURI(), "verb", labels.verb, "code", code, "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

// instrumentedStore times every store operation.
type instrumentedStore struct {
	store.Interface
	m *metrics
}

func instrumentStore(st store.Interface, m *metrics) store.Interface {
	return &instrumentedStore{Interface: st, m: m}
}

func (i *instrumentedStore) observe(op string, start time.Time, err error) {
	i.m.storeOps.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && err != store.ErrNotFound {
		i.m.storeErrs.WithLabelValues(op).Inc()
	}
}

func (i *instrumentedStore) Get(ctx context.Context, key string) (store.KV, error) {
	start := time.Now()
	kv, err := i.Interface.Get(ctx, key)
	i.observe("get", start, err)
	return kv, err
}

func (i *instrumentedStore) List(ctx context.Context, prefix string, opts store.ListOptions) (store.ListResult, error) {
	start := time.Now()
	lr, err := i.Interface.List(ctx, prefix, opts)
	i.observe("list", start, err)
	return lr, err
}

func (i *instrumentedStore) Create(ctx context.Context, key string, value []byte) (int64, error) {
	start := time.Now()
	rev, err := i.Interface.Create(ctx, key, value)
	i.observe("create", start, err)
	return rev, err
}

func (i *instrumentedStore) Update(ctx context.Context, key string, value []byte, expectRev int64) (int64, error) {
	start := time.Now()
	rev, err := i.Interface.Update(ctx, key, value, expectRev)
	i.observe("update", start, err)
	return rev, err
}

func (i *instrumentedStore) Delete(ctx context.Context, key string, expectRev int64) (store.KV, error) {
	start := time.Now()
	kv, err := i.Interface.Delete(ctx, key, expectRev)
	i.observe("delete", start, err)
	return kv, err
}

func (i *instrumentedStore) Range(ctx context.Context, prefix string, opts store.ListOptions, begin func(int64) error, each func(store.KV) error) (store.ListResult, error) {
	start := time.Now()
	lr, err := i.Interface.Range(ctx, prefix, opts, begin, each)
	i.observe("range", start, err)
	return lr, err
}
