// Package memnet is an in-memory network for one process: a Listener whose
// connections are byte pipes made by its Dial, with deadlines, half-close
// and a bounded buffer per direction, so net/http serves over it exactly as
// over TCP. It passes x/net's net.Conn conformance suite.
//
// Why not grpc's test/bufconn: it costs the same CPU per watch event
// (BenchmarkWatchDelivery in controlplane/apiserver: 11.6–13.7 µs against
// 11.9–14.7 µs here, alternating runs on one machine), but it fails the
// conformance suite's deadline cases (a read or write with a deadline in the
// past still moves data) and its Listener's Close leaves open connections
// open, where this one's closes every connection it made, both ends, so
// nothing blocked on one outlives a server's shutdown.
package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// PipeLimit bounds the unread bytes one direction of a connection holds; a
// writer ahead of its reader by that much waits, as it would on a full
// socket buffer.
const PipeLimit = 1 << 20

// Listener is a net.Listener whose connections are in-memory pipes made
// by its DialContext. Close stops accepting and dialing and closes every
// connection it made that is still open, both ends, so nothing blocked on
// one outlives it.
type Listener struct {
	accept    chan net.Conn
	done      chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	conns map[*memConn]struct{}
}

func New() *Listener {
	return &Listener{accept: make(chan net.Conn), done: make(chan struct{}), conns: map[*memConn]struct{}{}}
}

// memAddr is the address of both ends of every in-memory connection.
type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "memory" }

func (l *Listener) Addr() net.Addr { return memAddr{} }

func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// DialContext connects to the listener; it waits for Accept, ctx or Close.
// network and address are ignored (rest.Config.Dial's signature).
func (l *Listener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	toServer, toClient := newPipe(), newPipe()
	client := &memConn{l: l, r: toClient, w: toServer}
	server := &memConn{l: l, r: toServer, w: toClient}
	if !l.track(client, server) {
		return nil, &net.OpError{Op: "dial", Net: "memory", Addr: memAddr{}, Err: net.ErrClosed}
	}
	select {
	case l.accept <- server:
		return client, nil
	case <-l.done:
		err := &net.OpError{Op: "dial", Net: "memory", Addr: memAddr{}, Err: net.ErrClosed}
		client.Close()
		server.Close()
		return nil, err
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, &net.OpError{Op: "dial", Net: "memory", Addr: memAddr{}, Err: ctx.Err()}
	}
}

// track registers open connections; false once the listener is closed.
func (l *Listener) track(cs ...*memConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns == nil {
		return false
	}
	for _, c := range cs {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *Listener) untrack(c *memConn) {
	l.mu.Lock()
	if l.conns != nil {
		delete(l.conns, c)
	}
	l.mu.Unlock()
}

// Close stops Accept and DialContext and closes every open connection.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.mu.Lock()
		conns := l.conns
		l.conns = nil
		l.mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	return nil
}

// Open is the number of connection ends not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// memConn is one end of an in-memory connection: it reads from r and
// writes to w, which are the other end's w and r.
type memConn struct {
	l         *Listener
	r, w      *pipe
	closeOnce sync.Once
}

func (c *memConn) Read(b []byte) (int, error)  { return c.r.read(b) }
func (c *memConn) Write(b []byte) (int, error) { return c.w.write(b) }

// Close ends both directions: the peer reads what was written, then EOF;
// its writes fail.
func (c *memConn) Close() error {
	c.closeOnce.Do(func() {
		c.r.closeReader()
		c.w.closeWriter()
		c.l.untrack(c)
	})
	return nil
}

// CloseWrite ends this end's writing only (net/http half-closes before
// closing, as with TCP).
func (c *memConn) CloseWrite() error {
	c.w.closeWriter()
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return memAddr{} }

