package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Ports the backends listen on (the services' targetPorts).
const (
	EchoPort = 8080 // TCP and UDP echo: every read is written back
	SinkPort = 8081 // TCP sink: reads and discards, for the stream test
)

// BackendCounts is what one backend has served.
type BackendCounts struct {
	Conns    int64 `json:"conns"`     // TCP connections accepted (echo and sink)
	Requests int64 `json:"requests"`  // TCP echo reads answered
	UDP      int64 `json:"udp"`       // UDP datagrams answered
	SinkB    int64 `json:"sinkBytes"` // bytes swallowed by the sink
}

func (c BackendCounts) sub(o BackendCounts) BackendCounts {
	return BackendCounts{c.Conns - o.Conns, c.Requests - o.Requests, c.UDP - o.UDP, c.SinkB - o.SinkB}
}

// Backend is a tiny echo server whose sockets live in a pod netns. It runs
// as goroutines of the harness: the listening sockets are created on a thread
// inside the pod netns, and everything accepted from them stays there.
type Backend struct {
	IP                          string
	conns, requests, udp, sinkB atomic.Int64

	echo, sink net.Listener
	pc         net.PacketConn
	wg         sync.WaitGroup
	mu         sync.Mutex
	open       map[net.Conn]struct{}
	closed     bool
}

// StartBackend listens on EchoPort (TCP, UDP) and SinkPort (TCP) in n.
func StartBackend(n ns.NetNS, ip string) (*Backend, error) {
	b := &Backend{IP: ip, open: map[net.Conn]struct{}{}}
	err := n.Do(func(ns.NetNS) error {
		var err error
		if b.echo, err = net.Listen("tcp4", fmt.Sprintf(":%d", EchoPort)); err != nil {
			return fmt.Errorf("listen echo: %w", err)
		}
		if b.sink, err = net.Listen("tcp4", fmt.Sprintf(":%d", SinkPort)); err != nil {
			return fmt.Errorf("listen sink: %w", err)
		}
		if b.pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", EchoPort)); err != nil {
			return fmt.Errorf("listen udp: %w", err)
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	b.wg.Add(4)
	go b.accept(b.echo, b.serveEcho)
	go b.accept(b.sink, b.serveSink)
	// Two readers so one slow reply never stalls the socket.
	go b.serveUDP()
	go b.serveUDP()
	return b, nil
}

// Counts returns a snapshot of the counters.
func (b *Backend) Counts() BackendCounts {
	return BackendCounts{b.conns.Load(), b.requests.Load(), b.udp.Load(), b.sinkB.Load()}
}

func (b *Backend) accept(l net.Listener, serve func(net.Conn)) {
	defer b.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNABORTED from a client's RST: keep serving
		}
		b.conns.Add(1)
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer b.untrack(c)
			serve(c)
		}()
	}
}

func (b *Backend) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.open[c] = struct{}{}
	return true
}

func (b *Backend) untrack(c net.Conn) {
	c.Close()
	b.mu.Lock()
	delete(b.open, c)
	b.mu.Unlock()
}

func (b *Backend) serveEcho(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			b.requests.Add(1)
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *Backend) serveSink(c net.Conn) {
	buf := make([]byte, 256<<10)
	for {
		n, err := c.Read(buf)
		b.sinkB.Add(int64(n))
		if err != nil {
			return
		}
	}
}

func (b *Backend) serveUDP() {
	defer b.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := b.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		b.udp.Add(1)
		_, _ = b.pc.WriteTo(buf[:n], from)
	}
}

// Close stops the listeners and every open connection, and waits for all
// goroutines, so no socket keeps the pod netns alive after the harness ends.
func (b *Backend) Close() {
	for _, c := range []io.Closer{b.echo, b.sink, b.pc} {
		if c != nil {
			c.Close()
		}
	}
	b.mu.Lock()
	b.closed = true
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
