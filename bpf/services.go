package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skep-dev/skep/proxy/datapath"
)

var (
	_ datapath.Datapath      = (*LB)(nil)
	_ datapath.BatchUpserter = (*LB)(nil)
	_ datapath.Counters      = (*LB)(nil)
)

// backendKey identifies a backend map entry. Services that share an
// endpoint (same address, port and protocol) share its backend id.
type backendKey struct {
	addr  netip.AddrPort
	proto datapath.Proto
}

type backendEntry struct {
	id     uint32
	state  datapath.BackendState // as written in the map
	refs   int                   // how many service slots name it
	active int                   // how many of those are Active slots
	// external: an External frontend named it, so conntrack (used only
	// by the tc path) may hold flows to it.
	external bool
}

// service is what one frontend holds in the maps.
type service struct {
	revNat   uint16
	name     string
	affinity uint32   // seconds
	slots    []uint32 // backend ids of slots 1..len: Active first, then Terminating
	count    uint16   // Active ones
	// gen is the generation of the slots: they sit in bank gen&1 and carry
	// gen, so a reader can tell them from a replaced service's (lb.h).
	gen uint32
}

// state mirrors the maps: it is rebuilt from them on Load, so a restarted
// process allocates ids that do not collide with the pinned ones.
type state struct {
	services    map[datapath.Frontend]*service
	backends    map[backendKey]*backendEntry
	byID        map[uint32]backendKey
	revNats     map[uint16]datapath.Frontend
	nextBackend uint32
	nextRevNat  uint16
	// lastGen is the last slot generation handed out: one counter for
	// every service, so a generation is never reused (not even by a
	// frontend deleted and made again) while a reader may hold it.
	lastGen uint32
	// strays are slots of no service (a writer died before slot 0).
	strays []lbLb4Key
}

func newState() *state {
	return &state{
		services:    map[datapath.Frontend]*service{},
		backends:    map[backendKey]*backendEntry{},
		byID:        map[uint32]backendKey{},
		revNats:     map[uint16]datapath.Frontend{},
		nextBackend: 1,
		nextRevNat:  1,
	}
}

// frontendKey is the key of a frontend's slot 0 (slot 0) or of a slot of
// bank 0.
func frontendKey(f datapath.Frontend, slot uint16) lbLb4Key {
	return lbLb4Key{
		Address: ip4(f.IP),
		Dport:   port16(f.Port),
		Proto:   uint8(f.Proto),
		Scope:   uint8(f.Scope),
		Slot:    slot,
	}
}

// slotKey is the key of backend slot (1..) of a frontend's generation gen.
func slotKey(f datapath.Frontend, gen uint32, slot uint16) lbLb4Key {
	k := frontendKey(f, slot)
	k.Bank = uint16(gen & 1)
	return k
}

// nextGen hands out a slot generation, never 0 (a zeroed slot) and never
// one of the same bank as cur.
func (st *state) nextGen(cur uint32) uint32 {
	g := st.lastGen + 1
	for g == 0 || g&1 == cur&1 {
		g++
	}
	st.lastGen = g
	return g
}

func keyFrontend(k *lbLb4Key) datapath.Frontend {
	return datapath.Frontend{
		IP:    addr4(k.Address),
		Port:  hostPort(k.Dport),
		Proto: datapath.Proto(k.Proto),
		Scope: datapath.Scope(k.Scope),
	}
}

func validFrontend(f datapath.Frontend) error {
	if !f.IP.Is4() {
		return fmt.Errorf("frontend %s: only IPv4 for now", f)
	}
	if f.Proto != datapath.TCP && f.Proto != datapath.UDP {
		return fmt.Errorf("frontend %s: protocol must be TCP or UDP", f)
	}
	if f.Scope != datapath.ScopeInternal && f.Scope != datapath.ScopeExternal {
		return fmt.Errorf("frontend %s: unknown scope %d", f, f.Scope)
	}
	return nil
}

// UpsertService makes svc.Frontend serve exactly svc. Writes go backends →
// slots → slot 0 → old slots removed → unreferenced backends removed. When
// the slots change (other than by dropping a tail) the new ones go to the
// other bank under a new generation and slot 0 flips to them in one write,
// so a lookup sees the old service or the new one, never a mix (lb.h).
func (lb *LB) UpsertService(svc datapath.Service) error {
	return lb.UpsertServices([]datapath.Service{svc})
}

