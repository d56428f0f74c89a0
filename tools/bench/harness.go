package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/proxy/datapath"
)

// namePrefix starts every netns, cgroup and pin directory a run creates,
// followed by the run's pid, so leftovers of a killed run can be found.
const namePrefix = "skepbench"

// Modes measured side by side.
const (
	ModeDirect = "direct"          // the client dials pod IPs: the limit
	ModeSkep   = "skep"            // ClusterIP through skep's socket-LB
	ModeNFT    = "iptables-nft"    // kube-proxy-shaped rules, nf_tables backend
	ModeLegacy = "iptables-legacy" // kube-proxy-shaped rules, x_tables backend
	ModeIPVS   = "ipvs"
)

// SkepAttach loads skep's data path with its socket programs attached to
// cgroupPath (maps pinned under pinDir) and returns it with a function that
// detaches and unpins everything.
type SkepAttach func(cgroupPath, pinDir string) (datapath.Datapath, func() error, error)

// Config is one benchmark run.
type Config struct {
	Services     []int         // service counts, e.g. 1, 1000, 10000
	Endpoints    int           // endpoints per service (3)
	ConnDuration time.Duration // per new-connection measurement
	Duration     time.Duration // per keepalive, stream and UDP measurement
	Workers      int           // parallel clients
	// Rounds splits each measurement's duration into this many slices run
	// interleaved with the other modes' (the order rotated every round) and
	// summed, so the load other tenants put on the machine hits every mode
	// alike.
	Rounds int
	// NFTMaxServices skips the nft backend above this many services
	// (0: no limit). Programming 10,000 services with iptables-nft takes
	// minutes on a small machine.
	NFTMaxServices int
	// ProgramTimeout bounds one iptables-restore.
	ProgramTimeout time.Duration
	// Modes to measure (nil: all). Direct is always measured: it is the base.
	Modes []string
	// ChildArgv runs bench.ChildMain (e.g. {"/proc/self/exe", "bench", "client"}).
	ChildArgv []string
	// Skep attaches skep's data path; nil reports skep as not available.
	Skep SkepAttach
	Log  *slog.Logger
}

// QuickConfig is the CI smoke run: 1 and 1,000 services, 1 s per measurement.
func QuickConfig() Config {
	return Config{
		Services: []int{1, 1000}, Endpoints: 3,
		ConnDuration: time.Second, Duration: time.Second / 2,
		Workers: 4, Rounds: 2, ProgramTimeout: 2 * time.Minute,
	}
}

// FullConfig is the default run: 1, 1,000 and 10,000 services.
func FullConfig() Config {
	return Config{
		Services: []int{1, 1000, 10000}, Endpoints: 3,
		ConnDuration: 3 * time.Second, Duration: 3 * time.Second / 2,
		Workers: 4, Rounds: 6, ProgramTimeout: 8 * time.Minute,
	}
}

// Report is everything a run measured, written as JSON.
type Report struct {
	Started   time.Time `json:"started"`
	Host      HostInfo  `json:"host"`
	Endpoints int       `json:"endpointsPerService"`
	Workers   int       `json:"workers"`
	Rounds    int       `json:"rounds"`
	// Order says where the service under test sits among the N.
	Order  string `json:"order"`
	Method string `json:"method"`
	IPVS   string `json:"ipvs"`
	// Control: the ClusterIP dialled from the plain client netns outside
	// the bench cgroup, where neither skep nor iptables applies. It must
	// fail, proving that what the modes reach through the VIP, they reach
	// through the data path under test and no stray route.
	Control string     `json:"control"`
	Results []NResult  `json:"results"`
	Cleanup CleanupLog `json:"cleanup"`
}

// HostInfo is the machine the figures come from.
type HostInfo struct {
	Kernel  string `json:"kernel"`
	CPUs    int    `json:"cpus"`
	LoadAvg string `json:"loadavg"`
}

// NResult holds every mode's figures at one service count.
type NResult struct {
	Services     int          `json:"services"`
	ServicePorts int          `json:"servicePorts"` // the one under test has 3 ports
	Modes        []ModeResult `json:"modes"`
}

