package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Serve is a lab pod's program: an HTTP server that names its pod, node
// and address, and the client address it saw (which shows SNAT on NodePort
// paths). It runs until ctx ends.
func Serve(ctx context.Context, listen, pod, node string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s on %s (%v) answered %s\n", pod, node, local, r.RemoteAddr)
	})
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Get fetches url count times, each over a new connection (the socket-LB
// picks a backend per connect), and writes one line per request: the
// body's first line, or "error: …". It stops after count requests, each
// bounded by timeout.
// caPEM, when set, is the CA an https URL's server must chain to.
func Get(w io.Writer, url string, count int, timeout time.Duration, caPEM []byte) {
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	client := &http.Client{Timeout: timeout, Transport: tr}
	for range count {
		resp, err := client.Get(url)
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		line, _, _ := strings.Cut(string(b), "\n")
		switch {
		case err != nil:
			fmt.Fprintf(w, "error: read body: %v\n", err)
		case resp.StatusCode != http.StatusOK:
			fmt.Fprintf(w, "error: status %d\n", resp.StatusCode)
		default:
			fmt.Fprintln(w, line)
		}
	}
}
