package bench

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// iptablesBackend is one of the two iptables implementations kube-proxy may
// drive: the nft one (iptables-nft, rules translated to nf_tables) and the
// legacy one (x_tables).
type iptablesBackend struct {
	Name    string // "nft" or "legacy": also the client netns it programs
	Restore string // iptables-nft-restore / iptables-legacy-restore
	Save    string
}

var iptablesBackends = []iptablesBackend{
	{"nft", "iptables-nft-restore", "iptables-nft-save"},
	{"legacy", "iptables-legacy-restore", "iptables-legacy-save"},
}

// inNetnsCmd runs argv in the pod's netns with stdin, returning stdout.
func inNetnsCmd(ctx context.Context, pod *Pod, stdin []byte, argv ...string) ([]byte, error) {
	out, _, err := inNetnsCmdCPU(ctx, pod, stdin, argv...)
	return out, err
}

// inNetnsCmdCPU is inNetnsCmd that also returns the CPU time (user+system)
// the command used: the kernel's side of an nft or x_tables commit runs in
// the command's syscalls, so this is the cost of programming, whatever else
// the machine is doing.
func inNetnsCmdCPU(ctx context.Context, pod *Pod, stdin []byte, argv ...string) ([]byte, time.Duration, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + pod.Path, "--"}, argv...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &limitedWriter{w: &errb, n: 4096}
	err := cmd.Run()
	var cpu time.Duration
	if ps := cmd.ProcessState; ps != nil { // also when killed at a deadline
		cpu = ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		return nil, cpu, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), cpu, nil
}

// Program loads svcs the way kube-proxy does on a fresh node: the jump rules
// first (not timed: kube-proxy does them once at start), then one full sync
// with iptables-restore --noflush --counters, whose wall and CPU time are
// returned.
func (b iptablesBackend) Program(ctx context.Context, pod *Pod, svcs []KubeService) (wall, cpu time.Duration, err error) {
	if _, err := inNetnsCmd(ctx, pod, KubeProxyJumps(), b.Restore, "-w", "--noflush"); err != nil {
		return 0, 0, fmt.Errorf("%s jump rules: %w", b.Name, err)
	}
	data := KubeProxyRestore(svcs, clusterNet)
	start := time.Now()
	_, cpu, err = inNetnsCmdCPU(ctx, pod, data, b.Restore, "-w", "--noflush", "--counters")
	if err != nil {
		return time.Since(start), cpu, fmt.Errorf("%s restore: %w", b.Name, err)
	}
	return time.Since(start), cpu, nil
}

// Flush removes every rule and chain from the client netns' filter and nat
// tables. For nft that is the whole ruleset of the netns (it is ours alone);
// for legacy, a restore without --noflush empties each table it names.
func (b iptablesBackend) Flush(ctx context.Context, pod *Pod) error {
	var err error
	if b.Name == "nft" {
		_, err = inNetnsCmd(ctx, pod, nil, "nft", "flush", "ruleset")
	} else {
		_, err = inNetnsCmd(ctx, pod, []byte("*filter\nCOMMIT\n*nat\nCOMMIT\n"), b.Restore, "-w")
	}
	if err != nil {
		return fmt.Errorf("%s flush: %w", b.Name, err)
	}
	return nil
}

// RuleStats is what iptables-save shows in a netns.
type RuleStats struct {
	Rules     int `json:"rules"`     // "-A" lines
	SvcChains int `json:"svcChains"` // KUBE-SVC-* chains
	SepChains int `json:"sepChains"` // KUBE-SEP-* chains
}

// Stats reads the rule set back with iptables-save.
func (b iptablesBackend) Stats(ctx context.Context, pod *Pod) (RuleStats, error) {
	out, err := inNetnsCmd(ctx, pod, nil, b.Save)
	if err != nil {
		return RuleStats{}, fmt.Errorf("%s save: %w", b.Name, err)
	}
	var s RuleStats
	for line := range strings.Lines(string(out)) {
		switch {
		case strings.HasPrefix(line, "-A "):
			s.Rules++
		case strings.HasPrefix(line, ":KUBE-SVC-"):
			s.SvcChains++
		case strings.HasPrefix(line, ":KUBE-SEP-"):
			s.SepChains++
		}
	}
	return s, nil
}

// Empty reports whether nothing of kube-proxy's is left in the netns. For nft
// the whole ruleset must be empty (`nft list ruleset` prints nothing).
func (b iptablesBackend) Empty(ctx context.Context, pod *Pod) (bool, error) {
	s, err := b.Stats(ctx, pod)
	if err != nil {
		return false, err
	}
	if s.Rules != 0 || s.SvcChains != 0 || s.SepChains != 0 {
		return false, nil
	}
	if b.Name == "nft" {
		out, err := inNetnsCmd(ctx, pod, nil, "nft", "list", "ruleset")
		if err != nil {
			return false, err
		}
		return len(bytes.TrimSpace(out)) == 0, nil
	}
	return true, nil
}