// ModeResult is one mode at one service count.
type ModeResult struct {
	Mode    string `json:"mode"`
	Skipped string `json:"skipped,omitempty"`
	// Program is the time to program all N services (iptables-restore wall
	// time, or Datapath.UpsertService for every service port).
	Program time.Duration `json:"program,omitempty"`
	// ProgramCPU is the CPU time programming used (iptables-restore's user
	// and system time; for skep the upserting thread's): unlike the wall
	// time it does not grow with the other tenants' load.
	ProgramCPU time.Duration `json:"programCPU,omitempty"`
	// Rules as read back from the client netns after programming (iptables).
	Rules   *RuleStats `json:"rules,omitempty"`
	Connect *JobResult `json:"connect,omitempty"`
	RR      *JobResult `json:"rr,omitempty"`
	Stream  *JobResult `json:"stream,omitempty"`
	UDP     *JobResult `json:"udp,omitempty"`
	// Backends is what each backend served during this mode's measurements:
	// proof the traffic reached the pods, and how evenly.
	Backends []BackendCounts `json:"backends,omitempty"`
	// EndpointUpdate is the time the data path takes to apply one endpoint
	// change of the service under test with all N services in place (skep:
	// Datapath.UpsertService; iptables: kube-proxy's partial-sync
	// iptables-restore). From an EndpointSlice event to this call is the
	// proxy's side, measured by its own benchmark.
	EndpointUpdate *UpdateTimes `json:"endpointUpdate,omitempty"`
	Ratios         *Ratios      `json:"ratiosToDirect,omitempty"`
}

// UpdateTimes summarises repeated updates.
type UpdateTimes struct {
	Count  int           `json:"count"`
	Median time.Duration `json:"median"`
	Max    time.Duration `json:"max"`
}

