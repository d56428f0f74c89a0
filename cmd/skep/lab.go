package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/skep-dev/skep/tools/lab"
)

func init() { register("lab", "bring the lab cluster up or down (up|down|status)", runLab) }

func runLab(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: skep lab up|down|status [flags]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("lab "+verb, flag.ContinueOnError)
	dir := fs.String("dir", "/var/lib/skep-lab", "lab state directory")
	listen := fs.String("listen", "127.0.0.1:6443", "API server address")
	purge := fs.Bool("purge", false, "down: also remove the lab's data")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find skep binary: %w", err)
	}
	cfg := lab.Config{Dir: *dir, Listen: *listen, Binary: self}
	switch verb {
	case "up":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := lab.Up(ctx, cfg); err != nil {
			return err
		}
		fmt.Printf("skep lab is up: API server on https://%s\n\n  export KUBECONFIG=%s\n  kubectl get namespaces\n\nStop it with: skep lab down   (add --purge to delete its data)\n", *listen, cfg.Kubeconfig())
	case "down":
		if err := lab.Down(cfg, *purge); err != nil {
			return err
		}
		fmt.Println("skep lab is down")
	case "status":
		if pid, ok := lab.Status(cfg); ok {
			fmt.Printf("up: server pid %d, KUBECONFIG=%s\n", pid, cfg.Kubeconfig())
		} else {
			fmt.Println("down")
		}
	default:
		return fmt.Errorf("unknown lab verb %q (up|down|status)", verb)
	}
	return nil
}
