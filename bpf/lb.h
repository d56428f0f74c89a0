/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* skep service load balancer: map layout shared by every program.
 *
 * Addresses and ports are stored in network byte order, as the kernel hands
 * them to the programs; `skep bpf` prints them as dotted quads.
 */
#ifndef SKEP_LB_H
#define SKEP_LB_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Scope of a frontend (proxy/datapath.Scope). */
#define LB_SCOPE_INTERNAL 0 /* ClusterIP: socket-LB for this node's pods */
#define LB_SCOPE_EXTERNAL 1 /* NodePort, externalIPs: tc on the uplink */

/* Backend states (proxy/datapath.BackendState). */
#define LB_BACKEND_ACTIVE 0
#define LB_BACKEND_TERMINATING 1

/* Service flags in slot 0. Room for Maglev, DSR, traffic policy Local. */
#define LB_SVC_F_AFFINITY (1 << 0)

/* Service map key: one frontend, one slot. Slot 0 (bank 0) is the service
 * itself (count, rev-NAT id, affinity, generation); slots 1..count of the
 * bank gen & 1 hold the Active backends, slots count+1..count+qcount the
 * Terminating ones (kept so that the control loop can read the full service
 * back; never picked).
 *
 * Two banks, so that a service is replaced atomically: the writer fills the
 * bank slot 0 does not point at, tagging every slot with the new
 * generation, then rewrites slot 0 (one element swap: readers see the old
 * or the new value, never a mix), then deletes the old bank. A reader that
 * read slot 0 and then finds a slot missing, or tagged with another
 * generation, raced a writer and reads slot 0 again (pick_backend). */
struct lb4_key {
	__be32 address;
	__be16 dport;
	__u8 proto;
	__u8 scope;
	__u16 slot;
	__u16 bank; /* slot > 0: gen & 1 of the service they belong to */
};

struct lb4_service {
	__u32 backend_id;       /* slot > 0: the backend in this slot */
	__u16 count;            /* slot 0: Active backends */
	__u16 qcount;           /* slot 0: Terminating backends after them */
	__u16 rev_nat_id;       /* slot 0: service id (rev-NAT, affinity, counters) */
	__u8 flags;             /* slot 0: LB_SVC_F_* */
	__u8 pad;
	__u32 affinity_timeout; /* slot 0: seconds; 0 = no affinity */
	__u32 gen;              /* slot 0: generation of the slots; slot > 0: the
				 * generation the slot was written for */
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 state; /* LB_BACKEND_* */
	__u8 flags; /* room for DSR / node-local hints */
	__u8 pad[3];
};

struct lb4_revnat {
	__be32 address;
	__be16 port;
	__u16 pad;
};

/* Per-socket reverse translation (socket-LB): which VIP a socket that was
 * rewritten to a backend believes it talks to. */
struct lb4_sock_key {
	__u64 cookie;
	__be32 address; /* backend */
	__be16 port;
	__u16 pad;
};

struct lb4_sock_val {
	__be32 address; /* VIP */
	__be16 port;
	__u16 rev_nat_id;
};

/* Per-packet conntrack (tc NodePort path). Two entries per flow:
 *  dir CT_SERVICE: the tuple as the client sends it (client -> frontend),
 *                  resolving to the backend and the SNAT source if any;
 *  dir CT_REPLY:   the tuple as the backend's replies carry it
 *                  (backend -> client, or backend -> node:snat port),
 *                  resolving to the frontend and the client. */
#define CT_SERVICE 0
#define CT_REPLY 1
#define CT_F_SNAT (1 << 0)
#define CT_F_CLOSING (1 << 1) /* a FIN or RST was seen in this direction */

struct lb4_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct lb4_ct_entry {
	__u32 backend_id;
	__u16 rev_nat_id;
	__u8 flags; /* CT_F_* */
	__u8 pad;
	__be32 addr;    /* service: SNAT source address; reply: client address */
	__be32 vaddr;   /* reply: frontend address to restore as source */
	__be16 port;    /* service: SNAT source port; reply: client port */
	__be16 vport;   /* reply: frontend port */
	__u32 last_seen; /* seconds of bpf_ktime_get_ns(), updated at most 1/s */
	__u64 created;   /* bpf_ktime_get_ns() */
};

/* ClientIP session affinity. For socket-LB the client is the netns cookie
 * (the source address is not known at connect time), for tc the source IP. */
struct lb4_affinity_key {
	__u64 client;
	__u16 rev_nat_id;
	__u8 netns; /* 1: client is a netns cookie */
	__u8 pad[5];
};

struct lb4_affinity_val {
	__u64 last_used; /* bpf_ktime_get_ns() */
	__u32 backend_id;
	__u32 pad;
};

/* Per-service counters, per CPU, indexed by rev_nat_id. */
struct lb4_counters {
	__u64 connects; /* new flows: socket-LB translations, new tc flows */
	__u64 packets;  /* tc translations (both directions) */
	__u64 bytes;
	__u64 refused;  /* no Active backend */
};

/* A backend whose connected UDP sockets must go (sock_udp_term). */
struct lb4_term_key {
	__be32 address;
	__be16 port;
	__u16 pad;
};

/* Service names ("namespace/name:port") for `skep bpf` and metrics, so a
 * restarted proxy and the CLI can name what they find in the maps. Never
 * read by the programs. */
struct lb4_svc_name {
	/* "namespace/name:portname" is at most 63+1+63+1+15 = 143 bytes:
	 * never shortened (the proxy compares names when it adopts maps). */
	char name[160];
};

#define LB_SERVICES_MAX 262144
#define LB_BACKENDS_MAX 262144
#define LB_REVNAT_MAX 65536
#define LB_CT_MAX 131072
#define LB_AFFINITY_MAX 65536
#define LB_SOCK_MAX 131072

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB_SERVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_revnat);
	__uint(max_entries, LB_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_key);
	__type(value, struct lb4_sock_val);
	__uint(max_entries, LB_SOCK_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_sock_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_ct_key);
	__type(value, struct lb4_ct_entry);
	__uint(max_entries, LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity_val);
	__uint(max_entries, LB_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb4_counters);
	__uint(max_entries, LB_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_svc_name);
	__uint(max_entries, LB_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_svc_names SEC(".maps");

/* Filled by the loader right before it runs the UDP socket terminator;
 * not pinned: it is a per-process scratch set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_term_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
} lb4_sock_term SEC(".maps");

#endif
