package bench

import (
	"log/slog"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/proxy/datapath"
)

func init() {
	DefaultSkep = attachBPF
	uninstallPins = bpf.Uninstall
}

// attachBPF loads skep's data path with its maps pinned under pinDir and
// the socket-LB attached to the bench cgroup; the returned function detaches
// the links and removes every pin.
func attachBPF(cgroupPath, pinDir string) (datapath.Datapath, func() error, error) {
	lb, err := bpf.Load(bpf.Options{PinDir: pinDir, PodCIDR: podSubnet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		_ = bpf.Uninstall(pinDir) // Load may have made the directory
		return nil, nil, err
	}
	if err := lb.AttachCgroup(cgroupPath); err != nil {
		_ = lb.Remove()
		return nil, nil, err
	}
	return lb, lb.Remove, nil
}
