package cni

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/skep-dev/skep/cni/ipam"
	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/tools/image"
)

// containerd's own CRI plugin, configured like a kubelet node would have it
// (bin_dir with skep-cni and loopback, conf_dir with a skep conflist), gives
// a pod sandbox its address from skep-cni. containerd is private to the test:
// its root, state, socket and CNI dirs are under a temp dir, it runs in the
// test's node namespace (so the bridge is made there, as on a real node in
// the host namespace), and the sandbox image is a locally built pause image
// imported with ctr, since there is no registry.
func TestContainerdCRI(t *testing.T) {
	testutil.RequireRoot(t)
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "/usr/lib/cni/loopback"} {
		testutil.RequireBinary(t, bin)
	}
	// Short: unix socket paths must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "skepcri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupMounts(t, dir); os.RemoveAll(dir) })

	const pauseRef = "skep.local/pause:test"
	node := testutil.NewNetns(t)
	n := newNetwork(t, "10.244.50.0/24", withNode(node), withVersion("1.0.0")) // containerd 1.6's libcni speaks up to 1.0.0

	// bin_dir: skep-cni and the loopback plugin the CRI plugin always adds.
	binDir, confDir := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for _, d := range []string{binDir, confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(pluginDir, "skep-cni"), filepath.Join(binDir, "skep-cni")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/cni/loopback", filepath.Join(binDir, "loopback")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-skep.conflist"), n.confList(), 0o644); err != nil {
		t.Fatal(err)
	}

	// The pause image.
	pauseBin := filepath.Join(dir, "pause")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pauseBin, "github.com/skep-dev/skep/tools/image/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	pauseData, err := os.ReadFile(pauseBin)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "pause.tar")
	if err := image.Pause(pauseRef, pauseData).WriteArchiveFile(archive); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  disable_apparmor = true
  # This machine withholds CAP_SYS_RESOURCE even from root, so the sandbox's
  # oom_score_adj of -998 cannot be set: keep it no lower than containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = %[8]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", pauseRef, binDir, confDir, filepath.Join(dir, "runc"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctrd := exec.Command("containerd", "--config", cfgPath, "--log-level", "info")
	ctrd.Stdout, ctrd.Stderr = logf, logf
	ctrd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Started from a thread in the node namespace: containerd, and the CNI
	// plugins it runs, live there.
	if err := node.Do(func(ns.NetNS) error { return ctrd.Start() }); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		stopProcess(ctrd)
		killShims(sock)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("containerd log:\n%s", tail(string(b), 60))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rs, is := cri.NewRuntimeServiceClient(conn), cri.NewImageServiceClient(conn)

	// Ready when the CRI plugin answers and has loaded the CNI config.
	testutil.Eventually(t, 2*time.Minute, "CRI network ready", func() error {
		st, err := rs.Status(ctx, &cri.StatusRequest{})
		if err != nil {
			return err
		}
		for _, c := range st.GetStatus().GetConditions() {
			if c.Type == cri.NetworkReady && !c.Status {
				return fmt.Errorf("network not ready: %s %s", c.Reason, c.Message)
			}
		}
		return nil
	})

	if out, err := exec.CommandContext(ctx, "ctr", "--address", sock, "-n", "k8s.io", "images", "import",
		"--snapshotter", "native", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, out)
	}
	testutil.Eventually(t, 2*time.Minute, "CRI sees the pause image", func() error {
		st, err := is.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: pauseRef}})
		if err != nil {
			return err
		}
		if st.Image == nil {
			return fmt.Errorf("image %s not known to CRI", pauseRef)
		}
		return nil
	})

	cgroupParent := "/skepcri-" + testutil.RandSuffix()
	t.Cleanup(func() { removeCgroup(cgroupParent) })
	run, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: "web", Uid: "uid-" + testutil.RandSuffix(), Namespace: "default"},
		Hostname:     "web",
		LogDirectory: filepath.Join(dir, "logs"),
		Linux:        &cri.LinuxPodSandboxConfig{CgroupParent: cgroupParent},
	}})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	id := run.PodSandboxId
	removed := false
	t.Cleanup(func() {
		if !removed {
			c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rs.StopPodSandbox(c, &cri.StopPodSandboxRequest{PodSandboxId: id})
			rs.RemovePodSandbox(c, &cri.RemovePodSandboxRequest{PodSandboxId: id})
		}
	})

	st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	if st.Status.State != cri.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox state %v", st.Status.State)
	}
	podIP := net.ParseIP(st.Status.GetNetwork().GetIp())
	_, subnet, _ := net.ParseCIDR(n.subnet)
	if podIP == nil || !subnet.Contains(podIP) {
		t.Fatalf("sandbox ip %q not from skep's range %s", st.Status.GetNetwork().GetIp(), n.subnet)
	}
	// The address is skep-cni's: recorded for the sandbox in its store, and
	// the sandbox's veth is on skep0 in the node.
	recs := n.allocations()
	if len(recs) != 1 || recs[0].ContainerID != id || recs[0].IP.String() != podIP.String() || recs[0].Pod != "default/web" {
		t.Fatalf("skep store %v, want %s holding %s", recs, id, podIP)
	}
	hostVeth := HostVethName(n.name, ipam.Attachment{ContainerID: id, IfName: "eth0"})
	node.Run(t, func() error {
		l, err := netlinksafe.LinkByName(hostVeth)
		if err != nil {
			return err
		}
		br, err := netlinksafe.LinkByName("skep0")
		if err != nil {
			return err
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("%s not on skep0", hostVeth)
		}
		return nil
	})
	// The node reaches the pod through the bridge.
	testutil.RequireBinary(t, "busybox")
	if out, err := node.Command("busybox", "ping", "-c", "1", "-W", "2", podIP.String()).CombinedOutput(); err != nil {
		t.Fatalf("ping sandbox from node: %v\n%s", err, out)
	}

	if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if recs := n.allocations(); len(recs) != 0 {
		t.Fatalf("allocations after StopPodSandbox: %v", recs)
	}
	if v := n.skepVeths(); len(v) != 0 {
		t.Fatalf("veths after StopPodSandbox: %v", v)
	}
	if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	removed = true
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// killShims ends the runc shims this test's containerd started (they
// re-parent to init), found by the socket address on their command line.
func killShims(sock string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.HasSuffix(args[0], "containerd-shim-runc-v2") && strings.Contains(string(b), sock) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// cleanupMounts detaches whatever containerd left mounted under dir (netns
// bind mounts, rootfs), deepest first.
func cleanupMounts(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mps = append(mps, fields[4])
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mp, err)
		}
	}
}

// removeCgroup removes the pod cgroup parent from every hierarchy; runc has
// removed the sandbox's own cgroup under it.
func removeCgroup(parent string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || (fields[sep+1] != "cgroup" && fields[sep+1] != "cgroup2") {
			continue
		}
		p := filepath.Join(fields[4], parent)
		// Children first (a sandbox cgroup left by a failed run).
		if ents, err := os.ReadDir(p); err == nil {
			for _, e := range ents {
				if e.IsDir() {
					os.Remove(filepath.Join(p, e.Name()))
				}
			}
		}
		os.Remove(p)
	}
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
