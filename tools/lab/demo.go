package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-dev/skep/bpf"
)

// DemoResult is what the demo saw.
type DemoResult struct {
	ClusterIP string
	// Answers counts the ClusterIP answers of each backend pod, from the
	// client pod on node 1 (socket-LB).
	Answers  map[string]int
	Failures int
	// NodePort is the node port of the NodePort service, asked from the
	// switch netns at node 1's address (tc data path).
	NodePort         int32
	NodePortAnswers  map[string]int
	NodePortFailures int
	// InClusterAPI is what https://10.96.0.1/readyz answered the client
	// pod ("ok" when the API is reachable the in-cluster way).
	InClusterAPI string
	// Backends names the backend pods and their nodes.
	Backends map[string]string
}

// kubernetesServiceIP is the API's ClusterIP (the first of 10.96.0.0/12).
const kubernetesServiceIP = "10.96.0.1"

// Demo sizes: bounded, and enough for a uniform pick over 3 backends to hit
// each one (the chance that 30 picks miss one is about 1.5e-5).
const (
	demoBackends        = 3
	demoRequests        = 30
	demoNodePortRequest = 12
)

// Demo runs pods, services and traffic on a lab that is up, writing a
// narrative to w: 3 backend pods spread over the nodes and a client pod
// on node 1, a ClusterIP and a NodePort service (whose endpoint slices the
// EndpointSlice controller makes), then requests through both, and node
// 1's BPF service table. Pods of an earlier demo are replaced.
func Demo(ctx context.Context, c Config, w io.Writer) (*DemoResult, error) {
	c = c.Defaults()
	if _, ok := c.running(); !ok {
		return nil, fmt.Errorf("lab %q is not up: run `skep lab up` first", c.Prefix)
	}
	cs, err := c.Client()
	if err != nil {
		return nil, err
	}
	for _, p := range c.pods() {
		if err := c.removePod(ctx, p); err != nil {
			return nil, fmt.Errorf("remove earlier pod %s: %w", p.Name, err)
		}
	}
	if err := deleteDemoObjects(ctx, cs); err != nil {
		return nil, err
	}

	nodes := c.AllNodes()
	res := &DemoResult{Answers: map[string]int{}, NodePortAnswers: map[string]int{}, Backends: map[string]string{}}
	run := func(node Node, name, app string) (*labPod, error) {
		p, err := c.runPod(ctx, node, name, app)
		if err != nil {
			return nil, err
		}
		if err := publishPod(ctx, cs, p, node); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "pod %-8s on %s  ip %-12s (netns %s, pid %d)\n", name, node.Name, p.IP, p.Netns, p.Pid)
		return p, nil
	}
	fmt.Fprintln(w, "== pods: netns + skep-cni ADD + a server process in the node's cgroup")
	for i := 1; i <= demoBackends; i++ {
		// web-1 on n1, the others round the remaining nodes: cross-node
		// answers show host-gw routing.
		node := nodes[(i-1)%len(nodes)]
		if i > 1 && len(nodes) > 1 {
			node = nodes[1+(i-2)%(len(nodes)-1)]
		}
		p, err := run(node, "web-"+strconv.Itoa(i), "web")
		if err != nil {
			return nil, err
		}
		res.Backends[p.Name] = node.Name
	}
	client, err := run(nodes[0], "client", "client")
	if err != nil {
		return nil, err
	}

	fmt.Fprintln(w, "\n== services (the EndpointSlice controller lists the ready web pods in their slices)")
	svc, err := publishService(ctx, cs, "web", "web", corev1.ServiceTypeClusterIP)
	if err != nil {
		return nil, err
	}
	np, err := publishService(ctx, cs, "web-nodeport", "web", corev1.ServiceTypeNodePort)
	if err != nil {
		return nil, err
	}
	res.ClusterIP = svc.Spec.ClusterIP
	res.NodePort = np.Spec.Ports[0].NodePort
	fmt.Fprintf(w, "service web           ClusterIP %s:80 -> pods:%d\n", res.ClusterIP, podPort)
	fmt.Fprintf(w, "service web-nodeport  ClusterIP %s:80, NodePort %d\n", np.Spec.ClusterIP, res.NodePort)

	n1 := nodes[0]
	if err := waitProgrammed(ctx, n1, res.ClusterIP, res.NodePort); err != nil {
		return nil, err
	}

	fmt.Fprintf(w, "\n== %d requests to http://%s/ from pod client on %s (socket-LB rewrites each connect)\n", demoRequests, res.ClusterIP, n1.Name)
	lines, err := c.get(ctx, client.Name, "http://"+res.ClusterIP+"/", demoRequests)
	if err != nil {
		return nil, err
	}
	res.Failures = tally(lines, res.Answers)
	printTally(w, res.Answers, res.Failures, res.Backends)

	target := netip.AddrPortFrom(n1.IP, uint16(res.NodePort))
	fmt.Fprintf(w, "\n== %d requests to http://%s/ from the switch netns (outside the cluster; tc on %s's %s)\n", demoNodePortRequest, target, n1.Name, uplinkName)
	lines, err = c.get(ctx, "switch", "http://"+target.String()+"/", demoNodePortRequest)
	if err != nil {
		return nil, err
	}
	res.NodePortFailures = tally(lines, res.NodePortAnswers)
	printTally(w, res.NodePortAnswers, res.NodePortFailures, res.Backends)
	// One answer per backend: a pod on node 1 sees the real client, the
	// others see node 1's address (SNAT, so their replies come back).
	seen := map[string]bool{}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(l, "error") && !seen[f[0]] {
			seen[f[0]] = true
			fmt.Fprintf(w, "  %s\n", l)
		}
	}

	// In-cluster clients: the kubernetes service's endpoint is the API's
	// underlay address (the server's advertise address), served by the
	// relay; the certificate names 10.96.0.1.
	url := "https://" + kubernetesServiceIP + "/readyz"
	fmt.Fprintf(w, "\n== the API from pod client, as in-cluster clients reach it: %s (CA-verified)\n", url)
	lines, err = c.get(ctx, client.Name, url, 1, "--cacert", c.caFile())
	if err != nil {
		return nil, err
	}
	res.InClusterAPI = strings.Join(lines, " ")
	fmt.Fprintf(w, "  %s\n", res.InClusterAPI)

	fmt.Fprintf(w, "\n== skep bpf services --node %s\n", n1.Name)
	out, err := exec.CommandContext(ctx, c.Binary, "bpf", "services", "--node", n1.Name).CombinedOutput()
	w.Write(out)
	if err != nil {
		return res, fmt.Errorf("skep bpf services: %w", err)
	}
	return res, nil
}