// upsert is the plan for one service of an UpsertServices call.
type upsert struct {
	f        datapath.Frontend
	active   int
	term     int
	backends []datapath.Backend // Active first, then Terminating
	old      *service
	cur      *service
}

// UpsertServices is UpsertService for many services at once, with the same
// order across all of them (every backend, then every slot, then every
// slot 0, ...) in a few batched syscalls: a proxy's initial sync of 10,000
// services takes a fraction of a second. On a failed write the in-memory
// view is rebuilt from the maps (as after a restart) and the caller may
// retry; the maps stay consistent, since nothing is deleted before every
// write succeeded.
func (lb *LB) UpsertServices(svcs []datapath.Service) error {
	plans := make([]upsert, 0, len(svcs))
	seenFE := map[datapath.Frontend]int{}
	for _, svc := range svcs {
		p, err := planUpsert(svc)
		if err != nil {
			return err
		}
		if i, dup := seenFE[p.f]; dup {
			plans[i] = p // the last one wins
			continue
		}
		seenFE[p.f] = len(plans)
		plans = append(plans, p)
	}

	lb.mu.Lock()
	defer lb.mu.Unlock()
	if err := lb.writeUpserts(plans); err != nil {
		if rerr := lb.resync(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("resync: %w", rerr))
		}
		return err
	}

	// 5. The old generation's slots (or, for a service that kept its
	// generation, those past its new end), then backends no slot names
	// any more. A reader still on the old generation misses them and
	// reads slot 0 again.
	m := &lb.objs.lbMaps
	var (
		stale []lbLb4Key
		gone  []goneBackend
	)
	for _, p := range plans {
		if p.old == nil {
			continue
		}
		from := 0
		if p.old.gen == p.cur.gen {
			from = len(p.cur.slots)
		}
		for i := from; i < len(p.old.slots); i++ {
			stale = append(stale, slotKey(p.f, p.old.gen, uint16(i+1)))
		}
	}
	var errs []error
	if err := lb.deleteKeys(m.Lb4Services, stale); err != nil {
		errs = append(errs, fmt.Errorf("delete slots: %w", err))
	}
	left := map[uint16]map[uint32]bool{}
	for _, p := range plans {
		if p.old != nil {
			gone = append(gone, lb.releaseBackends(p.old.slots, int(p.old.count))...)
			if l := leftActive(p.old, p.cur); len(l) > 0 {
				left[p.cur.revNat] = l
			}
		}
	}
	if err := lb.purgeGone(gone); err != nil {
		errs = append(errs, err)
	}
	if err := lb.purgeAffinity(left); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// leftActive returns the backends of old's Active set that are not in
// cur's, when the service has ClientIP affinity: clients pinned to them must
// balance anew. (The programs only check that a pinned backend is Active
// at all, and a backend shared with another service may well be.)
func leftActive(old, cur *service) map[uint32]bool {
	if old.affinity == 0 && cur.affinity == 0 {
		return nil
	}
	keep := make(map[uint32]bool, cur.count)
	for _, id := range cur.slots[:cur.count] {
		keep[id] = true
	}
	var left map[uint32]bool
	for _, id := range old.slots[:old.count] {
		if !keep[id] {
			if left == nil {
				left = map[uint32]bool{}
			}
			left[id] = true
		}
	}
	return left
}

