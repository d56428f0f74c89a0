package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/skep-dev/skep/internal/testutil"
)

func TestHealthCheckReportsUnhealthyProxy(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	h := newHealthServer(func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} },
		healthy.Load, testutil.QuietLogger())
	t.Cleanup(h.closeAll)
	port := freePort(t)
	if err := h.sync("ns1/lb", uint16(port), 3); err != nil {
		t.Fatal(err)
	}
	get := func() (int, healthBody, string) {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b healthBody
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b, resp.Header.Get("X-Load-Balancing-Endpoint-Weight")
	}
	if code, b, w := get(); code != http.StatusOK || b.LocalEndpoints != 3 || !b.ServiceProxyHealthy || w != "3" ||
		b.Service.Namespace != "ns1" || b.Service.Name != "lb" {
		t.Fatalf("healthy: %d %+v weight %q", code, b, w)
	}
	// A proxy that cannot program its data path sends load balancers away
	// even from a node with local endpoints.
	healthy.Store(false)
	if code, b, _ := get(); code != http.StatusServiceUnavailable || b.ServiceProxyHealthy || b.LocalEndpoints != 3 {
		t.Fatalf("unhealthy proxy: %d %+v", code, b)
	}
	// Port 0 closes the health check.
	if err := h.sync("ns1/lb", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Fatal("health check port still answering")
	}
}
