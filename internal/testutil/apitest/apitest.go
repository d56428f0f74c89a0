// Package apitest runs skep's API server inside a test's process, for the
// tests and benchmarks of its clients (controllers, proxy, agents). It is
// apart from testutil so that only the tests that want a server link one.
package apitest

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skep-dev/skep/controlplane/apiserver"
	"github.com/skep-dev/skep/internal/testutil"
)

// Start runs an API server on a free loopback port, with its bbolt store in
// a temporary directory and a quiet logger, until the test ends, and
// returns it with an admin client config once it serves. The test fails if
// the server's Run returns an error or it does not stop within 10 s.
func Start(t testing.TB) (*apiserver.Server, *rest.Config) {
	t.Helper()
	srv, err := apiserver.New(apiserver.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testutil.QuietLogger()})
	if err != nil {
		t.Fatalf("new api server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	exited := make(chan struct{})
	go func() { runErr = srv.Run(ctx); close(exited) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
			if runErr != nil {
				t.Errorf("api server run: %v", runErr)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("api server did not stop")
		}
	})
	cfg := srv.RESTConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "api server ready", func() error {
		select {
		case <-exited:
			t.Fatalf("api server exited: %v", runErr)
		default:
		}
		return cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	})
	return srv, cfg
}
