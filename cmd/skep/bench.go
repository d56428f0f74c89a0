package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skep-dev/skep/tools/bench"
)

func init() {
	register("bench", "benchmarks: `bench datapath` measures skep's service data path against direct and kube-proxy's iptables", runBench)
}

func runBench(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: skep bench datapath [flags] (see skep bench datapath -h)")
	}
	switch args[0] {
	case "datapath":
		return benchDatapath(args[1:])
	case "client":
		// Internal: a client child of the harness (reads a job on stdin).
		os.Exit(bench.ChildMain())
	}
	return fmt.Errorf("unknown bench %q (have: datapath)", args[0])
}

func benchDatapath(args []string) error {
	fs := flag.NewFlagSet("bench datapath", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "CI smoke run: 1 and 1,000 services, 1 s per measurement")
	services := fs.String("services", "", "comma-separated service counts (default 1,1000,10000; quick: 1,1000)")
	connDur := fs.Duration("conn-duration", 0, "duration of each new-connection measurement (default 2s; quick 1s)")
	dur := fs.Duration("duration", 0, "duration of each keepalive, stream and UDP measurement (default 1s; quick 0.5s)")
	workers := fs.Int("workers", 4, "parallel clients")
	rounds := fs.Int("rounds", 1, "repeat every measurement and report the median")
	nftMax := fs.Int("nft-max", 0, "skip iptables-nft above this many services (0: no limit; programming 10,000 services takes minutes)")
	skipNFT10k := fs.Bool("skip-nft-10k", false, "shorthand for --nft-max 9999")
	modes := fs.String("modes", "", "comma-separated modes (skep,iptables-nft,iptables-legacy); direct is always measured")
	out := fs.String("out", "", "write the report as JSON to this file")
	cleanup := fs.Bool("cleanup", false, "remove namespaces, cgroups and pins left by killed runs, then exit")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cleanup {
		removed, err := bench.CleanupStale()
		for _, r := range removed {
			fmt.Println("removed", r)
		}
		return err
	}

	cfg := bench.FullConfig()
	if *quick {
		cfg = bench.QuickConfig()
	}
	if *services != "" {
		cfg.Services = nil
		for _, s := range strings.Split(*services, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return fmt.Errorf("bad --services entry %q", s)
			}
			cfg.Services = append(cfg.Services, n)
		}
	}
	if *connDur > 0 {
		cfg.ConnDuration = *connDur
	}
	if *dur > 0 {
		cfg.Duration = *dur
	}
	cfg.Workers, cfg.Rounds, cfg.NFTMaxServices = *workers, *rounds, *nftMax
	if *skipNFT10k {
		cfg.NFTMaxServices = 9999
	}
	if *modes != "" {
		cfg.Modes = strings.Split(*modes, ",")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.ChildArgv = []string{exe, "bench", "client"}
	cfg.Skep = bench.DefaultSkep
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Ctrl-C cancels the run; Run still removes everything it made.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, runErr := bench.Run(ctx, cfg)
	if rep != nil {
		rep.WriteTable(os.Stdout)
		fmt.Printf("run took %v\n", time.Since(start).Round(time.Second))
		if *out != "" {
			b, err := json.MarshalIndent(rep, "", "  ")
			if err == nil {
				err = os.WriteFile(*out, append(b, '\n'), 0o644)
			}
			if err != nil {
				runErr = errors.Join(runErr, fmt.Errorf("write %s: %w", *out, err))
			}
		}
	}
	return runErr
}
