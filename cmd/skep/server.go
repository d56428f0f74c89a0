package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/skep-dev/skep/controlplane/apiserver"
	"github.com/skep-dev/skep/controlplane/controllers"
)

func init() {
	register("server", "run the control plane API server", runServer)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, strings.Split(v, ",")...); return nil }

func runServer(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, args)
}

// serve runs the API server, and the controllers in the same process,
// until ctx ends.
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "/var/lib/skep", "directory for the store, certificates, token and admin kubeconfig")
	listen := fs.String("listen", "127.0.0.1:6443", "host:port to serve HTTPS on")
	advertise := fs.String("advertise-address", "", "address other machines reach this server at (added to the certificate)")
	runControllers := fs.Bool("controllers", true, "run the controllers (namespace, garbage collector, endpointslice, clusterrole aggregation, serviceaccount, certificates, ReplicaSet, Deployment, DaemonSet, Job, CronJob) in this process; false leaves them to another process")
	var sans stringList
	fs.Var(&sans, "tls-san", "extra certificate subject alternative name (repeatable)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	srv, err := apiserver.New(apiserver.Config{
		DataDir: abs, Listen: *listen, AdvertiseAddress: *advertise, TLSSANs: sans, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("admin kubeconfig written; point kubectl at it with: export KUBECONFIG=" + srv.KubeconfigPath())
	if !*runControllers {
		return srv.Run(ctx)
	}

	// The controllers are API clients over loopback; they wait for the
	// server to answer discovery. A controller failing stops the server
	// rather than leaving it running without (namespaces would hang in
	// Terminating).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctrlErr := make(chan error, 1)
	go func() {
		err := controllers.RunWithOptions(ctx, srv.LoopbackRESTConfig(), controllers.Options{Logger: log.With("component", "controllers"), RootCA: srv.CAPEM(), CA: srv.CA()})
		if err != nil {
			log.Error("controllers failed; stopping the server", "err", err)
			cancel()
		}
		ctrlErr <- err
	}()
	err = srv.Run(ctx)
	cancel()
	if cerr := <-ctrlErr; cerr != nil && err == nil {
		err = fmt.Errorf("controllers: %w", cerr)
	}
	return err
}
