package proxy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/skep-dev/skep/proxy/datapath"
)

// applier keeps what was written to the data path, per frontend, and writes
// only the difference between that and a service's desired frontends.
// Data path calls are serialised: the Datapath interface promises ordering
// within one call, not safety between concurrent ones.
type applier struct {
	mu      sync.Mutex
	dp      datapath.Datapath
	applied map[datapath.Frontend]datapath.Service
	// owned lists the frontends each service key (namespace/name) wrote, so
	// the frontends a service no longer wants can be deleted.
	owned map[string]map[datapath.Frontend]struct{}
	// wantedBy lists, per frontend, the service keys whose last sync desired
	// it. Two services may claim one frontend (externalIPs are not checked
	// for overlap): the last to write it owns it, and when the owner lets
	// go the frontend is handed over to another claimant, not deleted.
	wantedBy map[datapath.Frontend]map[string]struct{}
	wants    map[string][]datapath.Frontend
	backends int // sum of len(Backends) over applied, for the gauge
	metrics  *metrics
}

func newApplier(dp datapath.Datapath, m *metrics) *applier {
	return &applier{
		dp:       dp,
		applied:  map[datapath.Frontend]datapath.Service{},
		owned:    map[string]map[datapath.Frontend]struct{}{},
		wantedBy: map[datapath.Frontend]map[string]struct{}{},
		wants:    map[string][]datapath.Frontend{},
		metrics:  m,
	}
}

// keyOf returns the service key ("namespace/name") of a data path service
// name ("namespace/name:port"). Namespaces and names are DNS labels, so the
// first colon ends the key.
func keyOf(name string) string {
	k, _, _ := strings.Cut(name, ":")
	return k
}

// adopt takes what the data path has programmed (pinned maps that survived a
// restart) as the applied state, so the first reconcile writes only what
// changed while the proxy was away and nothing is flushed. It returns the
// service keys found, which the caller must reconcile even if their Service
// is gone by now.
func (a *applier) adopt() ([]string, error) {
	svcs, err := a.dp.Services()
	if err != nil {
		return nil, fmt.Errorf("read programmed services: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range svcs {
		a.put(keyOf(s.Name), s)
	}
	keys := make([]string, 0, len(a.owned))
	for k := range a.owned {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	a.updateGauges()
	return keys, nil
}

// put records s as applied and owned by key, taking it from any other owner.
func (a *applier) put(key string, s datapath.Service) {
	if old, ok := a.applied[s.Frontend]; ok {
		a.backends -= len(old.Backends)
		if prev := keyOf(old.Name); prev != key {
			delete(a.owned[prev], s.Frontend)
			if len(a.owned[prev]) == 0 {
				delete(a.owned, prev)
			}
		}
	}
	a.applied[s.Frontend] = s
	a.backends += len(s.Backends)
	if a.owned[key] == nil {
		a.owned[key] = map[datapath.Frontend]struct{}{}
	}
	a.owned[key][s.Frontend] = struct{}{}
}

func (a *applier) remove(key string, f datapath.Frontend) {
	if old, ok := a.applied[f]; ok {
		a.backends -= len(old.Backends)
		delete(a.applied, f)
	}
	delete(a.owned[key], f)
	if len(a.owned[key]) == 0 {
		delete(a.owned, key)
	}
}

// apply makes the data path hold exactly want for service key: upserts for
// new or changed frontends first, then deletes for the ones no longer wanted
// (so a frontend that moves between ports of one service never flaps). A
// frontend key lets go of that another service still wants is not deleted:
// those services are returned in handOver, to be synced again so one of them
// writes it. writes counts data path writes; on error the applied state
// reflects what did succeed and a retry writes the rest.
func (a *applier) apply(key string, want []datapath.Service) (writes int, handOver []string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.updateGauges()
	a.setWants(key, want)
	var errs []error
	wanted := make(map[datapath.Frontend]struct{}, len(want))
	for _, s := range want {
		wanted[s.Frontend] = struct{}{}
		if cur, ok := a.applied[s.Frontend]; ok && sameService(cur, s) {
			continue
		}
		writes++
		a.metrics.writes.WithLabelValues("upsert").Inc()
		if err := a.dp.UpsertService(s); err != nil {
			errs = append(errs, fmt.Errorf("upsert %s: %w", s.Frontend, err))
			continue
		}
		a.put(key, s)
	}
	for f := range a.owned[key] {
		if _, ok := wanted[f]; ok {
			continue
		}
		if others := a.wantedBy[f]; len(others) > 0 {
			delete(a.owned[key], f)
			for k := range others {
				handOver = append(handOver, k)
			}
			continue
		}
		writes++
		a.metrics.writes.WithLabelValues("delete").Inc()
		if err := a.dp.DeleteService(f); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", f, err))
			continue
		}
		a.remove(key, f)
	}
	if len(a.owned[key]) == 0 {
		delete(a.owned, key)
	}
	slices.Sort(handOver)
	return writes, slices.Compact(handOver), errors.Join(errs...)
}

// setWants records that key now desires exactly the frontends of want.
func (a *applier) setWants(key string, want []datapath.Service) {
	for _, f := range a.wants[key] {
		delete(a.wantedBy[f], key)
		if len(a.wantedBy[f]) == 0 {
			delete(a.wantedBy, f)
		}
	}
	fs := make([]datapath.Frontend, 0, len(want))
	for _, s := range want {
		fs = append(fs, s.Frontend)
		if a.wantedBy[s.Frontend] == nil {
			a.wantedBy[s.Frontend] = map[string]struct{}{}
		}
		a.wantedBy[s.Frontend][key] = struct{}{}
	}
	if len(fs) == 0 {
		delete(a.wants, key)
	} else {
		a.wants[key] = fs
	}
}

// claim gives each applied frontend that a service in want (service key →
// desired services) desires to that service, whatever name the data path
// gave it back. Names are how adopted frontends find their owner, and a data
// path may store them shortened; without this, the sync of a misread key
// would delete a frontend that a live service still serves.
func (a *applier) claim(want map[string][]datapath.Service) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, svcs := range want {
		for _, s := range svcs {
			cur, ok := a.applied[s.Frontend]
			if !ok {
				continue
			}
			if prev := keyOf(cur.Name); prev != key {
				delete(a.owned[prev], s.Frontend)
				if len(a.owned[prev]) == 0 {
					delete(a.owned, prev)
				}
				if a.owned[key] == nil {
					a.owned[key] = map[datapath.Frontend]struct{}{}
				}
				a.owned[key][s.Frontend] = struct{}{}
			}
		}
	}
}

