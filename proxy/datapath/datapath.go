// Package datapath is the seam between the service proxy's control loop
// (package proxy: Services and EndpointSlices in, desired state out) and the
// eBPF data path (package bpf: maps and programs). The control loop decides
// which backends a frontend may pick; the data path decides how to write that
// into maps so that no lookup sees a half-written service.
package datapath

import (
	"fmt"
	"net/netip"
	"time"
)

// Proto is an IP protocol number.
type Proto uint8

const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Scope says which traffic a frontend serves.
type Scope uint8

const (
	// ScopeInternal: east-west traffic from this node's pods, balanced at the
	// socket (cgroup connect4/sendmsg4). ClusterIPs.
	ScopeInternal Scope = 0
	// ScopeExternal: packets arriving on the node's uplink, balanced per packet
	// by the tc program. NodePorts, externalIPs, LoadBalancer IPs.
	ScopeExternal Scope = 1
)

// Frontend is the address a client targets.
type Frontend struct {
	IP    netip.Addr
	Port  uint16
	Proto Proto
	Scope Scope
}

func (f Frontend) String() string {
	s := "int"
	if f.Scope == ScopeExternal {
		s = "ext"
	}
	return fmt.Sprintf("%s/%s/%s", netip.AddrPortFrom(f.IP, f.Port), f.Proto, s)
}

// BackendState says what a backend may receive.
type BackendState uint8

const (
	// BackendActive backends are picked for new connections.
	BackendActive BackendState = 0
	// BackendTerminating backends get no new connections but keep the flows
	// they have (conntrack entries still resolve them).
	BackendTerminating BackendState = 1
)

// Backend is one endpoint address behind a frontend.
type Backend struct {
	IP    netip.Addr
	Port  uint16
	State BackendState
}

func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.IP, b.Port) }

// Service is the complete desired state of one frontend.
type Service struct {
	Frontend Frontend
	// Name is "namespace/name:portname", for tables and metrics.
	Name string
	// Backends in a stable order; the Active ones get new connections.
	// An empty Active set makes connects fail with ECONNREFUSED at once.
	Backends []Backend
	// AffinityTimeout > 0 turns on ClientIP session affinity.
	AffinityTimeout time.Duration
}

// Datapath programs frontends into the data path. Implementations apply only
// what changed and order writes so a concurrent lookup sees either the old or
// the new service, never a mix.
type Datapath interface {
	// UpsertService makes svc.Frontend serve exactly svc.
	UpsertService(svc Service) error
	// DeleteService removes a frontend; flows to its backends are purged for UDP.
	DeleteService(f Frontend) error
	// Services returns what is programmed now, so a restarted proxy can adopt
	// the pinned maps and reconcile only the difference.
	Services() ([]Service, error)
}

// Counts are one frontend's traffic counters as the data path keeps them.
// A data path fills what it counts and leaves the rest zero.
type Counts struct {
	// Connections: new flows balanced to a backend (TCP connects, UDP
	// socket sends, NodePort flows).
	Connections uint64
	// Refused: connects answered ECONNREFUSED for want of an Active backend.
	Refused uint64
	// Packets and Bytes seen by the per-packet (tc) path.
	Packets uint64
	Bytes   uint64
}

// Counters is implemented by data paths that count traffic per frontend;
// the proxy exposes the counts on /metrics. It is optional: the proxy checks
// for it with a type assertion.
type Counters interface {
	ServiceCounters() (map[Frontend]Counts, error)
}

// BatchUpserter is implemented by data paths that write many services in a
// few syscalls. The proxy uses it, when present, for its initial sync (a
// node with 10,000 services starts in a fraction of a second) and programs
// one service at a time afterwards.
type BatchUpserter interface {
	UpsertServices(svcs []Service) error
}
