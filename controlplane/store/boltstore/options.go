package boltstore

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures Open.
type Option func(*options)

type options struct {
	eventLogSize     int
	eventLogBytes    int64
	watchBuffer      int
	progressInterval time.Duration
	encrypted        []string
	keyFile          string
	maxBatch         int
	maxBatchBytes    int
	registerer       prometheus.Registerer
	openTimeout      time.Duration
	noFreelistSync   bool
	logger           *slog.Logger

	checkpointInterval time.Duration
	checkpointWrites   int
	walSize            int64
}

func defaultOptions() options {
	return options{
		eventLogSize:     10000,
		eventLogBytes:    128 << 20,
		watchBuffer:      100,
		progressInterval: time.Second,
		maxBatch:         1024,
		maxBatchBytes:    16 << 20,
		openTimeout:      5 * time.Second,
		noFreelistSync:   true,
		logger:           slog.Default(),

		checkpointInterval: 100 * time.Millisecond,
		checkpointWrites:   10000,
		walSize:            walDefaultSize,
	}
}

// WithEventLogSize sets how many recent events the watch log keeps (default
// 10,000). A watch from an older revision gets ErrExpired, and a watcher
// lagging this many events behind is closed.
func WithEventLogSize(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.eventLogSize = n
		}
	}
}

// WithEventLogBytes bounds the values the watch log keeps alive (default
// 128 MiB): past it the oldest events go early, and a watch from before
// them gets ErrExpired.
func WithEventLogBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.eventLogBytes = n
		}
	}
}

// WithWatchBuffer sets each watcher's channel capacity (default 100).
func WithWatchBuffer(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.watchBuffer = n
		}
	}
}

// WithProgressInterval sets how long a watcher with ProgressNotify stays idle
// before it gets an EventProgress (default 1 s).
func WithProgressInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.progressInterval = d
		}
	}
}

// WithEncryptedPrefixes encrypts at rest the values of keys starting with any
// of these prefixes (e.g. "/registry/secrets/"). The AES key is read from the
// key file (WithKeyFile, default secrets.key next to the database), created
// with mode 0600 on first start.
func WithEncryptedPrefixes(prefixes ...string) Option {
	return func(o *options) { o.encrypted = append(o.encrypted, prefixes...) }
}

// WithKeyFile sets the path of the encryption key file.
func WithKeyFile(path string) Option {
	return func(o *options) { o.keyFile = path }
}

// WithMaxBatch caps how many writes one transaction groups (default 1024).
func WithMaxBatch(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBatch = n
		}
	}
}

// WithMaxBatchBytes caps the bytes of values one transaction groups
// (default 16 MiB); a single larger write still gets a transaction of its own.
func WithMaxBatchBytes(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBatchBytes = n
		}
	}
}

// WithMetrics registers the store's Prometheus series (skep_store_*) with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) { o.registerer = reg }
}

// WithOpenTimeout bounds the wait for the database file lock (default 5 s);
// another process holding the file makes Open fail instead of hanging.
func WithOpenTimeout(d time.Duration) Option {
	return func(o *options) { o.openTimeout = d }
}

// WithFreelistSync persists bbolt's freelist on every commit (bbolt's
// default). The store's default, like etcd's, is not to: commits write fewer
// pages and Open rebuilds the freelist by scanning the page headers.
func WithFreelistSync(sync bool) Option {
	return func(o *options) { o.noFreelistSync = !sync }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithCheckpoint sets when the writes held in the WAL and in memory are
// folded into the bbolt file: every interval (default 100 ms) or every
// writes writes (default 10,000), whichever comes first. Longer means fewer,
// larger bbolt transactions and a longer WAL to replay after a crash.
func WithCheckpoint(interval time.Duration, writes int) Option {
	return func(o *options) {
		if interval > 0 {
			o.checkpointInterval = interval
		}
		if writes > 0 {
			o.checkpointWrites = writes
		}
	}
}

// WithWALSize sets the preallocated size of the write-ahead log (default
// 64 MiB); a checkpoint runs when it is half full.
func WithWALSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.walSize = n
		}
	}
}
