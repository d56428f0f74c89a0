package ipam

import (
	"fmt"
	"net/netip"
)

// Pool is an IPv4 pod range. Its first address is the network, its second
// the gateway (held by the node's bridge), its last the broadcast address;
// pods get the ones in between.
type Pool struct {
	prefix netip.Prefix
	first  netip.Addr // first pod address
	last   netip.Addr // last pod address
	size   int
}

// NewPool returns the pool of prefix, which must be IPv4 and leave room for
// at least one pod (/30 or larger).
func NewPool(prefix netip.Prefix) (Pool, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() {
		return Pool{}, fmt.Errorf("subnet %s: only IPv4 pod ranges are supported", prefix)
	}
	if prefix.Bits() > 30 {
		return Pool{}, fmt.Errorf("subnet %s: too small, need /30 or larger", prefix)
	}
	network := prefix.Addr()
	hostBits := 32 - prefix.Bits()
	n := network.As4()
	v := uint32(n[0])<<24 | uint32(n[1])<<16 | uint32(n[2])<<8 | uint32(n[3])
	broadcast := v | (1<<hostBits - 1)
	return Pool{
		prefix: prefix,
		first:  u32Addr(v + 2),
		last:   u32Addr(broadcast - 1),
		size:   int(broadcast - 1 - (v + 2) + 1),
	}, nil
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Prefix is the pod range.
func (p Pool) Prefix() netip.Prefix { return p.prefix }

// Gateway is the range's first host address, the bridge's address.
func (p Pool) Gateway() netip.Addr { return p.prefix.Addr().Next() }

// Size is the number of pod addresses.
func (p Pool) Size() int { return p.size }

// Contains reports whether ip is a pod address of the pool.
func (p Pool) Contains(ip netip.Addr) bool {
	return ip.Compare(p.first) >= 0 && ip.Compare(p.last) <= 0
}

// NextFree returns the first address after last (wrapping around) for which
// taken is false. An invalid or foreign last starts at the pool's start.
func (p Pool) NextFree(last netip.Addr, taken func(netip.Addr) bool) (netip.Addr, bool) {
	ip := p.first
	if p.Contains(last) && last != p.last {
		ip = last.Next()
	}
	for range p.size {
		if !taken(ip) {
			return ip, true
		}
		if ip == p.last {
			ip = p.first
		} else {
			ip = ip.Next()
		}
	}
	return netip.Addr{}, false
}