func summarise(ds []time.Duration) *UpdateTimes {
	if len(ds) == 0 {
		return nil
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return &UpdateTimes{Count: len(s), Median: s[(len(s)-1)/2], Max: s[len(s)-1]}
}

// Ratios are a mode's figures divided by direct's, measured in the same run.
type Ratios struct {
	Connect float64 `json:"connect"`
	P50     float64 `json:"p50"` // latency: > 1 is slower
	P99     float64 `json:"p99"`
	RR      float64 `json:"rr"`
	Stream  float64 `json:"stream"`
	UDP     float64 `json:"udp"`
}

// CleanupLog records that the run left nothing behind.
type CleanupLog struct {
	Netns  []string `json:"netns"`  // namespaces created ("net:[inode]"), all released
	Cgroup string   `json:"cgroup"` // cgroup created (removed)
	PinDir string   `json:"pinDir"`
	// IptablesEmpty: the client netns' rule set after the final flush.
	IptablesEmpty map[string]bool `json:"iptablesEmpty"`
	Errors        []string        `json:"errors,omitempty"`
}

func (c *Config) defaults() {
	if len(c.Services) == 0 {
		c.Services = []int{1}
	}
	if c.Endpoints <= 0 {
		c.Endpoints = 3
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.ConnDuration <= 0 {
		c.ConnDuration = time.Second
	}
	if c.Duration <= 0 {
		c.Duration = time.Second
	}
	if c.ProgramTimeout <= 0 {
		c.ProgramTimeout = 5 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) wants(mode string) bool {
	return mode == ModeDirect || len(c.Modes) == 0 || slices.Contains(c.Modes, mode)
}

// Run builds the topology, measures every mode at every service count and
// removes everything it made — on success, on error and when ctx is
// cancelled (Ctrl-C) alike. The report is returned even with an error, with
// whatever was measured.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg.defaults()
	if len(cfg.ChildArgv) == 0 {
		return nil, errors.New("bench: no ChildArgv to start clients with")
	}
	for _, m := range cfg.Modes {
		if !slices.Contains([]string{ModeDirect, ModeSkep, ModeNFT, ModeLegacy}, m) {
			return nil, fmt.Errorf("bench: unknown mode %q (have %s, %s, %s, %s)", m, ModeDirect, ModeSkep, ModeNFT, ModeLegacy)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: needs root (network namespaces, cgroups, BPF, iptables)")
	}
	log := cfg.Log
	rep = &Report{
		Started: time.Now().UTC(), Host: hostInfo(),
		Endpoints: cfg.Endpoints, Workers: cfg.Workers, Rounds: cfg.Rounds,
		Order: "the service under test is the LAST of the N services in KUBE-SERVICES " +
			"(iptables walks it linearly; kube-proxy orders by Go map iteration, so this is the worst case)",
		Method: fmt.Sprintf("new connections: %d clients for %v per mode, each doing connect, %d B request/response, close (RST, no TIME_WAIT); "+
			"rr: %d kept-alive connections, stream: 1 TCP connection writing 128 KiB chunks, udp: %d connected sockets doing request/response, %v per mode each; "+
			"every measurement runs as %d slices interleaved with the other modes', each slice a fresh client process; direct dials the 3 pod IPs in turn",
			cfg.Workers, cfg.ConnDuration, 64, cfg.Workers, cfg.Workers, cfg.Duration, cfg.Rounds),
		Cleanup: CleanupLog{IptablesEmpty: map[string]bool{}},
	}
	prefix := fmt.Sprintf("%s%dx%04x", namePrefix, os.Getpid(), rand.IntN(1<<16))

	// Every teardown step goes on this stack and runs whatever happens.
	var undo []func() error
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				rep.Cleanup.Errors = append(rep.Cleanup.Errors, uerr.Error())
				err = errors.Join(err, uerr)
			}
		}
	}()

	ok, why := ipvsAvailable()
	rep.IPVS = why
	if ok {
		rep.IPVS = why + "; the IPVS mode is not implemented by this harness yet"
	}

	log.Info("building topology", "prefix", prefix)
	topo, err := NewTopology(prefix, 3)
	if err != nil {
		return rep, err
	}
	rep.Cleanup.Netns = topo.NetnsIDs()
	undo = append(undo, topo.Close)

	var backends []*Backend
	undo = append(undo, func() error {
		for _, b := range backends {
			b.Close()
		}
		return nil
	})
	for i, p := range topo.Backends {
		b, err := StartBackend(p.NS, p.IP.String())
		if err != nil {
			return rep, fmt.Errorf("backend %d: %w", i, err)
		}
		backends = append(backends, b)
	}

	var skep datapath.Datapath
	cgroupFD := -1
	skepWhy := ""
	switch {
	case !cfg.wants(ModeSkep):
		skepWhy = "not selected"
	case cfg.Skep == nil:
		skepWhy = "not available: no skep data path loader in this build"
	default:
		cg, err := newBenchCgroup(prefix)
		if err != nil {
			return rep, fmt.Errorf("bench cgroup: %w", err)
		}
		rep.Cleanup.Cgroup = cg.Path
		undo = append(undo, cg.Close)
		pinDir := "/sys/fs/bpf/skep/" + prefix
		rep.Cleanup.PinDir = pinDir
		dp, detach, err := cfg.Skep(cg.Path, pinDir)
		if err != nil {
			// Measure the rest; the skep row says why it is empty.
			log.Warn("skep data path not attached", "err", err)
			skepWhy = "attach failed: " + err.Error()
			break
		}
		undo = append(undo, detach)
		skep, cgroupFD = dp, cg.fd
	}

	var ipt []iptablesBackend
	for _, b := range iptablesBackends {
		mode := "iptables-" + b.Name
		if !cfg.wants(mode) {
			continue
		}
		ipt = append(ipt, b)
		pod := topo.Clients[b.Name]
		undo = append(undo, func() error {
			// Flush and prove it, before the netns (which would take the
			// rules with it anyway) goes.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := b.Flush(ctx, pod); err != nil {
				return err
			}
			empty, err := b.Empty(ctx, pod)
			rep.Cleanup.IptablesEmpty[mode] = empty
			if err == nil && !empty {
				err = fmt.Errorf("%s: rules left in %s after flush", mode, pod.Name)
			}
			return err
		})
	}

	h := &harness{cfg: cfg, log: log, topo: topo, backends: backends,
		runner: childRunner{argv: cfg.ChildArgv}, skep: skep, skepWhy: skepWhy, cgroupFD: cgroupFD, ipt: ipt, ipvsWhy: rep.IPVS}
	// One attempt: it blocks until the connect timeout, then the job ends.
	ctl, err := h.runner.run(ctx, topo.Clients["plain"], -1, Job{Kind: KindConnect, Workers: 1, Duration: 100 * time.Millisecond,
		Targets: []netip.AddrPort{netip.AddrPortFrom(testVIP, svcPortEcho)}})
	if err != nil {
		return rep, fmt.Errorf("control: %w", err)
	}
	if ctl.Ops != 0 {
		return rep, fmt.Errorf("control: the ClusterIP answered without skep or iptables: the topology leaks")
	}
	if ctl.Errors == 0 {
		return rep, fmt.Errorf("control: no connect attempted")
	}
	rep.Control = "ClusterIP unreachable without skep or iptables (" + ctl.FirstError + ")"

	for _, n := range cfg.Services {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		res, err := h.atN(ctx, n)
		rep.Results = append(rep.Results, res)
		if err != nil {
			return rep, fmt.Errorf("at %d services: %w", n, err)
		}
	}
	return rep, nil
}

