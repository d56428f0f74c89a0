package apibench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"
)

// Percentile returns the p-th percentile (0..100) of ds, nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	i = max(0, min(len(s)-1, i))
	return s[i]
}

// Summary collects the figures of one run for the closing table.
type Summary struct {
	mu   sync.Mutex
	rows map[string]row
}

type row struct {
	value  float64
	unit   string
	target string
}

// Set records (or replaces, for a later and longer benchmark round) a figure.
func (s *Summary) Set(name string, value float64, unit, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rows == nil {
		s.rows = map[string]row{}
	}
	s.rows[name] = row{value, unit, target}
}

// Get returns a recorded figure.
func (s *Summary) Get(name string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rows[name]
	return r.value, ok
}

// Print writes the table, sorted by name.
func (s *Summary) Print(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rows) == 0 {
		return
	}
	names := make([]string, 0, len(s.rows))
	for n := range s.rows {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\napibench summary (2-core shared machine: figures are provisional)")
	fmt.Fprintf(w, "%-50s %12s  %-6s %s\n", "figure", "value", "unit", "target")
	for _, n := range names {
		r := s.rows[n]
		fmt.Fprintf(w, "%-50s %12.2f  %-6s %s\n", n, r.value, r.unit, r.target)
	}
}
