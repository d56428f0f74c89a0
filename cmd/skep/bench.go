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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: skep bench datapath [flags]

Measures, side by side in namespaces it creates and removes: direct pod IP,
skep ClusterIP (socket-LB), kube-proxy-shaped iptables rules (nft and legacy
backends) and IPVS where the kernel has it, at 1, 1,000 and 10,000 services.
Prints a table with ratios to direct; --out writes JSON. Needs root.

flags:`)
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "CI smoke run: 1 and 1,000 services, 1 s per measurement")
	services := fs.String("services", "", "comma-separated service counts (default 1,1000,10000; quick: 1,1000)")
	connDur := fs.Duration("conn-duration", 0, "duration of each new-connection measurement (default 3s; quick 1s)")
	dur := fs.Duration("duration", 0, "duration of each keepalive, stream and UDP measurement (default 1.5s; quick 0.5s)")
	workers := fs.Int("workers", 4, "parallel clients")
	rounds := fs.Int("rounds", 0, "split each measurement into this many slices interleaved with the other modes (default 6; quick 2)")
	nftMax := fs.Int("nft-max", 0, "skip iptables-nft above this many services (0: no limit; programming 10,000 services takes minutes)")
	skipNFT10k := fs.Bool("skip-nft-10k", false, "shorthand for --nft-max 9999")
	progTimeout := fs.Duration("program-timeout", 0, "time box of one iptables-restore (default 8m; quick 2m): a restore still running is killed and reported")
	modes := fs.String("modes", "", "comma-separated modes (skep,iptables-nft,iptables-legacy); direct is always measured")
	out := fs.String("out", "", "write the report as JSON to this file")
	cleanup := fs.Bool("cleanup", false, "remove the cgroups and bpffs pins left by killed runs (namespaces die with the process), then exit")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
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
	cfg.Workers, cfg.NFTMaxServices = *workers, *nftMax
	if *progTimeout > 0 {
		cfg.ProgramTimeout = *progTimeout
	}
	if *rounds > 0 {
		cfg.Rounds = *rounds
	}
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
