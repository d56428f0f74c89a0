// Package lab brings a small skep cluster up on one Linux machine, in
// network namespaces, and runs a demo on it. There is no node agent yet,
// so the lab itself does the agent's and the runtime's part for its pods,
// as a client of the packages the agent will be built from:
// nodeagent/netns for every namespace it makes, nodeagent/podnet for its
// pods' networks, internal/cgroup2 for its cgroups.
//
// # What `skep lab up` makes
//
//	root netns                 switch netns <p>-sw            node netns <p>-n1, <p>-n2 …
//	──────────                 ───────────────────            ─────────────────────────
//	skep server 127.0.0.1:6443 bridge sw0 172.31.77.1/24 ──── lab0 172.31.77.(10+i)/24, veth to sw0
//	unreachable routes for     routes to every pod /24        ip_forward, routes to the other
//	  10.244/16, 10.96/12,       via its node                   nodes' pod /24 via their lab0
//	  172.31.77/24             skep lab relay listening on    skep proxy (tcx on lab0, socket-LB
//	                             172.31.77.1:6443 → the         on cgroup <cgroup2>/<p>/n<i>)
//	                             server in the root netns     bridge skep0 10.244.i.1 (skep-cni)
//
// Nodes are named <p>-n<i> (p is the prefix, "skeplab" by default): the
// netns, the Node object and the bpffs pin directory /sys/fs/bpf/skep/<p>-n<i>
// share that name. Node i has underlay address .10+i and pod CIDR the i-th
// /24 of the pod range. Node objects are written through the API with
// podCIDR, InternalIP and a Ready condition.
//
// # Reaching the API server from the nodes and pods
//
// The server listens on the root netns's loopback, which no lab netns can
// reach, and the root netns has no link into the lab (so a lab packet has
// no way out of the machine, unreachable routes or not). The lab makes the
// switch the control plane's presence on the node network: a relay (`skep
// lab relay`, one process) opens a listening socket inside the switch netns
// at the switch's address, 172.31.77.1:<port>, and copies each connection
// to the server in the root netns, TLS untouched. The server runs with
// --advertise-address 172.31.77.1, which puts that address in its
// certificate and makes it the kubernetes service's endpoint. So nodes use
// a kubeconfig (Dir/node.kubeconfig) that is the admin one pointed at
// 172.31.77.1:<port>; the proxies get their own (Dir/proxy.kubeconfig), a
// client certificate for system:kube-proxy that holds kube-proxy's rights
// and no more; and pods reach the API the in-cluster way, through
// 10.96.0.1:443 (socket-LB → 172.31.77.1:<port> → their node → the
// switch, which routes the pod ranges back via the nodes).
//
// Why not a veth from the root netns into the switch with the server
// listening on 172.31.77.1 itself: `skep server` listens on one address,
// and the user's kubeconfig should stay on 127.0.0.1; listening on 0.0.0.0
// would expose the API on the machine's real interface. The cost of the
// relay: the server sees every lab client as 127.0.0.1.
//
// # Processes, cgroups and pods
//
// Every process the lab starts lives in the cgroup subtree <cgroup2>/<p>
// (the cgroup2 mount is found in /proc/self/mountinfo): server, relay and
// proxies in <p>/system, pods in <p>/n<i>/<pod>. They enter their cgroup
// with CLONE_INTO_CGROUP and their netns with nsenter (`ip netns exec`
// would remount /sys and hide bpffs from the proxy). A node's proxy
// attaches its socket-LB to <p>/n<i>, so it sees exactly that node's pods.
//
// `skep lab demo` runs pods as a runtime would: the pod's network from
// podnet (a netns <p>-n<i>-<pod>, skep-cni ADD through libcni from inside
// the node's netns, with the node's IPAM and libcni records under
// Dir/cni/n<i>), a `skep lab serve` process in the pod's netns and cgroup;
// then it publishes them through the API (create, pods/binding, status
// Running/Ready with the pod IP). It writes a ClusterIP and a NodePort
// service; the EndpointSlice controller of `skep server` lists the ready
// pods in their slices, which the proxies program. Then it fetches the
// ClusterIP from a client pod on node 1 and the NodePort from the switch
// netns, and prints which backends answered and node 1's BPF service
// table.
//
// When the node agent lands it takes over registerNodes (registration and
// heartbeats) and runPod (sandboxes through containerd); the lab will then
// start one agent per node netns next to its proxy.
//
// # Going down
//
// `skep lab down` needs nothing but the prefix (from Dir/lab.json) to find
// everything, so it works after a crash half-way through up: cgroup.kill
// on the subtree ends every process, bpf.Uninstall detaches and unpins the
// nodes' pins, the namespaces are unmounted and removed (their links go
// with them), the cgroups are removed deepest first, the unreachable routes are
// found by their protocol (77) and the lab's own metric (so a test's lab
// and a user's can both hold a route for 10.96.0.0/12), CNI state and pod
// records go; --purge also removes the server's data.
package lab