type harness struct {
	cfg      Config
	log      *slog.Logger
	topo     *Topology
	backends []*Backend
	runner   childRunner
	skep     datapath.Datapath
	skepWhy  string
	cgroupFD int
	ipt      []iptablesBackend
	ipvsWhy  string
	skepSvcs []datapath.Frontend // programmed now
}

// Addresses of the service under test.
var (
	testVIP = netip.MustParseAddr("10.96.0.10")
)

const (
	svcPortEcho = 80 // TCP and UDP → EchoPort
	svcPortSink = 81 // TCP → SinkPort
)

// services returns the N services kube-proxy would see: N-1 fillers with 3
// endpoints each on addresses that exist nowhere (they are never dialed),
// then the service under test with its 3 ports on the real backends.
func (h *harness) services(n int) []KubeService {
	out := make([]KubeService, 0, n+2)
	ep := uint32(10<<24 | 244<<16 | 128<<8) // 10.244.128.0: filler endpoints
	vip := uint32(10<<24 | 97<<16)          // 10.97.0.0: filler ClusterIPs
	for i := range n - 1 {
		s := KubeService{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i), PortName: "http",
			Proto: "tcp", ClusterIP: u32Addr(vip + uint32(i)), Port: 80}
		for range h.cfg.Endpoints {
			s.Endpoints = append(s.Endpoints, netip.AddrPortFrom(u32Addr(ep), EchoPort))
			ep++
		}
		out = append(out, s)
	}
	var echo, sink []netip.AddrPort
	for _, b := range h.topo.Backends {
		echo = append(echo, netip.AddrPortFrom(b.IP, EchoPort))
		sink = append(sink, netip.AddrPortFrom(b.IP, SinkPort))
	}
	out = append(out,
		KubeService{"bench", "under-test", "echo", "tcp", testVIP, svcPortEcho, echo},
		KubeService{"bench", "under-test", "echo-udp", "udp", testVIP, svcPortEcho, echo},
		KubeService{"bench", "under-test", "sink", "tcp", testVIP, svcPortSink, sink},
	)
	return out
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (h *harness) atN(ctx context.Context, n int) (res NResult, err error) {
	svcs := h.services(n)
	res = NResult{Services: n, ServicePorts: len(svcs)}
	modes := map[string]*ModeResult{ModeDirect: {Mode: ModeDirect}}
	order := []string{ModeDirect}
	// Whatever was measured is reported, also when the run stops half way.
	defer func() {
		for _, mode := range order {
			res.Modes = append(res.Modes, *modes[mode])
		}
		res.Modes = append(res.Modes, ModeResult{Mode: ModeIPVS, Skipped: h.ipvsWhy})
		base := modes[ModeDirect]
		for i := range res.Modes {
			m := &res.Modes[i]
			if m.Skipped == "" && m.Connect != nil && base.Connect != nil {
				m.Ratios = ratios(*m, *base)
			}
		}
	}()

	// Program every mode once; the measurements below reuse it.
	sk := &ModeResult{Mode: ModeSkep, Skipped: h.skepWhy}
	if h.skep != nil {
		d, cpu, err := h.programSkep(svcs)
		if err != nil {
			return res, err
		}
		sk.Program, sk.ProgramCPU = d, cpu
		h.log.Info("programmed", "mode", ModeSkep, "services", n, "took", d, "cpu", cpu)
	}
	modes[ModeSkep] = sk
	order = append(order, ModeSkep)
	for _, b := range h.ipt {
		mode := "iptables-" + b.Name
		m := &ModeResult{Mode: mode}
		modes[mode] = m
		order = append(order, mode)
		pod := h.topo.Clients[b.Name]
		if b.Name == "nft" && h.cfg.NFTMaxServices > 0 && n > h.cfg.NFTMaxServices {
			m.Skipped = fmt.Sprintf("skipped above %d services (--nft-max)", h.cfg.NFTMaxServices)
			if err := b.Flush(ctx, pod); err != nil {
				return res, err
			}
			continue
		}
		if err := b.Flush(ctx, pod); err != nil {
			return res, err
		}
		h.log.Info("programming", "mode", mode, "services", n)
		pctx, cancel := context.WithTimeout(ctx, h.cfg.ProgramTimeout)
		d, cpu, err := b.Program(pctx, pod, svcs)
		timedOut := pctx.Err() == context.DeadlineExceeded
		cancel()
		if err != nil {
			if timedOut && ctx.Err() == nil {
				m.Program, m.ProgramCPU = d, cpu
				m.Skipped = fmt.Sprintf("programming did not finish in %v (cpu %v so far): not measured",
					h.cfg.ProgramTimeout, cpu.Round(time.Second))
				if ferr := b.Flush(ctx, pod); ferr != nil {
					return res, ferr
				}
				continue
			}
			return res, err
		}
		m.Program, m.ProgramCPU = d, cpu
		st, err := b.Stats(ctx, pod)
		if err != nil {
			return res, err
		}
		m.Rules = &st
		if st.SvcChains != len(svcs) || st.SepChains != len(svcs)*h.cfg.Endpoints {
			return res, fmt.Errorf("%s: read back %d service and %d endpoint chains, want %d and %d",
				mode, st.SvcChains, st.SepChains, len(svcs), len(svcs)*h.cfg.Endpoints)
		}
		h.log.Info("programmed", "mode", mode, "services", n, "took", d, "cpu", cpu, "rules", st.Rules)
	}

	// Measure kind by kind, all modes back to back, so the load the other
	// tenants put on the machine hits every mode alike.
	type kindSpec struct {
		kind string
		dur  time.Duration
		put  func(m *ModeResult, r JobResult)
	}
	kinds := []kindSpec{
		{KindConnect, h.cfg.ConnDuration, func(m *ModeResult, r JobResult) { m.Connect = &r }},
		{KindRR, h.cfg.Duration, func(m *ModeResult, r JobResult) { m.RR = &r }},
		{KindStream, h.cfg.Duration, func(m *ModeResult, r JobResult) { m.Stream = &r }},
		{KindUDP, h.cfg.Duration, func(m *ModeResult, r JobResult) { m.UDP = &r }},
	}
	for _, k := range kinds {
		runs := map[string][]JobResult{}
		for round := range h.cfg.Rounds {
			// Rotate the order each round so no mode always runs right
			// after the same neighbour.
			rot := append(slices.Clone(order[round%len(order):]), order[:round%len(order)]...)
			for _, mode := range rot {
				m := modes[mode]
				if m.Skipped != "" {
					continue
				}
				if err := ctx.Err(); err != nil {
					return res, err
				}
				job, pod, cg := h.job(mode, k.kind, max(k.dur/time.Duration(h.cfg.Rounds), 100*time.Millisecond))
				before := h.counts()
				r, err := h.runner.run(ctx, pod, cg, job)
				if err != nil {
					return res, fmt.Errorf("%s %s: %w", mode, k.kind, err)
				}
				after := h.counts()
				if m.Backends == nil {
					m.Backends = make([]BackendCounts, len(after))
				}
				for i := range after {
					d := after[i].sub(before[i])
					m.Backends[i].Conns += d.Conns
					m.Backends[i].Requests += d.Requests
					m.Backends[i].UDP += d.UDP
					m.Backends[i].SinkB += d.SinkB
				}
				runs[mode] = append(runs[mode], r)
				h.log.Info("measured", "services", n, "mode", mode, "kind", k.kind,
					"rate", fmt.Sprintf("%.0f", r.Rate()), "MBps", fmt.Sprintf("%.0f", r.MBps()), "errors", r.Errors)
			}
		}
		for mode, rs := range runs {
			k.put(modes[mode], combine(rs))
		}
	}
	return res, h.endpointUpdates(ctx, svcs, modes)
}

