// Package controllers is the controller-manager role: it runs every
// controller of the control plane as an API client (client-go informers
// and workqueues, one package per controller), in the same process as the
// API server or on its own.
package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/skep-dev/skep/controlplane/controllers/certificates"
	"github.com/skep-dev/skep/controlplane/controllers/clusterroleaggregation"
	"github.com/skep-dev/skep/controlplane/controllers/endpointslice"
	"github.com/skep-dev/skep/controlplane/controllers/garbagecollector"
	"github.com/skep-dev/skep/controlplane/controllers/namespace"
	"github.com/skep-dev/skep/controlplane/controllers/serviceaccount"
	"github.com/skep-dev/skep/internal/pki"
)

// Options tune Run; the zero value is what `skep server` uses.
type Options struct {
	Logger *slog.Logger
	// RootCA is the cluster CA (PEM) published in every namespace as
	// kube-root-ca.crt.
	RootCA []byte
	// CA signs approved client certificate requests (nodes joining);
	// nil: requests are approved but not signed.
	CA            *pki.CA
	Namespace     namespace.Options
	GC            garbagecollector.Options
	EndpointSlice endpointslice.Options
	Workloads     WorkloadOptions
}

// Run starts every controller against the API server cfg points at and
// blocks until ctx ends (nil) or a controller fails.
func Run(ctx context.Context, cfg *rest.Config) error {
	return RunWithOptions(ctx, cfg, Options{})
}

// RunWithOptions is Run with tuning (tests shorten the namespace
// controller's pod force delay, for example).
func RunWithOptions(ctx context.Context, cfg *rest.Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		// client-go's default (5 qps) would make namespace and cascading
		// deletion crawl; the server is local.
		cfg.QPS, cfg.Burst = 200, 400
	}
	cfg.UserAgent = "skep-controller-manager"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controller-manager clientset: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controller-manager metadata client: %w", err)
	}

	// Discovery needs a serving API server: retry until it answers.
	if opts.GC.Logger == nil {
		opts.GC.Logger = log
	}
	if opts.Namespace.Logger == nil {
		opts.Namespace.Logger = log
	}
	if opts.EndpointSlice.Logger == nil {
		opts.EndpointSlice.Logger = log
	}
	var gc *garbagecollector.Controller
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		if gc, err = garbagecollector.New(meta, kube.Discovery(), opts.GC); err != nil {
			log.Info("controller-manager waiting for the API server", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil // ctx ended
	}

	factory := informers.NewSharedInformerFactory(kube, 0)
	ns, err := namespace.New(kube, meta, factory.Core().V1().Namespaces(), opts.Namespace)
	if err != nil {
		return err
	}
	eps, err := endpointslice.New(kube, factory.Core().V1().Services(), factory.Core().V1().Pods(),
		factory.Core().V1().Nodes(), factory.Discovery().V1().EndpointSlices(), factory.Core().V1().Endpoints(),
		opts.EndpointSlice)
	if err != nil {
		return err
	}
	agg, err := clusterroleaggregation.New(kube, factory.Rbac().V1().ClusterRoles(), log)
	if err != nil {
		return err
	}
	sa, err := serviceaccount.New(kube, factory.Core().V1().Namespaces(), factory.Core().V1().ServiceAccounts(),
		factory.Core().V1().ConfigMaps(), serviceaccount.Options{RootCA: opts.RootCA, Logger: log})
	if err != nil {
		return err
	}
	csr, err := certificates.New(kube, factory.Certificates().V1().CertificateSigningRequests(), certificates.Options{CA: opts.CA, Logger: log})
	if err != nil {
		return err
	}
	// Future controllers: build them here from factory (and meta), add
	// them to runners.
	runners := map[string]func(context.Context) error{
		"namespace":              ns.Run,
		"garbagecollector":       gc.Run,
		"endpointslice":          eps.Run,
		"clusterroleaggregation": agg.Run,
		"serviceaccount":         sa.Run,
		"certificates":           csr.Run,
	}
	if err := addWorkloadControllers(runners, kube, factory, log, opts.Workloads); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	errc := make(chan error, len(runners))
	for name, run := range runners {
		go func() {
			if err := run(ctx); err != nil {
				errc <- fmt.Errorf("%s controller: %w", name, err)
				return
			}
			errc <- nil
		}()
	}
	log.Info("controller-manager started", "controllers", len(runners))
	var first error
	for range runners {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}
