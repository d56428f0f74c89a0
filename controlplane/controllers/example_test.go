package controllers_test

import (
	"context"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/skep-dev/skep/controlplane/apiserver"
	"github.com/skep-dev/skep/controlplane/controllers"
)

// ExampleRun is how `skep server` runs the controller-manager role in
// process: an API client of its own server through the admin config.
func ExampleRun() {
	log := slog.Default()
	srv, err := apiserver.New(apiserver.Config{DataDir: "/var/lib/skep"})
	if err != nil {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := controllers.Run(ctx, srv.RESTConfig()); err != nil {
			log.Error("controller-manager failed; stopping the server", "err", err)
			stop()
		}
	}()
	_ = srv.Run(ctx)
}
