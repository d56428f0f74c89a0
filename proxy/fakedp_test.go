package proxy

import (
	"errors"
	"slices"
	"sync"

	"github.com/skep-dev/skep/proxy/datapath"
)

// fakeDatapath is an in-memory Datapath that records every write, for tests
// of the control loop without BPF.
type fakeDatapath struct {
	mu       sync.Mutex
	services map[datapath.Frontend]datapath.Service
	upserts  []datapath.Service
	deletes  []datapath.Frontend
	// failUpserts makes the next n upserts fail.
	failUpserts int
	counts      map[datapath.Frontend]datapath.Counts
	// changed is signalled (non-blocking) after every successful write.
	changed chan struct{}
}

func newFakeDatapath(initial ...datapath.Service) *fakeDatapath {
	f := &fakeDatapath{services: map[datapath.Frontend]datapath.Service{}, changed: make(chan struct{}, 1)}
	for _, s := range initial {
		f.services[s.Frontend] = s
	}
	return f
}

func (f *fakeDatapath) UpsertService(s datapath.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failUpserts > 0 {
		f.failUpserts--
		return errors.New("injected failure")
	}
	s.Backends = slices.Clone(s.Backends)
	f.services[s.Frontend] = s
	f.upserts = append(f.upserts, s)
	f.signal()
	return nil
}

func (f *fakeDatapath) DeleteService(fr datapath.Frontend) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, fr)
	f.deletes = append(f.deletes, fr)
	f.signal()
	return nil
}

func (f *fakeDatapath) Services() ([]datapath.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]datapath.Service, 0, len(f.services))
	for _, s := range f.services {
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeDatapath) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// get returns the programmed service at frontend fr (by its String form).
func (f *fakeDatapath) get(fr string) (datapath.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, s := range f.services {
		if k.String() == fr {
			return s, true
		}
	}
	return datapath.Service{}, false
}

func (f *fakeDatapath) writes() (upserts, deletes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.upserts), len(f.deletes)
}

func (f *fakeDatapath) frontends() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.services {
		out = append(out, k.String())
	}
	slices.Sort(out)
	return out
}

// countingDatapath adds per-frontend counters to the fake.
type countingDatapath struct{ *fakeDatapath }

func (c countingDatapath) ServiceCounters() (map[datapath.Frontend]datapath.Counts, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts, nil
}

// batchingDatapath adds UpsertServices to the fake, counting batches.
type batchingDatapath struct {
	*fakeDatapath
	batches   int
	failBatch bool
}

func (b *batchingDatapath) UpsertServices(svcs []datapath.Service) error {
	b.mu.Lock()
	b.batches++
	fail := b.failBatch
	b.mu.Unlock()
	if fail {
		return errors.New("injected batch failure")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range svcs {
		s.Backends = slices.Clone(s.Backends)
		b.services[s.Frontend] = s
	}
	b.signal()
	return nil
}
