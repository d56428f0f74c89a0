package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/cache"
)

// healthServer answers the health-check node ports of services with
// externalTrafficPolicy: Local, the way kube-proxy does, so a cloud load
// balancer sends traffic only to nodes that have a local endpoint: 200 when
// the node has one, 503 when it has none (or the proxy itself is unhealthy).
type healthServer struct {
	listenIPs func() []netip.Addr
	healthy   func() bool
	log       *slog.Logger

	mu    sync.Mutex
	byKey map[string]*healthPort
}

// healthPort is one service's health-check port and its listeners.
type healthPort struct {
	port      uint16
	namespace string
	name      string
	servers   []*http.Server
	// localReady is read by handlers without h.mu, which sync holds while
	// shutting servers down.
	localReady atomic.Int64
}

func newHealthServer(listenIPs func() []netip.Addr, healthy func() bool, log *slog.Logger) *healthServer {
	return &healthServer{listenIPs: listenIPs, healthy: healthy, log: log, byKey: map[string]*healthPort{}}
}

// sync makes service key answer on port (0: not at all) reporting localReady
// local endpoints.
func (h *healthServer) sync(key string, port uint16, localReady int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	hp := h.byKey[key]
	if hp != nil && hp.port != port {
		hp.close()
		delete(h.byKey, key)
		hp = nil
	}
	if port == 0 {
		return nil
	}
	if hp == nil {
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		hp = &healthPort{port: port, namespace: ns, name: name}
		if err := h.listen(hp); err != nil {
			return err
		}
		h.byKey[key] = hp
	}
	hp.localReady.Store(int64(localReady))
	return nil
}

// listen opens the port on every node IP (on all addresses when the node's
// IPs are not known), all or nothing.
func (h *healthServer) listen(hp *healthPort) error {
	addrs := []string{}
	for _, ip := range h.listenIPs() {
		addrs = append(addrs, netip.AddrPortFrom(ip, hp.port).String())
	}
	if len(addrs) == 0 {
		addrs = append(addrs, ":"+strconv.Itoa(int(hp.port)))
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			hp.close()
			return fmt.Errorf("health check node port %s: %w", a, err)
		}
		srv := &http.Server{Handler: h.handler(hp), ReadHeaderTimeout: 5 * time.Second}
		hp.servers = append(hp.servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Warn("health check server", "addr", a, "err", err)
			}
		}()
	}
	return nil
}

func (h *healthServer) handler(hp *healthPort) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := int(hp.localReady.Load())
		healthy := h.healthy()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(n))
		if n > 0 && healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		// The body kube-proxy serves, field for field.
		fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
			hp.namespace, hp.name, n, healthy)
	})
}

func (hp *healthPort) close() {
	for _, s := range hp.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
	hp.servers = nil
}

// closeAll stops every health-check port, at proxy shutdown.
func (h *healthServer) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, hp := range h.byKey {
		hp.close()
		delete(h.byKey, k)
	}
}