// endpointUpdates times endpoint changes of the service under test's TCP
// port with all N services programmed: its last endpoint is removed and put
// back, alternately, ending with the full set in place.
func (h *harness) endpointUpdates(ctx context.Context, svcs []KubeService, modes map[string]*ModeResult) error {
	idx := len(svcs) - 3 // the service under test's TCP echo port
	full := svcs[idx].Endpoints
	less, gone := full[:len(full)-1], full[len(full)-1:]
	variant := func(i int) []KubeService {
		cur := slices.Clone(svcs)
		if i%2 == 0 {
			cur[idx].Endpoints = less
		}
		return cur
	}
	if m := modes[ModeSkep]; m.Skipped == "" && h.skep != nil {
		var ds []time.Duration
		for i := range 40 {
			s := toDatapath(variant(i)[idx])
			start := time.Now()
			if err := h.skep.UpsertService(s); err != nil {
				return fmt.Errorf("skep endpoint update: %w", err)
			}
			ds = append(ds, time.Since(start))
		}
		m.EndpointUpdate = summarise(ds)
	}
	for _, b := range h.ipt {
		m := modes["iptables-"+b.Name]
		if m.Skipped != "" {
			continue
		}
		pod := h.topo.Clients[b.Name]
		var ds []time.Duration
		for i := range 4 {
			var g []netip.AddrPort
			if i%2 == 0 {
				g = gone
			}
			data := KubeProxyPartialRestore(variant(i), idx, g, clusterNet)
			pctx, cancel := context.WithTimeout(ctx, h.cfg.ProgramTimeout)
			start := time.Now()
			_, err := inNetnsCmd(pctx, pod, data, b.Restore, "-w", "--noflush", "--counters")
			cancel()
			if err != nil {
				return fmt.Errorf("%s endpoint update: %w", m.Mode, err)
			}
			ds = append(ds, time.Since(start))
		}
		m.EndpointUpdate = summarise(ds)
		st, err := b.Stats(ctx, pod)
		if err != nil {
			return err
		}
		if st.SepChains != len(svcs)*h.cfg.Endpoints {
			return fmt.Errorf("%s: %d endpoint chains after the updates, want %d", m.Mode, st.SepChains, len(svcs)*h.cfg.Endpoints)
		}
	}
	return nil
}

