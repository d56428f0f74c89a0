package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/skep-dev/skep/tools/lab"
)

func init() {
	register("lab", "a cluster on this machine in network namespaces (up|demo|down|status)", runLab)
}

const labUsage = `usage: skep lab up|demo|exec|down|status [flags]

  up      API server, underlay switch, node netns, one eBPF proxy per node
  demo    pods, a ClusterIP and a NodePort service, traffic through both
  exec    skep lab exec POD|NODE|switch -- COMMAND…: run a command there
          (in a pod: its netns and cgroup, so ClusterIPs work)
  down    remove every trace of the lab (--purge: its data too)
  status  say whether the lab is up

internal (the lab starts these itself): relay, serve, get`

func runLab(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, labUsage)
		return errors.New("missing verb")
	}
	verb := args[0]
	switch verb {
	case "relay":
		return runLabRelay(args[1:])
	case "serve":
		return runLabServe(args[1:])
	case "get":
		return runLabGet(args[1:])
	}
	fs := flag.NewFlagSet("lab "+verb, flag.ContinueOnError)
	dir := fs.String("dir", lab.DefaultDir, "lab state directory")
	listen := fs.String("listen", lab.DefaultListen, "up: API server address (root netns; offered at the same address in every node netns)")
	prefix := fs.String("prefix", lab.DefaultPrefix, "up: name prefix of netns, nodes, cgroup and bpffs pins")
	nodes := fs.Int("nodes", lab.DefaultNodes, "up: worker nodes")
	underlay := fs.String("underlay", lab.DefaultUnderlay, "up: node network (.1 switch, .11.. nodes)")
	podCIDR := fs.String("pod-cidr", lab.DefaultPodCIDR, "up: pod network, a /24 per node")
	purge := fs.Bool("purge", false, "down: also remove the lab's data")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find skep binary: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// up takes its settings from the flags; the other verbs from what up
	// saved in the lab dir (flags only when there is none).
	cfg, err := lab.Load(*dir, self, log)
	if verb == "up" || errors.Is(err, lab.ErrNoLab) {
		cfg = lab.Config{Dir: *dir, Listen: *listen, Binary: self, Prefix: *prefix, Nodes: *nodes, Logger: log}
		if cfg.Underlay, err = netip.ParsePrefix(*underlay); err != nil {
			return fmt.Errorf("--underlay: %w", err)
		}
		if cfg.PodCIDR, err = netip.ParsePrefix(*podCIDR); err != nil {
			return fmt.Errorf("--pod-cidr: %w", err)
		}
	} else if err != nil {
		return err
	}
	cfg = cfg.Defaults()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch verb {
	case "up":
		if err := lab.Up(ctx, cfg); err != nil {
			return err
		}
		fmt.Printf("\nskep lab is up: API server on https://%s, nodes:\n", cfg.Listen)
		for _, n := range cfg.AllNodes() {
			fmt.Printf("  %s  %s  pods %s  (ip netns exec %s …; skep bpf services --node %s)\n", n.Name, n.IP, n.PodCIDR, n.Name, n.Name)
		}
		fmt.Printf("\n  export KUBECONFIG=%s\n  kubectl get nodes -o wide\n  skep lab demo\n\nLogs in %s. Stop it with: skep lab down   (add --purge to delete its data)\n",
			cfg.Kubeconfig(), cfg.LogDir())
	case "demo":
		if _, err := lab.Demo(ctx, cfg, os.Stdout); err != nil {
			return err
		}
		if kubectl, err := exec.LookPath("kubectl"); err == nil {
			fmt.Printf("\n== kubectl get nodes,pods,svc -o wide\n")
			cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", cfg.Kubeconfig(), "get", "nodes,pods,svc", "-o", "wide")
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			_ = cmd.Run()
		}
	case "exec":
		rest := fs.Args()
		if len(rest) > 1 && rest[1] == "--" {
			rest = append(rest[:1], rest[2:]...)
		}
		if len(rest) < 2 {
			return errors.New("usage: skep lab exec POD|NODE|switch -- COMMAND [ARGS…]")
		}
		cmd, cleanup, err := cfg.Command(ctx, rest[0], rest[1:])
		if err != nil {
			return err
		}
		defer cleanup()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				cleanup()
				os.Exit(ee.ExitCode())
			}
			return err
		}
	case "down":
		if err := lab.Down(cfg, *purge); err != nil {
			return err
		}
		fmt.Println("skep lab is down")
	case "status":
		if pid, ok := lab.Status(cfg); ok {
			fmt.Printf("lab %q is up: server pid %d, KUBECONFIG=%s\n", cfg.Prefix, pid, cfg.Kubeconfig())
			for _, n := range cfg.AllNodes() {
				fmt.Printf("  node %s  %s  pods %s\n", n.Name, n.IP, n.PodCIDR)
			}
		} else if t := cfg.Traces(); len(t) > 0 {
			fmt.Printf("lab %q is down, but traces remain (skep lab down removes them): %v\n", cfg.Prefix, t)
		} else {
			fmt.Printf("lab %q is down\n", cfg.Prefix)
		}
	default:
		fmt.Fprintln(os.Stderr, labUsage)
		return fmt.Errorf("unknown lab verb %q", verb)
	}
	return nil
}

// runLabRelay is the lab's API relay process (see lab.Relay).
func runLabRelay(args []string) error {
	fs := flag.NewFlagSet("lab relay", flag.ContinueOnError)
	listen := fs.String("listen", lab.DefaultListen, "address to listen on inside each netns")
	target := fs.String("target", lab.DefaultListen, "API server address in this process's netns")
	var netns stringList
	fs.Var(&netns, "netns", "network namespace path to listen in (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return lab.Relay(ctx, *listen, *target, netns, slog.New(slog.NewTextHandler(os.Stderr, nil)))
}

// runLabServe is a lab pod's program (see lab.Serve).
func runLabServe(args []string) error {
	fs := flag.NewFlagSet("lab serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to serve HTTP on")
	pod := fs.String("pod", "", "pod name to answer with")
	node := fs.String("node", "", "node name to answer with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return lab.Serve(ctx, *listen, *pod, *node)
}

// runLabGet is the demo's client (see lab.Get).
func runLabGet(args []string) error {
	fs := flag.NewFlagSet("lab get", flag.ContinueOnError)
	count := fs.Int("count", 1, "requests, each on a new connection")
	timeout := fs.Duration("timeout", 2*time.Second, "bound of each request")
	cacert := fs.String("cacert", "", "CA file an https server must chain to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: skep lab get [--count N] [--timeout D] [--cacert FILE] URL")
	}
	var ca []byte
	if *cacert != "" {
		var err error
		if ca, err = os.ReadFile(*cacert); err != nil {
			return err
		}
	}
	lab.Get(os.Stdout, fs.Arg(0), *count, *timeout, ca)
	return nil
}
