package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skep-dev/skep/internal/testutil"
)

// referencePluginDir is the Debian containernetworking-plugins package.
const referencePluginDir = "/usr/lib/cni"

// BenchmarkAddDel measures ADD and DEL latency through libcni (binary exec,
// as a runtime does) for skep-cni and, in the same run, for the reference
// bridge + host-local plugins, one at a time and with 16 in flight. Each
// iteration is one ADD and one DEL; p50/p99 are reported in ms.
//
//	go test -run '^$' -bench AddDel -benchtime 300x ./cni
func BenchmarkAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	for _, kind := range []string{"skep", "bridge+host-local"} {
		for _, par := range []int{1, 16} {
			name := fmt.Sprintf("%s/sequential", kind)
			if par > 1 {
				name = fmt.Sprintf("%s/parallel%d", kind, par)
			}
			b.Run(name, func(b *testing.B) { benchAddDel(b, kind, par) })
		}
	}
}

func benchAddDel(b *testing.B, kind string, par int) {
	node := newNetns(b)
	var dir string
	var list []byte
	switch kind {
	case "skep":
		dir = pluginDir
		list, _ = json.Marshal(map[string]any{
			"cniVersion": "1.1.0", "name": "skepbench",
			"plugins": []any{map[string]any{
				"type": "skep-cni", "subnet": "10.244.40.0/22", "mtu": 1400,
				"dataDir": b.TempDir(),
			}},
		})
	default:
		testutil.RequireBinary(b, filepath.Join(referencePluginDir, "host-local"))
		dir = referencePluginDir
		list, _ = json.Marshal(map[string]any{
			// 1.0.0: the newest version the Debian plugins speak.
			"cniVersion": "1.0.0", "name": "refbench",
			"plugins": []any{map[string]any{
				"type": "bridge", "bridge": "refbr0", "isGateway": true,
				"hairpinMode": true, "mtu": 1400,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]any{{{"subnet": "10.244.44.0/22"}}},
					"dataDir": b.TempDir(),
				},
			}},
		})
	}
	conf, err := libcni.NetworkConfFromBytes(list)
	if err != nil {
		b.Fatal(err)
	}
	rtm := newRuntime([]string{dir}, b.TempDir())
	pods := make([]*netnsT, par)
	for i := range pods {
		pods[i] = newNetns(b)
	}
	// Warm up: the first ADD creates the bridge and the store.
	if err := node.Do(func(ns.NetNS) error {
		r := &libcni.RuntimeConf{ContainerID: "warm", NetNS: pods[0].Path(), IfName: "eth0"}
		if _, err := rtm.AddNetworkList(context.Background(), conf, r); err != nil {
			return err
		}
		return rtm.DelNetworkList(context.Background(), conf, r)
	}); err != nil {
		b.Fatalf("warm-up: %v", err)
	}

	var mu sync.Mutex
	var adds, dels []time.Duration
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, par)
	b.ResetTimer()
	for w := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- node.Do(func(ns.NetNS) error {
				for {
					i := next.Add(1) - 1
					if i >= int64(b.N) {
						return nil
					}
					r := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%d", i), NetNS: pods[w].Path(), IfName: "eth0"}
					t0 := time.Now()
					if _, err := rtm.AddNetworkList(context.Background(), conf, r); err != nil {
						return fmt.Errorf("ADD: %w", err)
					}
					t1 := time.Now()
					if err := rtm.DelNetworkList(context.Background(), conf, r); err != nil {
						return fmt.Errorf("DEL: %w", err)
					}
					t2 := time.Now()
					mu.Lock()
					adds = append(adds, t1.Sub(t0))
					dels = append(dels, t2.Sub(t1))
					mu.Unlock()
				}
			})
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(percentileMs(adds, 50), "add-p50-ms")
	b.ReportMetric(percentileMs(adds, 99), "add-p99-ms")
	b.ReportMetric(percentileMs(dels, 50), "del-p50-ms")
	b.ReportMetric(percentileMs(dels, 99), "del-p99-ms")
	if os.Getenv("SKEP_BENCH_VERBOSE") != "" {
		b.Logf("%s par=%d n=%d", b.Name(), par, len(adds))
	}
}

// percentileMs is the nearest-rank percentile of ds in milliseconds.
func percentileMs(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := (p*len(s) + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return float64(s[rank-1].Microseconds()) / 1000
}