// job builds the client job of a mode: which netns the client runs in, which
// cgroup (skep only) and what it dials.
func (h *harness) job(mode, kind string, d time.Duration) (Job, *Pod, int) {
	j := Job{Kind: kind, Workers: h.cfg.Workers, Duration: d, Payload: 64}
	port := uint16(svcPortEcho)
	if kind == KindStream {
		port = svcPortSink
	}
	pod, cg := h.topo.Clients["plain"], -1
	switch mode {
	case ModeDirect:
		bport := uint16(EchoPort)
		if kind == KindStream {
			bport = SinkPort
		}
		for _, b := range h.topo.Backends {
			j.Targets = append(j.Targets, netip.AddrPortFrom(b.IP, bport))
		}
		return j, pod, -1
	case ModeSkep:
		cg = h.cgroupFD
	case ModeNFT:
		pod = h.topo.Clients["nft"]
	case ModeLegacy:
		pod = h.topo.Clients["legacy"]
	}
	j.Targets = []netip.AddrPort{netip.AddrPortFrom(testVIP, port)}
	return j, pod, cg
}

func (h *harness) counts() []BackendCounts {
	out := make([]BackendCounts, len(h.backends))
	for i, b := range h.backends {
		out[i] = b.Counts()
	}
	return out
}

// programSkep replaces what skep serves with svcs and returns the wall and
// CPU time the upserts took (the removal of the previous N is not timed).
func (h *harness) programSkep(svcs []KubeService) (wall, cpu time.Duration, err error) {
	for _, f := range h.skepSvcs {
		if err := h.skep.DeleteService(f); err != nil {
			return 0, 0, fmt.Errorf("skep delete %s: %w", f, err)
		}
	}
	h.skepSvcs = h.skepSvcs[:0]
	dps := make([]datapath.Service, len(svcs))
	for i, s := range svcs {
		dps[i] = toDatapath(s)
	}
	// One locked thread does every upsert, so its CPU time is theirs.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	start := time.Now()
	for _, s := range dps {
		if err := h.skep.UpsertService(s); err != nil {
			return 0, 0, fmt.Errorf("skep upsert %s: %w", s.Name, err)
		}
		h.skepSvcs = append(h.skepSvcs, s.Frontend)
	}
	return time.Since(start), threadCPU() - cpu0, nil
}

