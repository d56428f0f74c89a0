package bench

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Job kinds a client child runs.
const (
	KindConnect = "connect" // short connections: connect, 64 B request/response, close
	KindRR      = "rr"      // requests on kept-alive connections
	KindStream  = "stream"  // one long TCP stream into the sink, bytes/s
	KindUDP     = "udp"     // UDP request/response on connected sockets
)

// Job is what the harness asks a client child to do.
type Job struct {
	Kind     string           `json:"kind"`
	Targets  []netip.AddrPort `json:"targets"` // worker w, iteration i uses Targets[(w+i)%len]
	Workers  int              `json:"workers"`
	Duration time.Duration    `json:"duration"`
	Payload  int              `json:"payload"`
}

// JobResult is what the child measured.
type JobResult struct {
	Ops     int64         `json:"ops"`    // completed connections / requests / datagrams
	Errors  int64         `json:"errors"` // failed attempts (connect refused, timeout, short read)
	Bytes   int64         `json:"bytes"`  // payload bytes moved (stream)
	Elapsed time.Duration `json:"elapsed"`
	P50     time.Duration `json:"p50"`
	P99     time.Duration `json:"p99"`
	// PerSec (Ops per second) and MBPerSec (payload MB per second), for
	// readers of the JSON.
	PerSec   float64 `json:"perSec"`
	MBPerSec float64 `json:"MBPerSec,omitempty"`
	// Hist is the latency histogram (bucket → count, see Hist), so the
	// slices of one measurement combine into exact percentiles.
	Hist map[int]int64 `json:"hist,omitempty"`
	// FirstError is the first failure seen, to tell "slow" from "broken".
	FirstError string `json:"firstError,omitempty"`
}

// Rate is completed operations per second.
func (r JobResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// MBps is payload megabytes (10^6) per second.
func (r JobResult) MBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Elapsed.Seconds()
}

// ioTimeout bounds every blocking socket call: a connect or read that a
// broken data path drops is counted as an error instead of hanging.
const ioTimeout = time.Second

// RunJob runs the job in this process with blocking syscalls, one locked OS
// thread per worker: a lean client (no Go netpoller between the program and
// the socket) so the data path's cost is what the figures show.
func RunJob(j Job) (JobResult, error) {
	if len(j.Targets) == 0 || j.Workers <= 0 || j.Duration <= 0 {
		return JobResult{}, fmt.Errorf("bad job: %d targets, %d workers, %v", len(j.Targets), j.Workers, j.Duration)
	}
	if j.Payload <= 0 {
		j.Payload = 64
	}
	var work func(w int, deadline time.Time, ws *workerStats)
	switch j.Kind {
	case KindConnect:
		work = func(w int, d time.Time, ws *workerStats) { connectWorker(j, w, d, ws) }
	case KindRR:
		work = func(w int, d time.Time, ws *workerStats) { rrWorker(j, w, d, ws) }
	case KindStream:
		j.Workers = 1
		work = func(w int, d time.Time, ws *workerStats) { streamWorker(j, d, ws) }
	case KindUDP:
		work = func(w int, d time.Time, ws *workerStats) { udpWorker(j, w, d, ws) }
	default:
		return JobResult{}, fmt.Errorf("unknown job kind %q", j.Kind)
	}
	stats := make([]workerStats, j.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(j.Duration)
	for w := range j.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			work(w, deadline, &stats[w])
		}()
	}
	wg.Wait()
	res := JobResult{Elapsed: time.Since(start)}
	var h Hist
	for i := range stats {
		s := &stats[i]
		res.Ops += s.ops
		res.Errors += s.errs
		res.Bytes += s.bytes
		if res.FirstError == "" && s.firstErr != nil {
			res.FirstError = s.firstErr.Error()
		}
		h.add(&s.hist)
	}
	res.Hist = h.sparse()
	res.P50, res.P99 = h.quantile(0.50), h.quantile(0.99)
	return res, nil
}

type workerStats struct {
	ops, errs, bytes int64
	hist             Hist
	firstErr         error
}

func (s *workerStats) fail(err error) {
	s.errs++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

func (s *workerStats) sample(d time.Duration) { s.hist.record(d) }

// Hist counts latencies in log-scale buckets 2.5% wide from 1 µs up, so a
// worker records any number of operations in fixed memory, and the
// histograms of several client processes (the slices of one measurement)
// add up to exact-to-2.5% percentiles of the whole.
type Hist [histBuckets]int64

const (
	histBuckets = 800 // 1 µs × 1.025^800 ≈ 370 s
	histGrowth  = 1.025
)

func histBucket(d time.Duration) int {
	if d < time.Microsecond {
		return 0
	}
	b := 1 + int(math.Log(float64(d)/float64(time.Microsecond))/math.Log(histGrowth))
	return min(b, histBuckets-1)
}

// histValue is the geometric middle of bucket b.
func histValue(b int) time.Duration {
	if b == 0 {
		return time.Microsecond / 2
	}
	return time.Duration(float64(time.Microsecond) * math.Pow(histGrowth, float64(b)-0.5))
}

func (h *Hist) record(d time.Duration) { h[histBucket(d)]++ }

func (h *Hist) add(o *Hist) {
	for i, n := range o {
		h[i] += n
	}
}

// quantile is the nearest-rank q-quantile (0 for an empty histogram).
func (h *Hist) quantile(q float64) time.Duration {
	var total int64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(total))), 1)
	var seen int64
	for b, n := range h {
		if seen += n; seen >= rank {
			return histValue(b)
		}
	}
	return histValue(histBuckets - 1)
}

