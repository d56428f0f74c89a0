package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// memPipe is a connected pair of in-memory connections from a fresh
// listener; stop closes the listener and with it both ends.
func memPipe() (c1, c2 net.Conn, stop func(), err error) {
	l := New()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ch <- accepted{c, err}
	}()
	c1, err = l.DialContext(context.Background(), "", "")
	if err != nil {
		l.Close()
		return nil, nil, nil, err
	}
	a := <-ch
	if a.err != nil {
		l.Close()
		return nil, nil, nil, a.err
	}
	return c1, a.c, func() { l.Close() }, nil
}

// TestMemConnConformance runs x/net's net.Conn conformance suite (basic and
// concurrent I/O, read and write deadlines past, present and future, close
// unblocking reads and writes) on the in-memory connection.
func TestMemConnConformance(t *testing.T) {
	nettest.TestConn(t, memPipe)
}

// TestMemConnLargeWrite: a write larger than the pipe's bound arrives whole
// and in order, the writer waiting for the reader.
func TestMemConnLargeWrite(t *testing.T) {
	c1, c2, stop, err := memPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	msg := make([]byte, 3*PipeLimit+123)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c1.Write(msg)
		if err == nil {
			err = c1.Close()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c2)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatalf("read %d bytes, differ from the %d written", len(got), len(msg))
	}
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Fatal("write to a connection whose peer closed succeeded")
	}
}

// TestMemListenerCloseEndsEverything: closing the listener unblocks Accept,
// refuses dials and closes every open connection, ending reads blocked on
// either end.
func TestMemListenerCloseEndsEverything(t *testing.T) {
	l := New()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		acc <- c
	}()
	client, err := l.DialContext(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	server := <-acc
	if n := l.Open(); n != 2 {
		t.Fatalf("%d open ends, want 2", n)
	}
	// A dial nobody accepts waits, and gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.DialContext(ctx, "", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unaccepted dial: %v", err)
	}
	var wg sync.WaitGroup
	for _, c := range []net.Conn{client, server} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("read on a closed listener's connection succeeded")
			}
		}()
	}
	accErr := make(chan error, 1)
	go func() { _, err := l.Accept(); accErr <- err }()
	time.Sleep(20 * time.Millisecond)
	l.Close()
	wg.Wait()
	if err := <-accErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
	if _, err := l.DialContext(context.Background(), "", ""); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after close: %v", err)
	}
	if n := l.Open(); n != 0 {
		t.Fatalf("%d ends open after close", n)
	}
}