// toDatapath is the service as skep's proxy hands it to the data path.
func toDatapath(s KubeService) datapath.Service {
	proto := datapath.TCP
	if s.Proto == "udp" {
		proto = datapath.UDP
	}
	d := datapath.Service{
		Frontend: datapath.Frontend{IP: s.ClusterIP, Port: s.Port, Proto: proto, Scope: datapath.ScopeInternal},
		Name:     s.portName(),
	}
	for _, ep := range s.Endpoints {
		d.Backends = append(d.Backends, datapath.Backend{IP: ep.Addr(), Port: ep.Port(), State: datapath.BackendActive})
	}
	return d
}

// threadCPU is the calling OS thread's user+system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// combine adds up the slices of one measurement: operations, errors, bytes
// and time are summed, latency histograms merged.
func combine(rs []JobResult) JobResult {
	var out JobResult
	var h Hist
	for _, r := range rs {
		out.Ops += r.Ops
		out.Errors += r.Errors
		out.Bytes += r.Bytes
		out.Elapsed += r.Elapsed
		if out.FirstError == "" {
			out.FirstError = r.FirstError
		}
		h.add(histFromSparse(r.Hist))
	}
	out.P50, out.P99 = h.quantile(0.50), h.quantile(0.99)
	out.PerSec, out.MBPerSec = out.Rate(), out.MBps()
	return out // the histogram stays out of the report: p50/p99 say it
}

func ratios(m, base ModeResult) *Ratios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	r := &Ratios{}
	if m.Connect != nil && base.Connect != nil {
		r.Connect = div(m.Connect.Rate(), base.Connect.Rate())
		r.P50 = div(float64(m.Connect.P50), float64(base.Connect.P50))
		r.P99 = div(float64(m.Connect.P99), float64(base.Connect.P99))
	}
	if m.RR != nil && base.RR != nil {
		r.RR = div(m.RR.Rate(), base.RR.Rate())
	}
	if m.Stream != nil && base.Stream != nil {
		r.Stream = div(m.Stream.MBps(), base.Stream.MBps())
	}
	if m.UDP != nil && base.UDP != nil {
		r.UDP = div(m.UDP.Rate(), base.UDP.Rate())
	}
	return r
}

func hostInfo() HostInfo {
	h := HostInfo{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return h
}
