package apibench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// abuseBudget is the memory the server may add over idle while it is
// abused: the hardening issue's goal.
const abuseBudget = 256 << 20

// abusiveRequests are the worst requests the hardening issue found: each
// once took the server to gigabytes or held it for minutes.
func abusiveRequests() []struct{ method, path, ctype, body string } {
	doubling := []string{`{"op":"add","path":"/metadata/annotations","value":{"x":["` + strings.Repeat("y", 1024) + `"]}}`}
	for i := 0; i < 24; i++ {
		doubling = append(doubling, `{"op":"copy","from":"/metadata/annotations/x","path":"/metadata/annotations/x/-"}`)
	}
	many := make([]string, 10001)
	for i := range many {
		many[i] = `{"op":"test","path":"/metadata/name","value":"abuse"}`
	}
	var labels strings.Builder
	for i := 0; i < 20000; i++ {
		if i > 0 {
			labels.WriteByte(',')
		}
		fmt.Fprintf(&labels, `"bad key %d":"v"`, i)
	}
	ports := make([]string, 40000)
	for i := range ports {
		ports[i] = fmt.Sprintf(`{"name":"p%d","port":%d}`, i, 1+i%65535)
	}
	cm := "/api/v1/namespaces/default/configmaps"
	return []struct{ method, path, ctype, body string }{
		{"PATCH", cm + "/abuse", "application/json-patch+json", "[" + strings.Join(doubling, ",") + "]"},
		{"PATCH", cm + "/abuse", "application/json-patch+json", "[" + strings.Join(many, ",") + "]"},
		{"PATCH", cm + "/abuse", "application/merge-patch+json", `{"data":` + strings.Repeat(`{"a":`, 9990) + "1" + strings.Repeat("}", 9990) + `}`},
		{"POST", cm, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"labels","labels":{` + labels.String() + `}}}`},
		{"POST", "/api/v1/namespaces/default/services", "application/json", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"ports"},"spec":{"type":"NodePort","ports":[` + strings.Join(ports, ",") + `]}}`},
	}
}

// rssSampler records the peak of a process's anonymous resident memory
// (RssAnon: its heap and stacks, not the store's mapped file).
type rssSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := harness.ProcStatusBytes(pid, "RssAnon"); err == nil && v > s.peak.Load() {
				s.peak.Store(v)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

// BenchmarkAbuseMemory: the server's anonymous resident memory while 16
// clients send the worst requests the hardening issue found for 30 s
// (against idle), and while a namespace holding 300 ConfigMaps of 1 MB is
// deleted (against the memory just before, which filling it raised; that
// rise is reported too). Goal: under idle + 256 MB, and every
// request answered 2xx or 4xx.
func BenchmarkAbuseMemory(b *testing.B) {
	s := server(b, "abuse")
	cl, tok, err := s.HTTPClient()
	if err != nil {
		b.Fatal(err)
	}
	cl.Timeout = 90 * time.Second
	cfg, err := s.RESTConfig()
	if err != nil {
		b.Fatal(err)
	}
	base := cfg.Host
	css := clients(b, s, 16)
	ctx := context.Background()
	if _, err := css[0].CoreV1().ConfigMaps("default").Create(ctx, harness.ConfigMap("default", "abuse"), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	reqs := abusiveRequests()
	idle, err := harness.ProcStatusBytes(s.Pid(), "RssAnon")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		// Phase 1: 16 clients, 30 s, the abusive requests in turn.
		sampler := sampleRSS(s.Pid())
		var sent, bad atomic.Int64
		var badMu sync.Mutex
		var firstBad string
		deadline := time.Now().Add(30 * time.Second)
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; time.Now().Before(deadline) && i < w+1000; i++ {
					r := reqs[i%len(reqs)]
					req, _ := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
					req.Header.Set("Authorization", "Bearer "+tok)
					req.Header.Set("Content-Type", r.ctype)
					resp, err := cl.Do(req)
					sent.Add(1)
					code := 0
					if err == nil {
						code = resp.StatusCode
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					if code < 200 || code >= 500 {
						bad.Add(1)
						badMu.Lock()
						if firstBad == "" {
							firstBad = fmt.Sprintf("%s %s: %d %v", r.method, r.path, code, err)
						}
						badMu.Unlock()
					}
				}
			}(w)
		}
		wg.Wait()
		peak := sampler.end()
		if bad.Load() > 0 {
			b.Errorf("%d of %d abusive requests answered neither 2xx nor 4xx; first: %s", bad.Load(), sent.Load(), firstBad)
		}

		// Phase 2: a namespace of 300 x 1 MB ConfigMaps, deleted.
		ns := fmt.Sprintf("big-%d", it)
		if _, err := css[0].CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		val := strings.Repeat("v", 1000<<10)
		sampler = sampleRSS(s.Pid())
		_ = run(b, 16, 300, func(ctx context.Context, w, i int) error {
			c := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d-%d", w, i)}, Data: map[string]string{"v": val}}
			_, err := css[w].CoreV1().ConfigMaps(ns).Create(ctx, c, metav1.CreateOptions{})
			return err
		})
		peakFill := sampler.end()
		before, _ := harness.ProcStatusBytes(s.Pid(), "RssAnon")
		sampler = sampleRSS(s.Pid())
		start := time.Now()
		if err := css[0].CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := css[0].CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(start)
		peakDelete := sampler.end()

		over := float64(peak-idle) / (1 << 20)
		overDelete := float64(peakDelete-before) / (1 << 20)
		overFill := float64(peakFill-idle) / (1 << 20)
		b.ReportMetric(float64(idle)/(1<<20), "idle-MB")
		b.ReportMetric(over, "abuse-over-idle-MB")
		b.ReportMetric(overDelete, "nsdelete-over-before-MB")
		b.ReportMetric(overFill, "fill-over-idle-MB")
		b.ReportMetric(float64(sent.Load()), "abusive-requests")
		b.ReportMetric(took.Seconds(), "nsdelete-s")
		summary.Set("abuse: server memory over idle, 16 clients x 30 s", over, "MB", "< 256")
		summary.Set("abuse: ratio of that to the 256 MB budget", over*(1<<20)/abuseBudget, "x", "< 1")
		summary.Set("abuse: namespace of 300 x 1 MB deleted, memory over before it", overDelete, "MB", "< 256")
		summary.Set("abuse: filling that namespace (16 clients), memory over idle", overFill, "MB", "")
		fmt.Fprintf(os.Stderr, "apibench: abuse: idle %.0f MB, peak %.0f MB over idle after %d requests (%d bad); fill %.0f MB over idle; namespace delete %.1f s, %.0f MB over before it\n",
			float64(idle)/(1<<20), over, sent.Load(), bad.Load(), overFill, took.Seconds(), overDelete)
		if peak-idle > abuseBudget || peakDelete-before > abuseBudget {
			b.Errorf("server memory rose past the %d MB budget: %.0f MB under abuse, %.0f MB deleting a namespace", abuseBudget>>20, over, overDelete)
		}
	}
}
