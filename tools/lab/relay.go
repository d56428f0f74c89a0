package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Relay offers the API server, which listens on the root netns's loopback,
// inside the lab: it listens on listen in every namespace of netnsPaths
// (the lab passes the switch netns and the switch's address) and copies
// each connection to target, dialled from the root netns. TLS passes
// through untouched. It runs until ctx ends.
func Relay(ctx context.Context, listen, target string, netnsPaths []string, log *slog.Logger) error {
	var lns []net.Listener
	for _, p := range netnsPaths {
		var ln net.Listener
		err := inNetns(p, func() (err error) {
			ln, err = net.Listen("tcp", listen)
			return err
		})
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("relay: listen in %s: %w", p, err)
		}
		lns = append(lns, ln)
	}
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						log.Error("relay accept", "netns", netnsPaths[i], "err", err)
					}
					return
				}
				go pipe(c, target, log)
			}
		}()
	}
	log.Info("relay serving", "listen", listen, "target", target, "netns", netnsPaths)
	<-ctx.Done()
	for _, l := range lns {
		l.Close()
	}
	wg.Wait()
	return nil
}

func pipe(c net.Conn, target string, log *slog.Logger) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		log.Warn("relay dial", "target", target, "err", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}