// purgeAffinity deletes the ClientIP affinity entries of services (by id)
// that name the given backends; a nil set means every entry of the
// service. As kube-proxy does, affinity holds only to a backend the
// service still has Active.
func (lb *LB) purgeAffinity(bySvc map[uint16]map[uint32]bool) error {
	if len(bySvc) == 0 {
		return nil
	}
	var dead []lbLb4AffinityKey
	err := batchRead(lb.objs.Lb4Affinity, func(k *lbLb4AffinityKey, v *lbLb4AffinityVal) {
		ids, ok := bySvc[k.RevNatId]
		if ok && (ids == nil || ids[v.BackendId]) {
			dead = append(dead, *k)
		}
	})
	if err != nil {
		return fmt.Errorf("purge affinity: %w", err)
	}
	var errs []error
	for i := range dead {
		if err := lb.objs.Lb4Affinity.Delete(&dead[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("purge affinity: %w", errors.Join(errs...))
	}
	return nil
}

func planUpsert(svc datapath.Service) (upsert, error) {
	f := svc.Frontend
	f.IP = f.IP.Unmap() // an IPv4 address that came from a 16-byte net.IP
	p := upsert{f: f}
	if err := validFrontend(f); err != nil {
		return p, err
	}
	// Active first, then Terminating; a repeated endpoint counts once.
	seen := map[netip.AddrPort]bool{}
	var term []datapath.Backend
	for _, b := range svc.Backends {
		b.IP = b.IP.Unmap()
		if !b.IP.Is4() {
			return p, fmt.Errorf("service %s: backend %s: only IPv4 for now", f, b.AddrPort())
		}
		if seen[b.AddrPort()] {
			continue
		}
		seen[b.AddrPort()] = true
		if b.State == datapath.BackendActive {
			p.backends = append(p.backends, b)
		} else {
			term = append(term, b)
		}
	}
	p.active, p.term = len(p.backends), len(term)
	p.backends = append(p.backends, term...)
	if len(p.backends) > 65535 {
		return p, fmt.Errorf("service %s: %d backends, at most 65535", f, len(p.backends))
	}
	p.cur = &service{name: svc.Name, count: uint16(p.active)}
	if svc.AffinityTimeout > 0 {
		p.cur.affinity = uint32((svc.AffinityTimeout + time.Second - 1) / time.Second)
	}
	return p, nil
}

// writeUpserts does steps 1-4 of the update order for every plan: it only
// adds and overwrites map entries.
func (lb *LB) writeUpserts(plans []upsert) error {
	m := &lb.objs.lbMaps
	st := lb.st

	// 1. Backends: new ones get an id and an entry; state changes are
	// written in place (the id, and so every flow's conntrack, stays).
	var all []uint32
	for i := range plans {
		p := &plans[i]
		p.old = st.services[p.f]
		p.cur.slots = make([]uint32, 0, len(p.backends))
		for _, b := range p.backends {
			id := lb.refBackend(backendKey{b.AddrPort(), p.f.Proto}, b.State, p.f.Scope == datapath.ScopeExternal)
			p.cur.slots = append(p.cur.slots, id)
		}
		all = append(all, p.cur.slots...)
	}
	if err := lb.writeBackends(all); err != nil {
		return fmt.Errorf("write backends: %w", err)
	}

	// 2. Service ids and reverse-NAT entries, before any slot names them.
	var (
		revIDs   []uint16
		revVals  []lbLb4Revnat
		nameIDs  []uint16
		nameVals []lbLb4SvcName
	)
	for i := range plans {
		p := &plans[i]
		if p.old != nil {
			p.cur.revNat = p.old.revNat
		} else {
			id, err := st.allocRevNat(p.f)
			if err != nil {
				return fmt.Errorf("service %s: %w", p.f, err)
			}
			p.cur.revNat = id
			revIDs = append(revIDs, id)
			revVals = append(revVals, lbLb4Revnat{Address: ip4(p.f.IP), Port: port16(p.f.Port)})
		}
		if p.old == nil || p.old.name != p.cur.name {
			nameIDs = append(nameIDs, p.cur.revNat)
			nameVals = append(nameVals, *serviceName(p.cur.name))
		}
	}
	if len(revIDs) > 0 {
		if _, err := m.Lb4Revnat.BatchUpdate(revIDs, revVals, nil); err != nil {
			return fmt.Errorf("write rev-nat: %w", err)
		}
	}
	if len(nameIDs) > 0 {
		if _, err := m.Lb4SvcNames.BatchUpdate(nameIDs, nameVals, nil); err != nil {
			return fmt.Errorf("write names: %w", err)
		}
	}

	// 3. Slots 1..n. A service whose slots are unchanged, or only lose a
	// tail, keeps its generation: slot 0 alone changes (and the tail goes
	// in step 5), and a reader of the old slot 0 finds each slot it may
	// pick as it was or missing. Any other change writes the whole list
	// into the other bank under a new generation, which no reader uses
	// until slot 0 names it. (Writing in place instead would let a reader
	// holding the old count pick a slot that now names another backend,
	// a Terminating one say.)
	var (
		keys []lbLb4Key
		vals []lbLb4Service
	)
	for i := range plans {
		p := &plans[i]
		if p.old != nil && p.old.gen != 0 && len(p.cur.slots) <= len(p.old.slots) &&
			slices.Equal(p.cur.slots, p.old.slots[:len(p.cur.slots)]) {
			p.cur.gen = p.old.gen
			continue
		}
		var cur uint32
		if p.old != nil {
			cur = p.old.gen
		}
		p.cur.gen = st.nextGen(cur)
		for j, id := range p.cur.slots {
			keys = append(keys, slotKey(p.f, p.cur.gen, uint16(j+1)))
			vals = append(vals, lbLb4Service{BackendId: id, Gen: p.cur.gen})
		}
	}
	if len(keys) > 0 {
		if _, err := m.Lb4Services.BatchUpdate(keys, vals, nil); err != nil {
			return fmt.Errorf("write slots: %w", err)
		}
	}

	// 4. Slot 0: from here on lookups use the new count and generation.
	keys, vals = keys[:0], vals[:0]
	for _, p := range plans {
		c, o := p.cur, p.old
		if o != nil && o.count == c.count && len(o.slots) == len(c.slots) && o.affinity == c.affinity && o.gen == c.gen {
			continue
		}
		v := lbLb4Service{Count: c.count, Qcount: uint16(p.term), RevNatId: c.revNat, AffinityTimeout: c.affinity, Gen: c.gen}
		if c.affinity > 0 {
			v.Flags |= svcFlagAffinity
		}
		keys = append(keys, frontendKey(p.f, 0))
		vals = append(vals, v)
	}
	if len(keys) > 0 {
		if _, err := m.Lb4Services.BatchUpdate(keys, vals, nil); err != nil {
			return fmt.Errorf("write slot 0: %w", err)
		}
	}
	for _, p := range plans {
		st.services[p.f] = p.cur
	}
	return nil
}

// deleteKeys deletes keys in one batch, falling back to one by one (and
// ignoring missing ones) if the batch stops on an error.
func (lb *LB) deleteKeys(m *ebpf.Map, keys []lbLb4Key) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchDelete(keys, nil); err == nil {
		return nil
	}
	var errs []error
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// resync rebuilds the in-memory view from the maps after a failed write,
// dropping whatever the failed write left unreferenced.
func (lb *LB) resync() error {
	st, err := readState(&lb.objs.lbMaps)
	if err != nil {
		return err
	}
	lb.st = st
	lb.gcOrphans()
	return nil
}

// DeleteService removes a frontend: slot 0 first (lookups stop finding it),
// then its slots, its reverse-NAT entry and the backends only it named. For
// UDP, flows and connected sockets to those backends are purged.
func (lb *LB) DeleteService(f datapath.Frontend) error {
	f.IP = f.IP.Unmap()
	if err := validFrontend(f); err != nil {
		return err
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	m := &lb.objs.lbMaps
	st := lb.st
	old := st.services[f]
	if old == nil {
		return nil
	}
	k := frontendKey(f, 0)
	if err := m.Lb4Services.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %s: %w", f, err)
	}
	delete(st.services, f)
	var errs []error
	slots := make([]lbLb4Key, len(old.slots))
	for i := range old.slots {
		slots[i] = slotKey(f, old.gen, uint16(i+1))
	}
	if err := lb.deleteKeys(m.Lb4Services, slots); err != nil {
		errs = append(errs, fmt.Errorf("delete slots: %w", err))
	}
	if err := m.Lb4Revnat.Delete(old.revNat); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("delete rev-nat: %w", err))
	}
	if err := m.Lb4SvcNames.Delete(old.revNat); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("delete name: %w", err))
	}
	// The id may be reused later: its counters start again at zero, and
	// no client of the new service inherits this one's affinity.
	if err := lb.resetCounters(old.revNat); err != nil {
		errs = append(errs, fmt.Errorf("reset counters: %w", err))
	}
	if old.affinity > 0 {
		if err := lb.purgeAffinity(map[uint16]map[uint32]bool{old.revNat: nil}); err != nil {
			errs = append(errs, err)
		}
	}
	delete(st.revNats, old.revNat)
	gone := lb.releaseBackends(old.slots, int(old.count))
	if err := lb.purgeGone(gone); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete service %s: %w", f, errors.Join(errs...))
	}
	return nil
}