// waitProgrammed waits (bounded) until node's pinned maps hold the
// ClusterIP with every backend and the NodePort.
func waitProgrammed(ctx context.Context, n Node, clusterIP string, nodePort int32) error {
	var last string
	err := poll(ctx, 20*time.Second, nil, func() bool {
		p, err := bpf.OpenPinned(bpf.PinDirFor(n.Name))
		if err != nil {
			last = err.Error()
			return false
		}
		defer p.Close()
		svcs, err := p.Services()
		if err != nil {
			last = err.Error()
			return false
		}
		var vip, port bool
		for _, s := range svcs {
			if s.Frontend.IP.String() == clusterIP && s.Frontend.Port == 80 && len(s.Slots) == demoBackends {
				vip = true
			}
			if int32(s.Frontend.Port) == nodePort && len(s.Slots) == demoBackends {
				port = true
			}
		}
		last = fmt.Sprintf("clusterIP programmed %v, nodePort programmed %v", vip, port)
		return vip && port
	})
	if err != nil {
		return fmt.Errorf("services not programmed on %s: %w (%s)", n.Name, err, last)
	}
	return nil
}

// get runs `skep lab get` where target lives (see Command) and returns
// its lines. It is bounded by count requests of at most 2 s each.
func (c Config) get(ctx context.Context, target, url string, count int, flags ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(count)*2*time.Second+10*time.Second)
	defer cancel()
	argv := append([]string{c.Binary, "lab", "get", "--count", strconv.Itoa(count), "--timeout", "2s"}, flags...)
	cmd, cleanup, err := c.Command(ctx, target, append(argv, url))
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("skep lab get %s: %w: %s", url, err, strings.TrimSpace(errb.String()))
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, nil
}

// tally counts answers by pod (the first word of each line) and failures.
func tally(lines []string, into map[string]int) (failures int) {
	for _, l := range lines {
		if strings.HasPrefix(l, "error") {
			failures++
			continue
		}
		if f := strings.Fields(l); len(f) > 0 {
			into[f[0]]++
		}
	}
	return failures
}

func printTally(w io.Writer, answers map[string]int, failures int, where map[string]string) {
	names := make([]string, 0, len(answers))
	for n := range answers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s (%s) answered %d\n", n, where[n], answers[n])
	}
	if failures > 0 {
		fmt.Fprintf(w, "  failed: %d\n", failures)
	}
}
