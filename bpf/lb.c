//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* skep service load balancer.
 *
 *  sock_connect4 / sock_sendmsg4   cgroup hooks: rewrite a connect or send to a
 *                                  frontend into one to a backend (socket-LB).
 *  sock_recvmsg4 / sock_getpeer4   cgroup hooks: show the frontend again to the
 *                                  application (UDP reply source, peer name).
 *  sock_*6                         the same for IPv6 sockets that reach IPv4
 *                                  frontends through v4-mapped addresses.
 *  tc_nodeport_in / tc_nodeport_out tcx on the node's uplink: per-packet
 *                                  DNAT (+ SNAT for remote backends) of
 *                                  NodePort/externalIP traffic, conntrack,
 *                                  reverse NAT of the replies.
 *  sock_udp_term                   iter/udp: destroys connected UDP sockets
 *                                  whose backend is gone (bpf_sock_destroy).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"

#define AF_INET 2
#define AF_INET6 10
#define ECONNREFUSED 111
#define NSEC_PER_SEC 1000000000ULL
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#define SNAT_TRIES 16

char __license[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader (Options) for each load. */
volatile const __be32 node_ip = 0;   /* SNAT source for remote backends */
volatile const __be32 pod_net = 0;   /* this node's pod CIDR ... */
volatile const __be32 pod_mask = 0;  /* ... and its mask: local backends */
volatile const __u16 snat_port_min = 40000;
volatile const __u16 snat_port_max = 59999;
/* When a SNAT port may be taken from an idle flow (seconds). */
volatile const __u32 ct_closing_timeout = 10;
volatile const __u32 ct_tcp_timeout = 21600;
volatile const __u32 ct_udp_timeout = 120;

static __always_inline void count_service(__u16 rev_nat_id, __u64 connects,
					  __u64 packets, __u64 bytes,
					  __u64 refused)
{
	__u32 key = rev_nat_id;
	struct lb4_counters *c = bpf_map_lookup_elem(&lb4_counters, &key);

	if (!c)
		return;
	c->connects += connects;
	c->packets += packets;
	c->bytes += bytes;
	c->refused += refused;
}

static __always_inline struct lb4_service *
lookup_service(struct lb4_key *key)
{
	return bpf_map_lookup_elem(&lb4_services, key);
}

#define PICK_TRIES 4 /* reads of slot 0 before the deterministic fallback */
#define PICK_SCAN 32  /* slots the fallback looks at */

/* slot_backend returns the backend in slot `slot` of the bank of generation
 * gen, if that slot was written for gen and names an Active backend: a
 * slot missing or of another generation means a writer replaced the
 * service since slot 0 was read (see struct lb4_key); a backend missing or
 * no longer Active, that it removed or retired one. */
static __always_inline struct lb4_backend *
slot_backend(struct lb4_key *key, __u32 gen, __u16 slot, __u32 *backend_id)
{
	struct lb4_service *s;
	struct lb4_backend *be;
	__u32 id;

	key->bank = gen & 1;
	key->slot = slot;
	s = lookup_service(key);
	if (!s || s->gen != gen)
		return NULL;
	id = s->backend_id;
	be = bpf_map_lookup_elem(&lb4_backends, &id);
	if (!be || be->state != LB_BACKEND_ACTIVE)
		return NULL;
	*backend_id = id;
	return be;
}

/* pick_backend chooses an Active backend of the service svc, found at key
 * (slot 0; key->slot and key->bank are clobbered). client identifies the
 * client for ClientIP affinity: a netns cookie (netns=1) or an IPv4
 * address.
 *
 * Slot 0 and then a slot are two lookups without a lock, and a writer may
 * replace the service in between: a slot that does not belong to the
 * generation read (or names a backend that is gone or not Active) sends
 * the reader back to slot 0 for the current generation (generations are
 * never reused, so a slot tagged with the one read is this service's). After PICK_TRIES
 * such misses (a writer replacing the service again and again) the first
 * usable slot of the last generation read is taken. */
static __always_inline struct lb4_backend *
pick_backend(struct lb4_key *key, struct lb4_service *svc, __u64 client,
	     __u8 netns, __u32 *backend_id)
{
	struct lb4_affinity_key akey = {
		.client = client,
		.rev_nat_id = svc->rev_nat_id,
		.netns = netns,
	};
	__u32 affinity_timeout = svc->affinity_timeout;
	__u32 gen = svc->gen;
	__u16 count = svc->count;
	struct lb4_affinity_val aval = {};
	struct lb4_backend *be;
	__u64 now = 0;
	__u32 id;
	int i;

	if (affinity_timeout) {
		struct lb4_affinity_val *a;

		now = bpf_ktime_get_ns();
		a = bpf_map_lookup_elem(&lb4_affinity, &akey);
		if (a && now - a->last_used < affinity_timeout * NSEC_PER_SEC) {
			id = a->backend_id;
			be = bpf_map_lookup_elem(&lb4_backends, &id);
			if (be && be->state == LB_BACKEND_ACTIVE) {
				a->last_used = now;
				*backend_id = id;
				return be;
			}
		}
	}

	for (i = 0; i < PICK_TRIES; i++) {
		if (i > 0) {
			key->bank = 0;
			key->slot = 0;
			svc = lookup_service(key);
			if (!svc)
				return NULL; /* deleted meanwhile */
			gen = svc->gen;
			count = svc->count;
		}
		/* An empty service refuses; but confirm it with a fresh read
		 * of slot 0 first: a hash map element replaced by a writer
		 * may be reused at once for another entry, so a value read
		 * through an old pointer can be another entry's (a slot's,
		 * whose count is 0). Any other field so misread shows as a
		 * generation no slot of this service carries. */
		if (count == 0) {
			if (i == 0)
				continue;
			return NULL;
		}
		be = slot_backend(key, gen, (bpf_get_prandom_u32() % count) + 1,
				  backend_id);
		if (be)
			goto found;
	}
	for (i = 1; i <= PICK_SCAN && i <= count; i++) {
		be = slot_backend(key, gen, i, backend_id);
		if (be)
			goto found;
	}
	return NULL;
found:
	if (affinity_timeout) {
		aval.last_used = now;
		aval.backend_id = *backend_id;
		bpf_map_update_elem(&lb4_affinity, &akey, &aval, BPF_ANY);
	}
	return be;
}

/* ---- socket-LB ---------------------------------------------------------- */

/* sock4_xlate balances a connect or send to vip:vport (an IPv4 address,
 * from a v4 socket or v4-mapped in a v6 one). On a frontend it stores the
 * backend in *addr, *port and returns 1; it returns 0 for anything else and
 * a negative errno for the application when the frontend has no backend. */
static __always_inline int sock4_xlate(struct bpf_sock_addr *ctx, __be32 vip,
				       __be16 vport, __be32 *addr, __be16 *port)
{
	struct lb4_key key = {};
	struct lb4_sock_key skey = {};
	struct lb4_sock_val sval = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id = 0;
	__u16 rev_nat_id;
	__u8 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	key.address = vip;
	key.dport = vport;
	key.proto = proto;
	key.scope = LB_SCOPE_INTERNAL;
	svc = lookup_service(&key);
	if (!svc) {
		/* A pod reaching its own node's NodePort or an externalIP
		 * never crosses the uplink: balance it here too. */
		key.scope = LB_SCOPE_EXTERNAL;
		svc = lookup_service(&key);
		if (!svc && node_ip && vip == node_ip) {
			key.address = 0; /* NodePort on any node address */
			svc = lookup_service(&key);
		}
		if (!svc)
			return 0;
	}
	rev_nat_id = svc->rev_nat_id;
	be = pick_backend(&key, svc, bpf_get_netns_cookie(ctx), 1, &backend_id);
	if (!be) {
		count_service(rev_nat_id, 0, 0, 0, 1);
		return -ECONNREFUSED;
	}

	skey.cookie = bpf_get_socket_cookie(ctx);
	skey.address = be->address;
	skey.port = be->port;
	sval.address = vip;
	sval.port = vport;
	sval.rev_nat_id = rev_nat_id;
	bpf_map_update_elem(&lb4_sock_revnat, &skey, &sval, BPF_ANY);

	*addr = be->address;
	*port = be->port;
	count_service(rev_nat_id, 1, 0, 0, 0);
	return 1;
}

static __always_inline int sock4_fwd(struct bpf_sock_addr *ctx)
{
	__be32 addr;
	__be16 port;
	int ret = sock4_xlate(ctx, ctx->user_ip4, (__be16)ctx->user_port,
			      &addr, &port);

	if (ret < 0) {
		/* Fails the connect (or send) with this errno at once,
		 * instead of letting a SYN to a VIP nobody answers hang. */
		bpf_set_retval(ret);
		return 0;
	}
	if (ret > 0) {
		ctx->user_ip4 = addr;
		ctx->user_port = (__u32)port;
	}
	return 1;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_fwd(ctx);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_fwd(ctx);
}

/* sock4_rev finds the frontend a socket rewritten to backend addr:port
 * believes it talks to. */
static __always_inline struct lb4_sock_val *
sock4_rev(struct bpf_sock_addr *ctx, __be32 addr, __be16 port)
{
	struct lb4_sock_key skey = {};

	skey.cookie = bpf_get_socket_cookie(ctx);
	skey.address = addr;
	skey.port = port;
	return bpf_map_lookup_elem(&lb4_sock_revnat, &skey);
}

/* sock4_revxlate puts the frontend back where the application looks at the
 * peer: the source of a received datagram, the name of the peer. */
static __always_inline void sock4_revxlate(struct bpf_sock_addr *ctx)
{
	struct lb4_sock_val *sval;

	sval = sock4_rev(ctx, ctx->user_ip4, (__be16)ctx->user_port);
	if (!sval)
		return;
	ctx->user_ip4 = sval->address;
	ctx->user_port = (__u32)sval->port;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	sock4_revxlate(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int sock_getpeer4(struct bpf_sock_addr *ctx)
{
	sock4_revxlate(ctx);
	return 1;
}

/* IPv6 sockets reach IPv4 frontends through v4-mapped addresses
 * (::ffff:a.b.c.d): Java and other dual-stack clients do. Only those are
 * translated; native IPv6 frontends are for later. */
static __always_inline int v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int sock6_fwd(struct bpf_sock_addr *ctx)
{
	__be32 addr;
	__be16 port;
	int ret;

	if (!v4_mapped(ctx))
		return 1;
	ret = sock4_xlate(ctx, ctx->user_ip6[3], (__be16)ctx->user_port,
			  &addr, &port);
	if (ret < 0) {
		bpf_set_retval(ret);
		return 0;
	}
	if (ret > 0) {
		ctx->user_ip6[3] = addr;
		ctx->user_port = (__u32)port;
	}
	return 1;
}

static __always_inline void sock6_revxlate(struct bpf_sock_addr *ctx)
{
	struct lb4_sock_val *sval;

	if (!v4_mapped(ctx))
		return;
	sval = sock4_rev(ctx, ctx->user_ip6[3], (__be16)ctx->user_port);
	if (!sval)
		return;
	ctx->user_ip6[3] = sval->address;
	ctx->user_port = (__u32)sval->port;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_fwd(ctx);
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_fwd(ctx);
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	sock6_revxlate(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int sock_getpeer6(struct bpf_sock_addr *ctx)
{
	sock6_revxlate(ctx);
	return 1;
}

/* ---- per-packet NodePort path ------------------------------------------ */

struct pkt4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u32 l4off;
};

#define TCP_FIN 0x01
#define TCP_RST 0x04

#define IP_OFF(field) (ETH_HLEN + offsetof(struct iphdr, field))

/* parse4 reads the IPv4 TCP/UDP 5-tuple; anything else (other ethertypes,
 * other protocols, non-first fragments) is not ours. */
static __always_inline int parse4(struct __sk_buff *skb, struct pkt4 *p)
{
	struct ethhdr eth;
	struct iphdr ip;
	__be16 ports[2];

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	if (eth.h_proto != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -1;
	if (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -1;
	p->l4off = ETH_HLEN + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, p->l4off, ports, sizeof(ports)) < 0)
		return -1;
	if (ip.protocol == IPPROTO_TCP &&
	    bpf_skb_load_bytes(skb, p->l4off + 13, &p->tcp_flags, 1) < 0)
		return -1;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->sport = ports[0];
	p->dport = ports[1];
	p->proto = ip.protocol;
	return 0;
}

static __always_inline __u32 l4_csum_off(struct pkt4 *p)
{
	if (p->proto == IPPROTO_TCP)
		return p->l4off + offsetof(struct tcphdr, check);
	return p->l4off + offsetof(struct udphdr, check);
}

static __always_inline __u64 l4_csum_flags(struct pkt4 *p)
{
	/* A zero UDP checksum means "none": leave it zero. */
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* nat_addr rewrites the source (src=1) or destination address, fixing the
 * IP header checksum and the L4 pseudo-header checksum. */
static __always_inline int nat_addr(struct __sk_buff *skb, struct pkt4 *p,
				    int src, __be32 from, __be32 to)
{
	__u32 off = src ? IP_OFF(saddr) : IP_OFF(daddr);

	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				l4_csum_flags(p) | BPF_F_PSEUDO_HDR | sizeof(to)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_OFF(check), from, to, sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

static __always_inline int nat_port(struct __sk_buff *skb, struct pkt4 *p,
				    int src, __be16 from, __be16 to)
{
	__u32 off = p->l4off + (src ? 0 : 2);

	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				l4_csum_flags(p) | sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

/* redirect_fib sends a packet we rewrote to carry the node's own address as
 * source (SNAT) or destination straight out of the interface the FIB picks:
 * handed back to the stack it would be dropped as a martian (a packet from
 * the wire with a local source address). */
static __always_inline int redirect_fib(struct __sk_buff *skb, struct pkt4 *p)
{
	struct bpf_fib_lookup fib = {};
	struct iphdr ip;
	long rc;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return TC_ACT_OK;
	fib.family = AF_INET;
	fib.tos = ip.tos;
	fib.l4_protocol = ip.protocol;
	fib.tot_len = bpf_ntohs(ip.tot_len);
	fib.ipv4_src = ip.saddr;
	fib.ipv4_dst = ip.daddr;
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	return TC_ACT_OK;
}

#define CT_MISS -1

static __always_inline __u32 now_sec(void)
{
	return bpf_ktime_get_ns() / NSEC_PER_SEC;
}

/* ct_touch keeps an entry's idle time and closing state current. */
static __always_inline void ct_touch(struct lb4_ct_entry *e, struct pkt4 *p)
{
	__u32 now = now_sec();

	if (e->last_seen != now)
		e->last_seen = now;
	if ((p->tcp_flags & (TCP_FIN | TCP_RST)) && !(e->flags & CT_F_CLOSING))
		e->flags |= CT_F_CLOSING;
}

/* ct_expired says whether a flow is idle long enough that its SNAT port may
 * go to a new flow. */
static __always_inline int ct_expired(struct lb4_ct_entry *e, __u8 proto,
				      __u32 now)
{
	__u32 idle = now - e->last_seen;

	if (e->flags & CT_F_CLOSING)
		return idle >= ct_closing_timeout;
	return idle >= (proto == IPPROTO_TCP ? ct_tcp_timeout : ct_udp_timeout);
}

/* ct_reply_xlate reverse-NATs a reply of a tracked flow: the source becomes
 * the frontend again and, for SNATed flows, the destination the client. */
static __always_inline int ct_reply_xlate(struct __sk_buff *skb,
					  struct pkt4 *p, int ingress)
{
	struct lb4_ct_key key = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.dir = CT_REPLY,
	};
	struct lb4_ct_entry *e = bpf_map_lookup_elem(&lb4_ct, &key);
	__be32 vaddr, caddr;
	__be16 vport, cport;
	__u8 flags;

	if (!e)
		return CT_MISS;
	ct_touch(e, p);
	vaddr = e->vaddr;
	vport = e->vport;
	caddr = e->addr;
	cport = e->port;
	flags = e->flags;
	count_service(e->rev_nat_id, 0, 1, skb->len, 0);

	if (nat_addr(skb, p, 1, p->saddr, vaddr) < 0 ||
	    nat_port(skb, p, 1, p->sport, vport) < 0)
		return TC_ACT_SHOT;
	if (flags & CT_F_SNAT) {
		if (nat_addr(skb, p, 0, p->daddr, caddr) < 0 ||
		    nat_port(skb, p, 0, p->dport, cport) < 0)
			return TC_ACT_SHOT;
		if (ingress)
			return redirect_fib(skb, p);
	}
	return TC_ACT_OK;
}

static __always_inline int is_local_backend(__be32 addr)
{
	return pod_mask && (addr & pod_mask) == pod_net;
}

/* nodeport_xlate balances a packet to an External frontend. */
static __always_inline int nodeport_xlate(struct __sk_buff *skb, struct pkt4 *p)
{
	struct lb4_key key = {
		.address = p->daddr,
		.dport = p->dport,
		.proto = p->proto,
		.scope = LB_SCOPE_EXTERNAL,
	};
	struct lb4_ct_key ckey = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.dir = CT_SERVICE,
	};
	struct lb4_ct_key rkey = { .proto = p->proto, .dir = CT_REPLY };
	struct lb4_ct_entry fwd = {}, rev = {};
	struct lb4_ct_entry *ct, *old;
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id = 0;
	__u16 rev_nat_id;
	__be32 baddr, snat_addr = 0;
	__be16 bport, snat_port = 0;
	int i;

	svc = lookup_service(&key);
	if (!svc && node_ip && p->daddr == node_ip) {
		/* NodePort on "any node address": frontend 0.0.0.0. */
		key.address = 0;
		svc = lookup_service(&key);
	}
	if (!svc)
		return TC_ACT_OK;
	rev_nat_id = svc->rev_nat_id;

	ct = bpf_map_lookup_elem(&lb4_ct, &ckey);
	if (ct) {
		ct_touch(ct, p);
		backend_id = ct->backend_id;
		be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		if (be) {
			baddr = be->address;
			bport = be->port;
			if (ct->flags & CT_F_SNAT) {
				snat_addr = ct->addr;
				snat_port = ct->port;
			}
			goto xlate;
		}
		/* Its backend is gone: balance the flow anew. */
		bpf_map_delete_elem(&lb4_ct, &ckey);
	}

	be = pick_backend(&key, svc, p->saddr, 0, &backend_id);
	if (!be) {
		count_service(rev_nat_id, 0, 0, 0, 1);
		return TC_ACT_SHOT;
	}
	baddr = be->address;
	bport = be->port;

	rev.backend_id = backend_id;
	rev.rev_nat_id = rev_nat_id;
	rev.addr = p->saddr;
	rev.port = p->sport;
	rev.vaddr = p->daddr;
	rev.vport = p->dport;
	rev.created = bpf_ktime_get_ns();
	rev.last_seen = rev.created / NSEC_PER_SEC;
	rkey.saddr = baddr;
	rkey.sport = bport;
	if (is_local_backend(baddr) || !node_ip) {
		/* A local backend's replies leave through the uplink, where
		 * tc_nodeport_out restores the frontend as their source. */
		rkey.daddr = p->saddr;
		rkey.dport = p->sport;
		bpf_map_update_elem(&lb4_ct, &rkey, &rev, BPF_ANY);
	} else {
		/* A remote backend replies to whoever sent the packet: make
		 * that this node, on a port no other flow to that backend
		 * uses, so the reply comes back here. */
		rev.flags = CT_F_SNAT;
		rkey.daddr = node_ip;
		for (i = 0; i < SNAT_TRIES; i++) {
			__u16 span = snat_port_max - snat_port_min + 1;
			__u16 port = snat_port_min + bpf_get_prandom_u32() % span;

			rkey.dport = bpf_htons(port);
			if (bpf_map_update_elem(&lb4_ct, &rkey, &rev, BPF_NOEXIST) == 0) {
				snat_addr = node_ip;
				snat_port = rkey.dport;
				break;
			}
			/* Taken: by a flow long idle or closed? Then the port
			 * is this flow's, and the old flow is forgotten. */
			old = bpf_map_lookup_elem(&lb4_ct, &rkey);
			if (old && ct_expired(old, p->proto, rev.last_seen)) {
				struct lb4_ct_key okey = {
					.saddr = old->addr,
					.daddr = old->vaddr,
					.sport = old->port,
					.dport = old->vport,
					.proto = p->proto,
					.dir = CT_SERVICE,
				};

				bpf_map_delete_elem(&lb4_ct, &okey);
				if (bpf_map_update_elem(&lb4_ct, &rkey, &rev, BPF_ANY) == 0) {
					snat_addr = node_ip;
					snat_port = rkey.dport;
					break;
				}
			}
		}
		if (!snat_port)
			return TC_ACT_SHOT;
		fwd.flags = CT_F_SNAT;
		fwd.addr = snat_addr;
		fwd.port = snat_port;
	}
	fwd.backend_id = backend_id;
	fwd.rev_nat_id = rev_nat_id;
	fwd.created = rev.created;
	fwd.last_seen = rev.last_seen;
	bpf_map_update_elem(&lb4_ct, &ckey, &fwd, BPF_ANY);

	count_service(rev_nat_id, 1, 0, 0, 0); /* a new flow */
xlate:
	count_service(rev_nat_id, 0, 1, skb->len, 0);
	if (nat_addr(skb, p, 0, p->daddr, baddr) < 0 ||
	    nat_port(skb, p, 0, p->dport, bport) < 0)
		return TC_ACT_SHOT;
	if (snat_port) {
		if (nat_addr(skb, p, 1, p->saddr, snat_addr) < 0 ||
		    nat_port(skb, p, 1, p->sport, snat_port) < 0)
			return TC_ACT_SHOT;
		return redirect_fib(skb, p);
	}
	return TC_ACT_OK;
}

SEC("tc")
int tc_nodeport_in(struct __sk_buff *skb)
{
	struct pkt4 p = {};
	int ret;

	if (parse4(skb, &p) < 0)
		return TC_ACT_OK;
	ret = ct_reply_xlate(skb, &p, 1);
	if (ret != CT_MISS)
		return ret;
	return nodeport_xlate(skb, &p);
}

SEC("tc")
int tc_nodeport_out(struct __sk_buff *skb)
{
	struct pkt4 p = {};
	int ret;

	if (parse4(skb, &p) < 0)
		return TC_ACT_OK;
	ret = ct_reply_xlate(skb, &p, 0);
	if (ret != CT_MISS)
		return ret;
	return TC_ACT_OK;
}

/* ---- UDP socket termination --------------------------------------------- */

/* Just the kernel types the iterator touches; CO-RE relocates the fields. */
struct bpf_iter_meta {
	void *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct sock_common *udp_sk;
	__u32 uid;
	int bucket;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

SEC("iter/udp")
int sock_udp_term(struct bpf_iter__udp *ctx)
{
	struct sock_common *sk = ctx->udp_sk;
	struct lb4_term_key key = {};

	if (!sk)
		return 0;
	/* A v6 socket connected to a v4-mapped address keeps the IPv4 peer
	 * in skc_daddr too (native v6 peers leave a marker there that is no
	 * backend). */
	if (sk->skc_family != AF_INET && sk->skc_family != AF_INET6)
		return 0;
	key.address = sk->skc_daddr;
	key.port = sk->skc_dport;
	if (bpf_map_lookup_elem(&lb4_sock_term, &key))
		bpf_sock_destroy(sk);
	return 0;
}