// Services reads the programmed services back from the maps.
func (lb *LB) Services() ([]datapath.Service, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	st, err := readState(&lb.objs.lbMaps)
	if err != nil {
		return nil, err
	}
	return st.list(), nil
}

func (st *state) list() []datapath.Service {
	out := make([]datapath.Service, 0, len(st.services))
	for f, s := range st.services {
		svc := datapath.Service{Frontend: f, Name: s.name, AffinityTimeout: time.Duration(s.affinity) * time.Second}
		for i, id := range s.slots {
			bk := st.byID[id]
			state := datapath.BackendActive
			if i >= int(s.count) {
				state = datapath.BackendTerminating
			}
			svc.Backends = append(svc.Backends, datapath.Backend{IP: bk.addr.Addr(), Port: bk.addr.Port(), State: state})
		}
		out = append(out, svc)
	}
	slices.SortFunc(out, func(a, b datapath.Service) int { return compareFrontends(a.Frontend, b.Frontend) })
	return out
}

func compareFrontends(a, b datapath.Frontend) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	return int(a.Scope) - int(b.Scope)
}

const svcFlagAffinity = 1 << 0 // LB_SVC_F_AFFINITY

func serviceName(s string) *lbLb4SvcName {
	var n lbLb4SvcName
	for i := 0; i < len(s) && i < len(n.Name)-1; i++ {
		n.Name[i] = int8(s[i])
	}
	return &n
}

