package bench

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"strings"
)

// ipvsAvailable tells whether kube-proxy's IPVS mode could run here: the
// ip_vs module is loaded, or modprobe can load it. The reason says why not.
func ipvsAvailable() (bool, string) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		return true, "ip_vs loaded"
	}
	if mp, err := exec.LookPath("modprobe"); err == nil {
		if err := exec.Command(mp, "ip_vs").Run(); err == nil {
			if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
				return true, "ip_vs loaded by modprobe"
			}
		}
	}
	if cfg := kernelConfig(); cfg != "" && strings.Contains(cfg, "# CONFIG_IP_VS is not set") {
		return false, "not available on this kernel (CONFIG_IP_VS is not set)"
	}
	return false, "not available on this kernel (no ip_vs module)"
}

func kernelConfig() string {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return ""
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return ""
	}
	var b bytes.Buffer
	if _, err := io.Copy(&b, io.LimitReader(zr, 8<<20)); err != nil {
		return ""
	}
	return b.String()
}
