package lab

import (
	"net"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skep-dev/skep/internal/cgroup2"
	"github.com/skep-dev/skep/nodeagent/netns"
)

// labNetns lists the named namespaces of the lab with this prefix: the
// switch, the nodes and the pods.
func labNetns(prefix string) []string {
	names, _ := netns.List(netns.DefaultDir, prefix+"-")
	return names
}

// inNetns runs fn on a locked thread switched into the namespace at path:
// sockets and netlink handles fn makes, and processes it starts, belong to
// that namespace.
func inNetns(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// dialerIn dials from inside a namespace: the socket is made there and
// stays there, whichever thread uses it later.
func dialerIn(path string) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(path, func() (err error) {
			c, err = net.DialTimeout(network, addr, 2*time.Second)
			return err
		})
		return c, err
	}
}

// labCgroup is the root of the lab's cgroup subtree, never the machine's
// root cgroup.
func (c Config) labCgroup() (string, error) {
	mnt, err := cgroup2.Mount()
	if err != nil {
		return "", err
	}
	return filepath.Join(mnt, c.Prefix), nil
}