func nameString(n *lbLb4SvcName) string {
	b := make([]byte, 0, len(n.Name))
	for _, c := range n.Name {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// refBackend returns the id of a backend and takes one reference on it,
// making a new entry (written by writeBackends) if it has none. A backend
// shared by several services is Active while any of them has it Active (in
// Kubernetes its state is the pod's, so they agree anyway).
func (lb *LB) refBackend(k backendKey, state datapath.BackendState, external bool) uint32 {
	st := lb.st
	e := st.backends[k]
	if e == nil {
		id := st.nextBackend
		for id == 0 || st.byID[id] != (backendKey{}) {
			id++
		}
		st.nextBackend = id + 1
		e = &backendEntry{id: id, state: 255} // not in the map yet
		st.backends[k] = e
		st.byID[id] = k
	}
	e.refs++
	if state == datapath.BackendActive {
		e.active++
	}
	e.external = e.external || external
	return e.id
}

// writeBackends writes, in one batch, the backends among ids that are new
// or whose state changed.
func (lb *LB) writeBackends(ids []uint32) error {
	st := lb.st
	var (
		keys []uint32
		vals []lbLb4Backend
		ents []*backendEntry
	)
	queued := map[uint32]bool{}
	for _, id := range ids {
		k := st.byID[id]
		e := st.backends[k]
		want := e.want()
		if e.state == want || queued[id] {
			continue
		}
		queued[id] = true
		keys = append(keys, id)
		vals = append(vals, lbLb4Backend{Address: ip4(k.addr.Addr()), Port: port16(k.addr.Port()), Proto: uint8(k.proto), State: uint8(want)})
		ents = append(ents, e)
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := lb.objs.Lb4Backends.BatchUpdate(keys, vals, nil); err != nil {
		return err
	}
	for _, e := range ents {
		e.state = e.want()
	}
	return nil
}

func (e *backendEntry) want() datapath.BackendState {
	if e.active > 0 {
		return datapath.BackendActive
	}
	return datapath.BackendTerminating
}

// writeBackend writes e when its state differs from what the map holds.
func (lb *LB) writeBackend(k backendKey, e *backendEntry) error {
	want := e.want()
	if e.state == want {
		return nil
	}
	v := lbLb4Backend{Address: ip4(k.addr.Addr()), Port: port16(k.addr.Port()), Proto: uint8(k.proto), State: uint8(want)}
	if err := lb.objs.Lb4Backends.Put(e.id, &v); err != nil {
		return fmt.Errorf("write backend %s: %w", k.addr, err)
	}
	e.state = want
	return nil
}

func (lb *LB) unref(e *backendEntry, state datapath.BackendState) {
	e.refs--
	if state == datapath.BackendActive {
		e.active--
	}
}

// goneBackend is a backend whose last reference went.
type goneBackend struct {
	key      backendKey
	id       uint32
	external bool
}

// releaseBackends drops the references of a service's slots (the first
// count of them Active), deletes the backends left unreferenced and returns
// them, and rewrites the state of those that stay but lost their last Active
// reference.
func (lb *LB) releaseBackends(ids []uint32, count int) []goneBackend {
	st := lb.st
	var (
		gone []goneBackend
		dead []uint32
	)
	defer func() {
		if len(dead) == 0 {
			return
		}
		if _, err := lb.objs.Lb4Backends.BatchDelete(dead, nil); err == nil {
			return
		}
		for _, id := range dead {
			if err := lb.objs.Lb4Backends.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				lb.log.Warn("delete backend", "id", id, "err", err)
			}
		}
	}()
	for i, id := range ids {
		k, ok := st.byID[id]
		if !ok {
			continue
		}
		e := st.backends[k]
		state := datapath.BackendTerminating
		if i < count {
			state = datapath.BackendActive
		}
		lb.unref(e, state)
		if e.refs > 0 {
			if err := lb.writeBackend(k, e); err != nil {
				lb.log.Warn("write backend state", "id", id, "err", err)
			}
			continue
		}
		dead = append(dead, id)
		delete(st.backends, k)
		delete(st.byID, id)
		gone = append(gone, goneBackend{k, id, e.external})
	}
	return gone
}

func (st *state) allocRevNat(f datapath.Frontend) (uint16, error) {
	// Round robin over 1..65535, so a freed id is reused as late as
	// possible (LRU affinity entries of the old service age out first).
	for range 65535 {
		id := st.nextRevNat
		st.nextRevNat++
		if st.nextRevNat == 0 {
			st.nextRevNat = 1
		}
		if _, used := st.revNats[id]; !used {
			st.revNats[id] = f
			return id, nil
		}
	}
	return 0, errors.New("out of service ids (65535)")
}

func (lb *LB) resetCounters(id uint16) error {
	zero := make([]lbLb4Counters, ebpf.MustPossibleCPU())
	return lb.objs.Lb4Counters.Put(uint32(id), zero)
}

// readState rebuilds the service table from the maps.
func readState(m *lbMaps) (*state, error) {
	st := newState()
	type slotVal struct {
		slot uint16
		bank uint16
		id   uint32
		gen  uint32
	}
	heads := map[datapath.Frontend]lbLb4Service{}
	slots := map[datapath.Frontend][]slotVal{}
	slotKeys := map[datapath.Frontend][]lbLb4Key{}
	err := batchRead(m.Lb4Services, func(k *lbLb4Key, v *lbLb4Service) {
		f := keyFrontend(k)
		st.lastGen = max(st.lastGen, v.Gen)
		if k.Slot == 0 && k.Bank == 0 {
			heads[f] = *v
		} else {
			slots[f] = append(slots[f], slotVal{k.Slot, k.Bank, v.BackendId, v.Gen})
			slotKeys[f] = append(slotKeys[f], *k)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read services: %w", err)
	}

	err = batchRead(m.Lb4Backends, func(idp *uint32, b *lbLb4Backend) {
		id := *idp
		bk := backendKey{netip.AddrPortFrom(addr4(b.Address), hostPort(b.Port)), datapath.Proto(b.Proto)}
		st.backends[bk] = &backendEntry{id: id, state: datapath.BackendState(b.State)}
		st.byID[id] = bk
		if id >= st.nextBackend {
			st.nextBackend = id + 1
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read backends: %w", err)
	}

	names := map[uint16]string{}
	err = batchRead(m.Lb4SvcNames, func(rid *uint16, name *lbLb4SvcName) {
		names[*rid] = nameString(name)
	})
	if err != nil {
		return nil, fmt.Errorf("read names: %w", err)
	}

	for f, ks := range slotKeys {
		if _, ok := heads[f]; !ok {
			st.strays = append(st.strays, ks...)
		}
	}
	for f, h := range heads {
		s := &service{revNat: h.RevNatId, affinity: h.AffinityTimeout, count: h.Count, name: names[h.RevNatId], gen: h.Gen}
		n := int(h.Count) + int(h.Qcount)
		s.slots = make([]uint32, n)
		for i, sv := range slots[f] {
			// Slots of another generation (a writer died before
			// flipping slot 0, or before deleting the old bank) are
			// strays.
			if sv.slot >= 1 && int(sv.slot) <= n && sv.gen == h.Gen && sv.bank == uint16(h.Gen&1) {
				s.slots[sv.slot-1] = sv.id
			} else {
				st.strays = append(st.strays, slotKeys[f][i])
			}
		}
		// A slot the maps lack (a writer died mid-update) is dropped, so
		// the next upsert rewrites the service whole.
		s.slots = slices.DeleteFunc(s.slots, func(id uint32) bool {
			_, ok := st.byID[id]
			return !ok
		})
		if len(s.slots) < int(s.count) {
			s.count = uint16(len(s.slots))
		}
		for i, id := range s.slots {
			e := st.backends[st.byID[id]]
			e.refs++
			e.external = e.external || f.Scope == datapath.ScopeExternal
			if i < int(s.count) {
				e.active++
			}
		}
		st.services[f] = s
		st.revNats[h.RevNatId] = f
		if h.RevNatId >= st.nextRevNat {
			st.nextRevNat = h.RevNatId + 1
			if st.nextRevNat == 0 {
				st.nextRevNat = 1
			}
		}
	}
	return st, nil
}