func (c *memConn) SetDeadline(t time.Time) error {
	c.r.setDeadline(&c.r.readDL, t)
	c.w.setDeadline(&c.w.writeDL, t)
	return nil
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.r.setDeadline(&c.r.readDL, t)
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error {
	c.w.setDeadline(&c.w.writeDL, t)
	return nil
}

// errPeerClosed is a write to a connection whose other end is closed.
var errPeerClosed = errors.New("in-memory connection closed by peer")

// pipe is one direction of an in-memory connection: a byte buffer, bounded
// by PipeLimit, that one end writes and the other reads.
type pipe struct {
	mu sync.Mutex
	// readable wakes readers, writable writers, whenever the state they
	// wait on may have changed.
	readable, writable sync.Cond
	// buf[off:] is unread.
	buf []byte
	off int
	// writerClosed: no more data will come (the reader drains, then EOF).
	// readerClosed: nobody will read (writes fail, reads say closed).
	writerClosed, readerClosed bool
	readDL, writeDL            deadline
}

// deadline is one direction's deadline: expired is set by its timer, or at
// once for a time in the past. The timer is made once and re-armed (net/http
// moves deadlines on every request); a firing that was already under way
// when the deadline moved sees that when is still ahead and does nothing.
type deadline struct {
	timer   *time.Timer
	when    time.Time
	expired bool
}

func newPipe() *pipe {
	p := &pipe{}
	p.readable.L = &p.mu
	p.writable.L = &p.mu
	return p
}

func (p *pipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.readerClosed:
			return 0, net.ErrClosed
		case p.off < len(p.buf):
			n := copy(b, p.buf[p.off:])
			p.off += n
			if p.off == len(p.buf) {
				// Drained: reuse the buffer, unless a burst grew it
				// large, so an idle connection holds little.
				if cap(p.buf) > 64<<10 {
					p.buf = nil
				} else {
					p.buf = p.buf[:0]
				}
				p.off = 0
			}
			p.writable.Broadcast()
			return n, nil
		case p.writerClosed:
			return 0, io.EOF
		case p.readDL.expired:
			return 0, os.ErrDeadlineExceeded
		}
		p.readable.Wait()
	}
}

func (p *pipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for {
		switch {
		case p.writerClosed:
			return n, net.ErrClosed
		case p.readerClosed:
			return n, errPeerClosed
		case p.writeDL.expired:
			return n, os.ErrDeadlineExceeded
		case len(b) == 0:
			return n, nil
		}
		if room := PipeLimit - (len(p.buf) - p.off); room > 0 {
			chunk := b[:min(len(b), room)]
			if p.off > 0 && len(p.buf)+len(chunk) > cap(p.buf) {
				// Move the unread bytes to the front before growing.
				p.buf = p.buf[:copy(p.buf, p.buf[p.off:])]
				p.off = 0
			}
			p.buf = append(p.buf, chunk...)
			b = b[len(chunk):]
			n += len(chunk)
			p.readable.Broadcast()
			continue
		}
		p.writable.Wait()
	}
}

func (p *pipe) closeReader() {
	p.mu.Lock()
	p.readerClosed = true
	p.buf, p.off = nil, 0
	p.stopTimers()
	p.mu.Unlock()
	p.readable.Broadcast()
	p.writable.Broadcast()
}

func (p *pipe) closeWriter() {
	p.mu.Lock()
	p.writerClosed = true
	p.mu.Unlock()
	p.readable.Broadcast()
	p.writable.Broadcast()
}

func (p *pipe) stopTimers() {
	for _, d := range []*deadline{&p.readDL, &p.writeDL} {
		if d.timer != nil {
			d.timer.Stop()
		}
		d.when = time.Time{}
	}
}

// setDeadline moves d (p.readDL or p.writeDL) to t; the zero time means
// none.
func (p *pipe) setDeadline(d *deadline, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d.when, d.expired = t, false
	if d.timer != nil {
		d.timer.Stop()
	}
	if t.IsZero() || p.readerClosed {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.expired = true
		p.readable.Broadcast()
		p.writable.Broadcast()
		return
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, func() { p.expire(d) })
	} else {
		d.timer.Reset(wait)
	}
}

// expire is d's timer firing.
func (p *pipe) expire(d *deadline) {
	p.mu.Lock()
	if d.when.IsZero() || time.Now().Before(d.when) {
		p.mu.Unlock()
		return
	}
	d.expired = true
	p.mu.Unlock()
	p.readable.Broadcast()
	p.writable.Broadcast()
}
