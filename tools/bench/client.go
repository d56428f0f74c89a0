package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
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

// maxSamples bounds the latency samples a worker keeps (memory stays small
// at any rate; past it, latencies are sampled 1 in 2, 1 in 4, …).
const maxSamples = 1 << 18

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
	var lat []time.Duration
	for i := range stats {
		s := &stats[i]
		res.Ops += s.ops
		res.Errors += s.errs
		res.Bytes += s.bytes
		if res.FirstError == "" && s.firstErr != nil {
			res.FirstError = s.firstErr.Error()
		}
		lat = append(lat, s.lat...)
	}
	res.P50, res.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return res, nil
}

type workerStats struct {
	ops, errs, bytes int64
	lat              []time.Duration
	every, skip      int // keep 1 sample in every
	firstErr         error
}

func (s *workerStats) fail(err error) {
	s.errs++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

func (s *workerStats) sample(d time.Duration) {
	if s.every == 0 {
		s.every = 1
	}
	if s.skip++; s.skip < s.every {
		return
	}
	s.skip = 0
	if len(s.lat) >= maxSamples { // halve the kept set and the rate
		kept := s.lat[:0]
		for i := 0; i < len(s.lat); i += 2 {
			kept = append(kept, s.lat[i])
		}
		s.lat = kept
		s.every *= 2
	}
	s.lat = append(s.lat, d)
}

// percentile of ds (nearest rank); ds is sorted in place.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		slices.Sort(ds)
	}
	i := int(q*float64(len(ds))+0.5) - 1
	i = max(0, min(i, len(ds)-1))
	return ds[i]
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