// sparse is the histogram as bucket → count, the non-empty buckets only.
func (h *Hist) sparse() map[int]int64 {
	m := map[int]int64{}
	for b, n := range h {
		if n > 0 {
			m[b] = n
		}
	}
	return m
}

func histFromSparse(m map[int]int64) *Hist {
	var h Hist
	for b, n := range m {
		if b >= 0 && b < histBuckets {
			h[b] += n
		}
	}
	return &h
}

func sockaddr(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// dial opens a blocking socket of typ connected to ap, with send and receive
// timeouts (SO_SNDTIMEO also bounds connect).
func dial(typ int, ap netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(ioTimeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if typ == unix.SOCK_STREAM {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	for {
		err = unix.Connect(fd, sockaddr(ap))
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EINPROGRESS { // what a blocking connect returns at SO_SNDTIMEO
		err = fmt.Errorf("timed out after %v", ioTimeout)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", ap, err)
	}
	return fd, nil
}

// roundTrip writes req and reads len(req) bytes back.
func roundTrip(fd int, req, resp []byte) error {
	for off := 0; off < len(req); {
		n, err := unix.Write(fd, req[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		off += n
	}
	for off := 0; off < len(resp); {
		n, err := unix.Read(fd, resp[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return errors.New("read: connection closed early")
		}
		off += n
	}
	return nil
}

// closeReset closes with SO_LINGER 0: the connection ends with a RST and
// leaves no TIME_WAIT behind, so ephemeral ports never run out and every
// mode measures the data path, not the port allocator.
func closeReset(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

func connectWorker(j Job, w int, deadline time.Time, s *workerStats) {
	req, resp := make([]byte, j.Payload), make([]byte, j.Payload)
	for i := 0; ; i++ {
		t0 := time.Now()
		if !t0.Before(deadline) {
			return
		}
		fd, err := dial(unix.SOCK_STREAM, j.Targets[(w+i)%len(j.Targets)])
		if err != nil {
			s.fail(err)
			continue
		}
		err = roundTrip(fd, req, resp)
		closeReset(fd)
		if err != nil {
			s.fail(err)
			continue
		}
		s.ops++
		s.sample(time.Since(t0))
	}
}

func rrWorker(j Job, w int, deadline time.Time, s *workerStats) {
	req, resp := make([]byte, j.Payload), make([]byte, j.Payload)
	fd := -1
	defer func() {
		if fd >= 0 {
			closeReset(fd)
		}
	}()
	for time.Now().Before(deadline) {
		if fd < 0 {
			var err error
			if fd, err = dial(unix.SOCK_STREAM, j.Targets[w%len(j.Targets)]); err != nil {
				s.fail(err)
				continue
			}
		}
		t0 := time.Now()
		if err := roundTrip(fd, req, resp); err != nil {
			s.fail(err)
			closeReset(fd)
			fd = -1
			continue
		}
		s.ops++
		s.sample(time.Since(t0))
	}
}

func streamWorker(j Job, deadline time.Time, s *workerStats) {
	fd, err := dial(unix.SOCK_STREAM, j.Targets[0])
	if err != nil {
		s.fail(err)
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 128<<10)
	for time.Now().Before(deadline) {
		n, err := unix.Write(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			s.fail(fmt.Errorf("write: %w", err))
			return
		}
		s.bytes += int64(n)
	}
	s.ops = 1
}

func udpWorker(j Job, w int, deadline time.Time, s *workerStats) {
	// A connected socket: the connect goes through the socket-LB's connect4
	// hook once, and through conntrack's NAT once, like a resolver's socket.
	fd, err := dial(unix.SOCK_DGRAM, j.Targets[w%len(j.Targets)])
	if err != nil {
		s.fail(err)
		return
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	req, resp := make([]byte, j.Payload), make([]byte, j.Payload+1)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		if _, err := unix.Write(fd, req); err != nil {
			s.fail(fmt.Errorf("send: %w", err))
			continue
		}
		n, err := unix.Read(fd, resp)
		if err != nil {
			s.fail(fmt.Errorf("recv: %w", err)) // a lost datagram times out here
			continue
		}
		if n != len(req) {
			s.fail(fmt.Errorf("recv: %d bytes, want %d", n, len(req)))
			continue
		}
		s.ops++
		s.sample(time.Since(t0))
	}
}
