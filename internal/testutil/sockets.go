package testutil

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The clients that children run against a service: raw sockets, so a test
// sees each connect's errno and nothing retries behind its back.

// MonoNow is CLOCK_MONOTONIC in nanoseconds, the clock on which a child's
// attempts and its parent's events are compared.
func MonoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Attempt is one connect of a client loop, timed on MonoNow: the reply
// (the backend's id) or what went wrong.
type Attempt struct {
	Start, End int64
	Reply, Err string
}

// TCPOnce connects to sa, reads the server's reply and closes. An
// interrupted call is carried through (the Go runtime's preemption signals
// interrupt blocking syscalls; an interrupted connect goes on in the
// kernel), so an error is the network's, never the runtime's.
func TCPOnce(sa unix.Sockaddr) (reply, errText string) {
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	s, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", "socket: " + ErrName(err)
	}
	defer unix.Close(s)
	SetRecvTimeout(s)
	if err := unix.Connect(s, sa); err == unix.EINTR {
		if err := awaitConnect(s); err != nil {
			return "", "connect: " + ErrName(err)
		}
	} else if err != nil {
		return "", "connect: " + ErrName(err)
	}
	buf := make([]byte, 64)
	for {
		n, err := unix.Read(s, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return "", "read: " + ErrName(err)
		}
		return string(buf[:n]), ""
	}
}

// awaitConnect waits for the outcome of a connect that was interrupted.
func awaitConnect(s int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(s), Events: unix.POLLOUT}}
		_, err := unix.Poll(fds, 2000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// UDPExchange sends "ping" on the connected UDP socket s and returns the
// reply, or what went wrong.
func UDPExchange(s int) string {
	if _, err := unix.Write(s, []byte("ping")); err != nil {
		return "write: " + ErrName(err)
	}
	buf := make([]byte, 64)
	for {
		n, err := unix.Read(s, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "read: " + ErrName(err)
		}
		return string(buf[:n])
	}
}

// SetRecvTimeout bounds each blocking read on socket s to 2 s.
func SetRecvTimeout(s int) {
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// ErrName is err as tests compare it: an errno's name (ECONNREFUSED), "ok"
// for nil, else the message.
func ErrName(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(unix.Errno); ok {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// SockaddrString is an IPv4 or IPv6 socket address as address:port.
func SockaddrString(sa unix.Sockaddr) string {
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

// Sockaddr is the socket address of ap, as an IPv6 one (a v4-mapped
// address for IPv4) when v6 is set.
func Sockaddr(ap netip.AddrPort, v6 bool) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

// Change is one change a churn test made to a service's backends, timed on
// MonoNow: begun at Start, seen in the data path at Landed (0: never seen),
// leaving Ready the ready backends. It is in force from Landed until the
// next change's Start.
type Change struct {
	Start, Landed int64
	Ready         []string
}

// EachInForce calls fn with each attempt that succeeded and was made
// entirely while a change was in force, and that change's index.
func EachInForce(log []Attempt, changes []Change, fn func(i int, a Attempt)) {
	for _, a := range log {
		if a.Err != "" {
			continue
		}
		for i, c := range changes {
			next := int64(math.MaxInt64)
			if i+1 < len(changes) {
				next = changes[i+1].Start
			}
			if c.Landed != 0 && a.Start >= c.Landed && a.End <= next {
				fn(i, a)
			}
		}
	}
}
