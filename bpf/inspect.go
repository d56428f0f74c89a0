package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skep-dev/skep/proxy/datapath"
)

// Pinned is a read-only view of a node's pinned maps, for tools (`skep bpf`)
// that must not load programs or create anything.
type Pinned struct {
	maps lbMaps
}

// OpenPinned opens the maps pinned in pinDir read-only.
func OpenPinned(pinDir string) (*Pinned, error) {
	p := &Pinned{}
	for name, dst := range map[string]**ebpf.Map{
		"lb4_services":  &p.maps.Lb4Services,
		"lb4_backends":  &p.maps.Lb4Backends,
		"lb4_revnat":    &p.maps.Lb4Revnat,
		"lb4_svc_names": &p.maps.Lb4SvcNames,
		"lb4_ct":        &p.maps.Lb4Ct,
		"lb4_counters":  &p.maps.Lb4Counters,
	} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("open pinned map: %w", err)
		}
		*dst = m
	}
	return p, nil
}

// Close releases the map handles.
func (p *Pinned) Close() error { return p.maps.Close() }

// ServiceInfo is one frontend as the maps hold it.
type ServiceInfo struct {
	datapath.Service
	ID       uint16 // rev-NAT id: also the counters' index
	Slots    []SlotInfo
	Counters Counters
}

// SlotInfo is one backend slot of a service.
type SlotInfo struct {
	Slot      int
	BackendID uint32
	Backend   datapath.Backend
}

// Counters are a service's per-CPU counters summed.
type Counters struct {
	Connects uint64 // new flows: socket-LB translations, new tc flows
	Packets  uint64 // tc translations
	Bytes    uint64
	Refused  uint64 // attempts that found no Active backend
}

// Services lists the programmed services with slots and counters.
func (p *Pinned) Services() ([]ServiceInfo, error) { return servicesInfo(&p.maps) }

// Services lists the programmed services with slots and counters (for
// /metrics).
func (lb *LB) ServicesInfo() ([]ServiceInfo, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return servicesInfo(&lb.objs.lbMaps)
}

func servicesInfo(m *lbMaps) ([]ServiceInfo, error) {
	st, err := readState(m)
	if err != nil {
		return nil, err
	}
	counters, err := readAllCounters(m.Lb4Counters)
	if err != nil {
		return nil, err
	}
	var out []ServiceInfo
	for _, svc := range st.list() {
		s := st.services[svc.Frontend]
		info := ServiceInfo{Service: svc, ID: s.revNat, Counters: counters[s.revNat]}
		for i, id := range s.slots {
			info.Slots = append(info.Slots, SlotInfo{Slot: i + 1, BackendID: id, Backend: svc.Backends[i]})
		}
		out = append(out, info)
	}
	return out, nil
}

// ServiceCounters returns every programmed frontend's counters (the
// proxy's /metrics): one batched read of the per-CPU counters.
func (lb *LB) ServiceCounters() (map[datapath.Frontend]datapath.Counts, error) {
	counters, err := readAllCounters(lb.objs.Lb4Counters)
	if err != nil {
		return nil, err
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	out := make(map[datapath.Frontend]datapath.Counts, len(lb.st.services))
	for f, s := range lb.st.services {
		c := counters[s.revNat]
		out[f] = datapath.Counts{Connections: c.Connects, Refused: c.Refused, Packets: c.Packets, Bytes: c.Bytes}
	}
	return out, nil
}

// readAllCounters sums the per-CPU counters of every service id that
// counted anything.
func readAllCounters(m *ebpf.Map) (map[uint16]Counters, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	const chunk = 4096
	keys := make([]uint32, chunk)
	vals := make([]lbLb4Counters, chunk*ncpu)
	out := map[uint16]Counters{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			var c Counters
			for _, v := range vals[i*ncpu : (i+1)*ncpu] {
				c.Connects += v.Connects
				c.Packets += v.Packets
				c.Bytes += v.Bytes
				c.Refused += v.Refused
			}
			if c != (Counters{}) {
				out[uint16(keys[i])] = c
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read counters: %w", err)
		}
	}
}

// BackendInfo is one backend map entry.
type BackendInfo struct {
	ID    uint32
	Addr  netip.AddrPort
	Proto datapath.Proto
	State datapath.BackendState
}

// Backends lists the backend map.
func (p *Pinned) Backends() ([]BackendInfo, error) {
	var out []BackendInfo
	err := batchRead(p.maps.Lb4Backends, func(id *uint32, b *lbLb4Backend) {
		out = append(out, BackendInfo{
			ID:    *id,
			Addr:  netip.AddrPortFrom(addr4(b.Address), hostPort(b.Port)),
			Proto: datapath.Proto(b.Proto),
			State: datapath.BackendState(b.State),
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read backends: %w", err)
	}
	slices.SortFunc(out, func(a, b BackendInfo) int { return int(a.ID) - int(b.ID) })
	return out, nil
}

// ConntrackInfo is one entry of the tc path's conntrack.
type ConntrackInfo struct {
	Reply     bool // the reply direction's entry
	Proto     datapath.Proto
	Src, Dst  netip.AddrPort
	BackendID uint32
	ServiceID uint16
	SNAT      bool
	// Service entry: the SNAT source (if SNAT). Reply entry: the client.
	NAT netip.AddrPort
	// Reply entry: the frontend restored as source.
	Frontend netip.AddrPort
	Age      time.Duration
}

// Conntrack lists the conntrack map.
func (p *Pinned) Conntrack() ([]ConntrackInfo, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, err
	}
	now := uint64(ts.Nano())
	var out []ConntrackInfo
	err := batchRead(p.maps.Lb4Ct, func(k *lbLb4CtKey, v *lbLb4CtEntry) {
		c := ConntrackInfo{
			Reply:     k.Dir == 1,
			Proto:     datapath.Proto(k.Proto),
			Src:       netip.AddrPortFrom(addr4(k.Saddr), hostPort(k.Sport)),
			Dst:       netip.AddrPortFrom(addr4(k.Daddr), hostPort(k.Dport)),
			BackendID: v.BackendId,
			ServiceID: v.RevNatId,
			SNAT:      v.Flags&1 != 0,
			NAT:       netip.AddrPortFrom(addr4(v.Addr), hostPort(v.Port)),
			Frontend:  netip.AddrPortFrom(addr4(v.Vaddr), hostPort(v.Vport)),
		}
		if v.Created > 0 && now > v.Created {
			c.Age = time.Duration(now - v.Created)
		}
		out = append(out, c)
	})
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	slices.SortFunc(out, func(a, b ConntrackInfo) int {
		if c := a.Src.Compare(b.Src); c != 0 {
			return c
		}
		return a.Dst.Compare(b.Dst)
	})
	return out, nil
}
