package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the report as one table per service count, every figure
// next to its ratio against direct measured in the same run.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "skep bench datapath — %s, kernel %s, %d CPUs, load %s\n",
		r.Started.Format(time.RFC3339), r.Host.Kernel, r.Host.CPUs, r.Host.LoadAvg)
	fmt.Fprintf(w, "%d endpoints per service; %s.\n", r.Endpoints, r.Order)
	fmt.Fprintf(w, "method: %s.\n", r.Method)
	fmt.Fprintf(w, "ipvs: %s.\n", r.IPVS)
	fmt.Fprintf(w, "control: %s.\n", r.Control)
	for _, n := range r.Results {
		fmt.Fprintf(w, "\n%d services (%d service ports, %d endpoint chains for iptables):\n",
			n.Services, n.ServicePorts, n.ServicePorts*r.Endpoints)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "mode\tprogram\tconn/s\t×\tp50\tp99\t×p99\trr/s\t×\tstream MB/s\t×\tudp/s\t×\terrors\tbackends (conns)\tEP update\t")
		for _, m := range n.Modes {
			if m.Skipped != "" {
				fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\n", m.Mode, m.Skipped)
				continue
			}
			rt := m.Ratios
			if rt == nil {
				rt = &Ratios{}
			}
			prog := "-"
			if m.Program > 0 {
				prog = fmtDur(m.Program) + " (cpu " + fmtDur(m.ProgramCPU) + ")"
			}
			var errs int64
			for _, j := range []*JobResult{m.Connect, m.RR, m.Stream, m.UDP} {
				if j != nil {
					errs += j.Errors
				}
			}
			var spread []string
			for _, b := range m.Backends {
				spread = append(spread, fmt.Sprint(b.Conns))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%.2f\t%s\t%.2f\t%s\t%.2f\t%s\t%.2f\t%d\t%s\t%s\t\n",
				m.Mode, prog,
				rate(m.Connect), rt.Connect, lat(m.Connect, true), lat(m.Connect, false), rt.P99,
				rate(m.RR), rt.RR,
				mbps(m.Stream), rt.Stream,
				rate(m.UDP), rt.UDP,
				errs, strings.Join(spread, "/"), epUpdate(m.EndpointUpdate))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\n× = ratio to direct in the same run (latency: >1 is slower). program: wall (CPU) time to program all N services.")
	fmt.Fprintln(w, "EP update: median time for the data path to apply one endpoint change of the service under test with N services in place")
	fmt.Fprintln(w, "(skep: Datapath.UpsertService; iptables: kube-proxy's partial-sync restore). EndpointSlice event → data path is the proxy's benchmark.")
	if len(r.Cleanup.Errors) > 0 {
		fmt.Fprintf(w, "cleanup errors: %s\n", strings.Join(r.Cleanup.Errors, "; "))
	}
}

func epUpdate(u *UpdateTimes) string {
	if u == nil {
		return "-"
	}
	return fmtDur(u.Median)
}

func rate(j *JobResult) string {
	if j == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", j.Rate())
}

func mbps(j *JobResult) string {
	if j == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", j.MBps())
}

func lat(j *JobResult, p50 bool) string {
	if j == nil {
		return "-"
	}
	if p50 {
		return fmtDur(j.P50)
	}
	return fmtDur(j.P99)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}
