package cni

import (
	"context"
	"encoding/json"
	"fmt"
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
// as a runtime does) for skep-cni and for the reference bridge + host-local
// plugins side by side: every iteration does one ADD and one DEL with each,
// interleaved, so both see the same machine load (the machine is shared and
// its load swings). One at a time and with 16 in flight; p50/p99 in ms per
// plugin and the skep/reference ratio of the ADD p50.
//
//	go test -run '^$' -bench AddDel -benchtime 300x ./cni
func BenchmarkAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	testutil.RequireBinary(b, filepath.Join(referencePluginDir, "host-local"))
	for _, par := range []int{1, 16} {
		name := "sequential"
		if par > 1 {
			name = fmt.Sprintf("parallel%d", par)
		}
		b.Run(name, func(b *testing.B) { benchAddDel(b, par) })
	}
}

// benchPlugin is one plugin set-up under test on its own node.
type benchPlugin struct {
	name       string
	node       *testutil.Netns
	rtm        *libcni.CNIConfig
	conf       *libcni.NetworkConfigList
	adds, dels []time.Duration
}

func newBenchPlugin(b *testing.B, name, dir string, list map[string]any) *benchPlugin {
	raw, _ := json.Marshal(list)
	conf, err := libcni.NetworkConfFromBytes(raw)
	if err != nil {
		b.Fatal(err)
	}
	return &benchPlugin{name: name, node: testutil.NewNetns(b), rtm: newRuntime([]string{dir}, b.TempDir()), conf: conf}
}

// addDel runs one ADD and one DEL from a thread in the plugin's node.
func (p *benchPlugin) addDel(id string, pod *testutil.Netns) (add, del time.Duration, err error) {
	err = p.node.Do(func(ns.NetNS) error {
		r := &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
		t0 := time.Now()
		if _, err := p.rtm.AddNetworkList(context.Background(), p.conf, r); err != nil {
			return fmt.Errorf("%s ADD: %w", p.name, err)
		}
		t1 := time.Now()
		if err := p.rtm.DelNetworkList(context.Background(), p.conf, r); err != nil {
			return fmt.Errorf("%s DEL: %w", p.name, err)
		}
		add, del = t1.Sub(t0), time.Since(t1)
		return nil
	})
	return add, del, err
}

func benchAddDel(b *testing.B, par int) {
	skep := newBenchPlugin(b, "skep", pluginDir, map[string]any{
		"cniVersion": "1.1.0", "name": "skepbench",
		"plugins": []any{map[string]any{
			"type": "skep-cni", "subnet": "10.244.40.0/22", "mtu": 1400, "dataDir": b.TempDir(),
		}},
	})
	ref := newBenchPlugin(b, "ref", referencePluginDir, map[string]any{
		// 1.0.0: the newest version the Debian plugins speak.
		"cniVersion": "1.0.0", "name": "refbench",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": "refbr0", "isGateway": true, "hairpinMode": true, "mtu": 1400,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]any{{{"subnet": "10.244.44.0/22"}}},
				"dataDir": b.TempDir(),
			},
		}},
	})
	plugins := []*benchPlugin{skep, ref}
	pods := make([]*testutil.Netns, par)
	for i := range pods {
		pods[i] = testutil.NewNetns(b)
	}
	// Warm up: the first ADD creates the bridge and the store.
	for _, p := range plugins {
		if _, _, err := p.addDel("warm", pods[0]); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}

	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, par)
	b.ResetTimer()
	for w := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					errs <- nil
					return
				}
				// Alternate which plugin goes first, so neither always
				// runs right after the other's DEL.
				order := plugins
				if i%2 == 1 {
					order = []*benchPlugin{ref, skep}
				}
				for _, p := range order {
					add, del, err := p.addDel(fmt.Sprintf("bench-%d", i), pods[w])
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					p.adds, p.dels = append(p.adds, add), append(p.dels, del)
					mu.Unlock()
				}
			}
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
	for _, p := range plugins {
		b.ReportMetric(percentileMs(p.adds, 50), p.name+"-add-p50-ms")
		b.ReportMetric(percentileMs(p.adds, 99), p.name+"-add-p99-ms")
		b.ReportMetric(percentileMs(p.dels, 50), p.name+"-del-p50-ms")
		b.ReportMetric(percentileMs(p.dels, 99), p.name+"-del-p99-ms")
	}
	if r := percentileMs(ref.adds, 50); r > 0 {
		b.ReportMetric(percentileMs(skep.adds, 50)/r, "add-p50-skep/ref")
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
