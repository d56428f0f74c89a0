package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/proxy"
)

func init() {
	register("proxy", "run the eBPF service proxy of one node (kube-proxy's role)", runProxy)
}

func runProxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server (empty: in-cluster config)")
	hostname, _ := os.Hostname()
	nodeName := fs.String("node-name", hostname, "this node's name: endpoints with this nodeName are local")
	nodeIPs := fs.String("node-ip", "", "comma-separated node IPs NodePorts answer on (empty: the Node's InternalIPs)")
	podCIDR := fs.String("pod-cidr", "", "this node's pod CIDR: backends in it need no SNAT (empty: the Node's spec.podCIDR)")
	cgroup := fs.String("cgroup", "", "cgroup v2 directory the socket-LB attaches to (relative: under the cgroup2 mount); the node's pod cgroup parent")
	allowRoot := fs.Bool("allow-root-cgroup", false, "allow --cgroup to be the root of the cgroup2 hierarchy (every process on the machine): a real install only, never a lab")
	uplink := fs.String("uplink", "", "interface the NodePort programs attach to (tcx); empty: no NodePort data path")
	pinDir := fs.String("pin-dir", "", "bpffs directory of this node's maps and links (default "+bpf.PinRoot+"/<node-name>)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:10249", "host:port of /metrics (empty: off)")
	healthzAddr := fs.String("healthz-addr", "0.0.0.0:10256", "host:port of /healthz (empty: off)")
	workers := fs.Int("workers", 2, "services synced in parallel")
	resync := fs.Duration("resync-period", 5*time.Minute, "how often to compare the data path with the applied state and repair drift (0: never)")
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

	if *nodeName == "" {
		return errors.New("--node-name is required")
	}
	if *cgroup == "" {
		return errors.New("--cgroup is required (the node's pod cgroup parent; never the root cgroup in a lab)")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	node := proxy.Node{Name: *nodeName}
	for _, s := range strings.Split(*nodeIPs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--node-ip: %w", err)
		}
		node.IPs = append(node.IPs, ip.Unmap())
	}
	if *podCIDR != "" {
		p, err := netip.ParsePrefix(*podCIDR)
		if err != nil {
			return fmt.Errorf("--pod-cidr: %w", err)
		}
		node.PodCIDRs = []netip.Prefix{p}
	}
	// The data path needs the node's IP and pod CIDR when its programs load
	// (SNAT source, local-backend test), so fill them in from the Node now.
	if len(node.IPs) == 0 || len(node.PodCIDRs) == 0 {
		if node, err = completeFromNode(ctx, client, node); err != nil {
			return err
		}
	}
	opts := bpf.Options{Node: *nodeName, PinDir: *pinDir, AllowRootCgroup: *allowRoot, Logger: log}
	for _, ip := range node.IPs {
		if ip.Is4() {
			opts.NodeIP = ip
			break
		}
	}
	for _, p := range node.PodCIDRs {
		if p.Addr().Is4() {
			opts.PodCIDR = p
			break
		}
	}

	cgPath, err := cgroupPath(*cgroup)
	if err != nil {
		return err
	}
	lb, err := bpf.Load(opts)
	if err != nil {
		return err
	}
	// Close leaves maps and links pinned: the next proxy adopts them and
	// traffic keeps flowing while no proxy runs.
	defer lb.Close()
	if err := lb.AttachCgroup(cgPath); err != nil {
		return err
	}
	if *uplink != "" {
		if err := lb.AttachTCX(*uplink); err != nil {
			return err
		}
	} else {
		log.Warn("no --uplink: NodePorts and externalIPs are programmed but nothing balances them")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := proxy.New(proxy.Config{
		Client:       client,
		Datapath:     lb, // also datapath.Counters: per-frontend counters on /metrics
		Node:         node,
		Workers:      *workers,
		ResyncPeriod: *resync,
		Registerer:   reg,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		go serveHTTP(ctx, log, "metrics", *metricsAddr, mux)
	}
	if *healthzAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", healthzHandler(p))
		go serveHTTP(ctx, log, "healthz", *healthzAddr, mux)
	}
	log.Info("proxy starting", "node", node.Name, "ips", node.IPs, "podCIDRs", node.PodCIDRs,
		"cgroup", cgPath, "uplink", *uplink, "pins", lb.PinDir())
	return p.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return c, nil
}

// completeFromNode fills the node's IPs and pod CIDRs left unset from its
// Node object, waiting (bounded, and no longer than ctx) for the agent to
// register it.
func completeFromNode(ctx context.Context, client kubernetes.Interface, n proxy.Node) (proxy.Node, error) {
	var obj *corev1.Node
	var getErr error
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		obj, getErr = client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if getErr != nil {
			slog.Info("waiting for the node to register", "node", n.Name, "err", getErr)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		if getErr != nil {
			err = getErr
		}
		return n, fmt.Errorf("get node %s: %w", n.Name, err)
	}
	return n.CompleteFrom(obj), nil
}

// cgroupPath resolves a relative --cgroup under the cgroup2 mount, which is
// found in mountinfo (a hybrid host has it at /sys/fs/cgroup/unified).
func cgroupPath(p string) (string, error) {
	if filepath.IsAbs(p) {
		return p, nil
	}
	mnt, err := cgroup2.Mount()
	if err != nil {
		return "", err
	}
	return filepath.Join(mnt, p), nil
}

func serveHTTP(ctx context.Context, log *slog.Logger, what, addr string, h http.Handler) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve "+what, "addr", addr, "err", err)
	}
}

// healthzHandler answers like kube-proxy's /healthz: 200 while the proxy is
// in sync, 503 before its first sync or while a service keeps failing.
func healthzHandler(p *proxy.Proxy) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		healthy := p.Healthy()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"currentTime": time.Now().UTC().Format(time.RFC3339Nano),
			"healthy":     healthy,
		})
	}
}
