package apiserver

import (
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// patchTypes are the patch media types FuzzPatchMemory picks from.
var patchTypes = []string{"application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"}

// patchSeeds are patches known to amplify: copies doubling a value, a
// document nested ten thousand deep, many operations.
func patchSeeds() []string {
	doubling := []string{`{"op":"add","path":"/metadata/annotations","value":{"x":["` + strings.Repeat("y", 512) + `"]}}`}
	for i := 0; i < 30; i++ {
		doubling = append(doubling, `{"op":"copy","from":"/metadata/annotations/x","path":"/metadata/annotations/x/-"}`)
	}
	tests := make([]string, 2000)
	for i := range tests {
		tests[i] = `{"op":"test","path":"/metadata/name","value":"fuzz"}`
	}
	return []string{
		"[" + strings.Join(doubling, ",") + "]",
		"[" + strings.Join(tests, ",") + "]",
		strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"j","env":[{"name":"A","value":"` + strings.Repeat("z", 4096) + `"}]}]}}}}`,
		`{"metadata":{"labels":{"a":"b"}},"spec":{"replicas":3}}`,
	}
}

// FuzzPatchMemory: whatever the patch, applying it to a deployment is
// answered with 2xx or 4xx and allocates at most 512 MiB in all, so its live
// heap is bounded below that (the 1.9 KB patch of 17 doubling copies took
// 1.2 GB live). Allocation is counted rather than the heap sampled so that
// the fuzzer runs fast; TestPatchAmplificationBounded samples the heap.
// Run: go test -run '^$' -fuzz FuzzPatchMemory -fuzztime 60s ./controlplane/apiserver
func FuzzPatchMemory(f *testing.F) {
	for i, s := range patchSeeds() {
		for pt := range patchTypes {
			if i%2 == pt%2 || i == 0 {
				f.Add(uint8(pt), []byte(s))
			}
		}
	}
	h, tok := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, pt uint8, patch []byte) {
		req := httptest.NewRequest("PATCH", "/apis/apps/v1/namespaces/default/deployments/fuzz?dryRun=All", strings.NewReader(string(patch)))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", patchTypes[int(pt)%len(patchTypes)])
		rec := httptest.NewRecorder()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h.ServeHTTP(rec, req)
		runtime.ReadMemStats(&after)
		if rec.Code >= 500 {
			t.Fatalf("%s %.200q: %d %s", req.Header.Get("Content-Type"), patch, rec.Code, rec.Body)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 512<<20 {
			t.Fatalf("%s %.200q allocated %d MiB", req.Header.Get("Content-Type"), patch, alloc>>20)
		}
	})
}
