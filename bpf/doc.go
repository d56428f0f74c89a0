// Package bpf is skep's service data path: the eBPF programs (lb.c, compiled
// by bpf2go into the committed lb_bpfel.o and lb_bpfel.go), the loader that
// pins their maps and links under /sys/fs/bpf/skep/<node>/, and LB, which
// implements proxy/datapath.Datapath by writing services into those maps.
//
// # Programs
//
// East-west traffic is balanced at the socket, before a packet exists:
//
//	sock_connect4   cgroup/connect4: connect() to a frontend → a backend
//	sock_sendmsg4   cgroup/sendmsg4: sendto() of an unconnected UDP socket
//	sock_recvmsg4   cgroup/recvmsg4: the datagram's source shows the frontend
//	sock_getpeer4   cgroup/getpeername4: the peer name shows the frontend
//	sock_*6         the same four for IPv6 sockets that reach IPv4 frontends
//	                through v4-mapped addresses (Java and other dual-stack
//	                clients)
//
// A frontend with no Active backend fails the connect (or send) with
// ECONNREFUSED through bpf_set_retval, at once. Backends are picked uniformly
// at random among the Active slots; with ClientIP affinity the choice is
// remembered per (service, client netns cookie) in lb4_affinity (the
// writer deletes the entries naming a backend the service no longer has
// Active, and those of a deleted service). The reverse
// translation is keyed by socket cookie (lb4_sock_revnat), so the same
// backend can serve two frontends and each socket still sees its own.
//
// A pod connecting to its own node's NodePort (or an externalIP) never
// crosses the uplink, so connect4 also looks up ScopeExternal frontends
// (and a 0.0.0.0 NodePort frontend when the target is Options.NodeIP).
//
// North-south traffic (ScopeExternal frontends: NodePorts, externalIPs) is
// balanced per packet by tcx programs on the node's uplink (cls_bpf filters
// on a clsact qdisc where the kernel has no tcx):
//
//	tc_nodeport_in  ingress: replies of SNATed flows are reverse-NATed and
//	                sent out again; packets to a frontend are DNATed to a
//	                backend, and SNATed to the node if the backend is not in
//	                this node's pod CIDR
//	tc_nodeport_out egress: replies of local backends get the frontend back as
//	                their source
//
// Where replies come from decides where the programs sit. A local backend
// (a pod on this node's bridge) answers the client directly; the kernel
// routes that reply from the bridge out of the uplink, so the uplink's egress
// hook sees every such reply and nothing is needed on the bridge or the pod
// veths. A remote backend answers the node (the SNAT source), so its reply
// arrives on the uplink's ingress. Every SNATed packet carries the node's own
// address as source or destination after translation, which the stack would
// drop as martian, so those are sent on with bpf_fib_lookup + bpf_redirect
// (bpf_redirect_neigh when the neighbour is not resolved yet); everything
// else goes back to the stack (TC_ACT_OK), and packets that are not ours
// pass untouched. This assumes the node forwards IPv4 (a router node does).
//
// lb4_ct holds two entries per flow: the client's tuple (CT_SERVICE) → the
// backend and SNAT port, and the reply's tuple (CT_REPLY) → the frontend and
// client. SNAT ports are claimed with BPF_NOEXIST on the reply entry, so two
// flows to one backend never share one; a port held by a flow that saw a FIN
// or RST (after Options.CTClosingTimeout) or that has been idle for hours
// (TCP) or minutes (UDP) is taken over, and the old flow forgotten. When the
// range is used up, new flows to remote backends are dropped.
//
// sock_udp_term (iter/udp) destroys connected UDP sockets whose backend has
// been removed, with the bpf_sock_destroy kfunc: it is how a removed UDP
// backend leaves no stale connected socket behind (kube-proxy's stale UDP
// conntrack problem), together with the purge of its lb4_ct entries. An
// iterator walks the sockets of the netns it is read in, so the loader runs
// it in every pod netns: Options.PodNetns, by default those of the processes
// in the attached cgroup (NetnsInCgroup).
//
// # Maps
//
// All maps are BTF-typed, so `bpftool map dump pinned` prints field names:
//
//	lb4_services    (VIP, port, proto, scope, slot, bank) → slot 0: count,
//	                qcount, rev_nat_id, flags, affinity_timeout, gen;
//	                slot i of bank gen&1: backend_id, gen
//	lb4_backends    backend_id → address, port, proto, state, flags
//	lb4_revnat      rev_nat_id → VIP, port
//	lb4_svc_names   rev_nat_id → "namespace/name:port" (for tools only)
//	lb4_sock_revnat LRU (socket cookie, backend) → VIP
//	lb4_ct          LRU conntrack of the tc path
//	lb4_affinity    LRU (client, rev_nat_id) → backend, last use
//	lb4_counters    per-CPU counters indexed by rev_nat_id
//
// Slots 1..count hold the Active backends, count+1..count+qcount the
// Terminating ones (never picked, kept so that conntrack still resolves
// them and the service can be read back whole). The flags byte of slot 0 and
// of backends leaves room for Maglev (a lookup-table map keyed by
// rev_nat_id), DSR and traffic-policy Local without changing the key.
//
// # Update order
//
// Writers go backends (new ones, and those turning Active) → slots → slot
// 0 → removal of old slots → backends turning Terminating, then removal of
// unreferenced ones. A program reads slot 0 and then a slot, without a
// lock, while the writer may run on another CPU; so slots are never
// rewritten in place. A service whose slots change is written whole into
// the other bank under a new generation (one counter for all services, so
// never reused), and the single write of slot 0 switches count and bank
// together: a reader sees the old service or the new one. A service that
// only changes its count or loses a tail keeps its slots. A reader that
// finds its slot missing or of another generation (a writer replaced the
// service after the reader read slot 0), or naming a backend that is gone
// or not Active, reads slot 0 again; after a few such misses it takes the
// first usable slot of the generation it read (pick_backend).
//
// # Kernel
//
// Linux 5.18+ (bpf_set_retval in connect4), tcx from 6.6 (older: cls_bpf),
// bpf_sock_destroy from 6.5 (older: Load leaves sock_udp_term out and
// connected UDP sockets to removed backends are not destroyed). IPv4
// frontends and backends only for now (v6 sockets reach them v4-mapped).
//
// Known limits of the tc path: IP fragments and ICMP errors of NodePort
// flows are not translated, and redirected (SNAT) packets keep their TTL.
//
// # Restarts
//
// Maps are pinned by name and links (cgroup and tcx) are pinned under
// links/. A new process loads the programs, re-opens the pinned maps,
// rebuilds its id allocators and reference counts from them (Services reads
// the same maps back), and swaps its programs into the pinned links with
// link.Update: the hooks never go empty. Close leaves everything in place;
// Remove (and Uninstall) detach and unpin.
package bpf
