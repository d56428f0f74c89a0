// Package bench is skep's data-path benchmark harness (`skep bench
// datapath`, `go test -bench Datapath ./tools/bench`). In one run it
// measures, side by side and as ratios to the first:
//
//   - direct: the client dials the pod IPs (the limit);
//   - skep: the client dials a ClusterIP and skep's socket-LB (package bpf,
//     attached to a cgroup of the harness's own under the cgroup2 mount; the
//     client process is started inside it) picks the backend at connect();
//   - iptables-nft and iptables-legacy: the client dials the ClusterIP through
//     the rules kube-proxy's iptables mode writes (KUBE-SERVICES →
//     KUBE-SVC-<hash> with statistic --mode random → KUBE-SEP-<hash> DNAT,
//     KUBE-MARK-MASQ, KUBE-POSTROUTING, the filter chains and the jumps from
//     the built-in chains), loaded with iptables-restore in the client netns;
//   - ipvs: reported as not available when the kernel lacks ip_vs.
//
// at N services of 3 endpoints each (the service under test is the last one
// in KUBE-SERVICES), for: new connections per second with p50/p99 latency
// (connect, 64 B request/response, close), requests per second on kept-alive
// connections, one TCP stream's MB/s, UDP request/response rate, the time
// (wall and CPU) to program the N services, and the time to apply one
// endpoint change with N services in place (skep: Datapath.UpsertService;
// iptables: kube-proxy's partial-sync restore). Each measurement is split
// into slices interleaved across the modes and summed, so the load of other
// tenants of the machine hits every mode alike.
//
// Before measuring, a negative control dials the ClusterIP from outside the
// bench cgroup with no rules loaded and must fail: whatever a mode then
// reaches through the VIP, it reaches through the data path under test. The
// backends count what they serve, so every row also shows that the traffic
// arrived, and how it spread over the three.
//
// Topology (all in namespaces the harness creates and holds only by file
// descriptor, so they vanish with the process on any exit):
//
//	node netns: br0 10.244.77.1/24
//	  ├─ client "plain"  10.244.77.2   direct and skep clients
//	  ├─ client "nft"    10.244.77.3   iptables-nft rules
//	  ├─ client "legacy" 10.244.77.4   iptables-legacy rules
//	  └─ backends        10.244.77.11-13, echo :8080 tcp+udp, sink :8081
//
// Backends are goroutines of the harness with their sockets created inside
// the backend namespaces. Every measurement is a fresh client process
// (nsenter into the client netns, CLONE_INTO_CGROUP for skep) running
// blocking syscalls on locked threads, so the client adds as little as
// possible on top of the data path. Connections close with RST (SO_LINGER
// 0) so no TIME_WAIT or port exhaustion caps any mode.
//
// No route, address, link, rule or program is added outside the harness's
// namespaces and cgroup; pods have no default route, so nothing leaves them.
package bench