// applyBatch writes, in one data path call, every upsert the services in
// want (service key → desired services) need; deletes are left to the
// per-key syncs that follow. A frontend wanted by two services goes to the
// first: the per-key syncs settle the conflict as they always do.
func (a *applier) applyBatch(b datapath.BatchUpserter, want map[string][]datapath.Service) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.updateGauges()
	var (
		batch []datapath.Service
		keys  []string
		seen  = map[datapath.Frontend]bool{}
	)
	for key, svcs := range want {
		for _, s := range svcs {
			if seen[s.Frontend] {
				continue
			}
			seen[s.Frontend] = true
			if cur, ok := a.applied[s.Frontend]; ok && sameService(cur, s) {
				continue
			}
			batch = append(batch, s)
			keys = append(keys, key)
		}
	}
	if len(batch) == 0 {
		return 0, nil
	}
	a.metrics.writes.WithLabelValues("upsert").Add(float64(len(batch)))
	if err := b.UpsertServices(batch); err != nil {
		return 0, fmt.Errorf("batch upsert of %d services: %w", len(batch), err)
	}
	for i, s := range batch {
		a.put(keys[i], s)
	}
	return len(batch), nil
}

// drift re-reads the data path and makes the applied state what it finds:
// frontends that vanished or changed behind the proxy's back, and strays it
// never wrote. It returns the service keys to sync again, which then write
// the difference as always. Done under the lock, so no apply interleaves
// with the read.
func (a *applier) drift() ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.updateGauges()
	got, err := a.dp.Services()
	if err != nil {
		return nil, fmt.Errorf("read programmed services: %w", err)
	}
	keys := map[string]bool{}
	seen := make(map[datapath.Frontend]bool, len(got))
	for _, g := range got {
		seen[g.Frontend] = true
		cur, ok := a.applied[g.Frontend]
		switch {
		case !ok:
			keys[keyOf(g.Name)] = true
			a.put(keyOf(g.Name), g)
		case !sameService(cur, g):
			key := keyOf(cur.Name)
			keys[key] = true
			g.Name = cur.Name // keep the owner; the name is rewritten if it differs
			a.put(key, g)
		}
	}
	for f, cur := range a.applied {
		if !seen[f] {
			keys[keyOf(cur.Name)] = true
			a.remove(keyOf(cur.Name), f)
		}
	}
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// count returns how many frontends are applied.
func (a *applier) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.applied)
}

// snapshot returns a copy of the applied state, for tests and tables.
func (a *applier) snapshot() map[datapath.Frontend]datapath.Service {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[datapath.Frontend]datapath.Service, len(a.applied))
	for f, s := range a.applied {
		out[f] = s
	}
	return out
}

func (a *applier) updateGauges() {
	a.metrics.frontends.Set(float64(len(a.applied)))
	a.metrics.backends.Set(float64(a.backends))
}

// sameService reports whether two services program the same thing. Backends
// compare as a set: a data path may hand them back in slot order after a
// restart, and rewriting a service only to reorder it would be a needless
// write on the hitless-restart path.
func sameService(a, b datapath.Service) bool {
	if a.Frontend != b.Frontend || a.Name != b.Name || a.AffinityTimeout != b.AffinityTimeout ||
		len(a.Backends) != len(b.Backends) {
		return false
	}
	x, y := slices.Clone(a.Backends), slices.Clone(b.Backends)
	sortBackends(x)
	sortBackends(y)
	return slices.Equal(x, y)
}
