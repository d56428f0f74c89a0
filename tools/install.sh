#!/usr/bin/env bash
# Installs everything skep's lab and tests need on a fresh Debian 12 machine
# (run as root), then runs the command given after --then. Idempotent: a second
# run only checks.
set -euo pipefail

pkgs=(containerd runc busybox-static bpftool clang llvm libbpf-dev
      iptables nftables conntrack containernetworking-plugins etcd-server etcd-client
      strace util-linux iproute2)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install: apt packages: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's etcd-server package starts a system etcd; skep's benchmarks start
# their own on loopback, so keep the unit from holding the ports.
systemctl disable --now etcd >/dev/null 2>&1 || pkill -x etcd 2>/dev/null || true

# bpffs for pinned maps and links.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
	mkdir -p /sys/fs/bpf
	mount -t bpf bpf /sys/fs/bpf
fi

# kubectl (1.33, and 1.27–1.32 under /usr/lib/google-cloud-sdk/bin) comes with
# machines of this kind; it is not in Debian's archive. The e2e tests use it as
# the real client.
command -v kubectl >/dev/null || echo "install: warning: kubectl not found; the kubectl e2e tests need it" >&2

# Make /run/netns a shared mount point once, before tests create namespaces in
# parallel: the first `ip netns add` bind-mounts it, and two doing so at once
# can hide each other's namespaces.
if [[ ! -d /run/netns ]] || ! grep -q ' /run/netns ' /proc/self/mountinfo; then
	ip netns add skep-install-probe && ip netns del skep-install-probe
fi

# Go tools the tests drive as a user would.
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
command -v cnitool >/dev/null || go install github.com/containernetworking/cni/cnitool@v1.3.0

if [[ "${1:-}" == "--then" ]]; then
	shift
	exec "$@"
fi
