// Command pause is the pod sandbox's process: PID 1 of the pod, holding its
// namespaces open, reaping orphaned children, exiting on SIGINT or SIGTERM.
// Built static (CGO_ENABLED=0) it is the only file of skep's pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every exited child: as PID 1 we inherit the pod's orphans.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
