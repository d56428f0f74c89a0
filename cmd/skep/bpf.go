package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/skep-dev/skep/bpf"
	"github.com/skep-dev/skep/proxy/datapath"
)

func init() {
	register("bpf", "print the eBPF data path's pinned maps (services, backends, conntrack)", runBPF)
}

func runBPF(args []string) error { return printBPF(os.Stdout, args) }

// printBPF prints the table args name to out.
func printBPF(out io.Writer, args []string) error {
	fs := flag.NewFlagSet("bpf", flag.ContinueOnError)
	node := fs.String("node", "", "node whose maps to print (pinned under "+bpf.PinRoot+"/NODE)")
	pinDir := fs.String("pin-dir", "", "pin directory to read instead of the node's")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: skep bpf services|backends|conntrack [--node NAME | --pin-dir DIR]")
		fs.PrintDefaults()
	}
	if len(args) == 0 {
		fs.Usage()
		return errors.New("missing table name")
	}
	what := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	dir, err := bpfPinDir(*node, *pinDir)
	if err != nil {
		return err
	}
	p, err := bpf.OpenPinned(dir)
	if err != nil {
		return err
	}
	defer p.Close()
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	switch what {
	case "services", "svc", "lb":
		return printServices(w, p)
	case "backends":
		return printBackends(w, p)
	case "conntrack", "ct":
		return printConntrack(w, p)
	}
	fs.Usage()
	return fmt.Errorf("unknown table %q", what)
}

// bpfPinDir picks the pin directory: explicit, the node's, or the only
// node pinned on this machine.
func bpfPinDir(node, pinDir string) (string, error) {
	switch {
	case pinDir != "" && node != "":
		return "", errors.New("--node and --pin-dir are exclusive")
	case pinDir != "":
		return pinDir, nil
	case node != "":
		return bpf.PinDirFor(node), nil
	}
	entries, err := os.ReadDir(bpf.PinRoot)
	if err != nil {
		return "", fmt.Errorf("no data path pinned (%w): pass --node or --pin-dir", err)
	}
	var nodes []string
	for _, e := range entries {
		if e.IsDir() {
			nodes = append(nodes, e.Name())
		}
	}
	if len(nodes) != 1 {
		return "", fmt.Errorf("%d nodes pinned under %s %v: pass --node", len(nodes), bpf.PinRoot, nodes)
	}
	return bpf.PinDirFor(nodes[0]), nil
}

func scopeName(s datapath.Scope) string {
	if s == datapath.ScopeExternal {
		return "external"
	}
	return "internal"
}

func stateName(s datapath.BackendState) string {
	if s == datapath.BackendTerminating {
		return "terminating"
	}
	return "active"
}

func printServices(w io.Writer, p *bpf.Pinned) error {
	svcs, err := p.Services()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "SERVICE ADDRESS\tSCOPE\tID\tNAME\tAFFINITY\tSLOT\tBACKEND ADDRESS (ID) [STATE]\tCONNECTS\tPACKETS\tREFUSED")
	for _, s := range svcs {
		fe := fmt.Sprintf("%s/%s", addrPort(s.Frontend.IP.String(), s.Frontend.Port), s.Frontend.Proto)
		aff := "-"
		if s.AffinityTimeout > 0 {
			aff = s.AffinityTimeout.String()
		}
		head := fmt.Sprintf("%s\t%s\t%d\t%s\t%s", fe, scopeName(s.Frontend.Scope), s.ID, s.Name, aff)
		counters := fmt.Sprintf("%d\t%d\t%d", s.Counters.Connects, s.Counters.Packets, s.Counters.Refused)
		if len(s.Slots) == 0 {
			fmt.Fprintf(w, "%s\t-\t(no backends: refused)\t%s\n", head, counters)
			continue
		}
		for i, sl := range s.Slots {
			be := fmt.Sprintf("%s (%d) [%s]", sl.Backend.AddrPort(), sl.BackendID, stateName(sl.Backend.State))
			if i == 0 {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", head, sl.Slot, be, counters)
			} else {
				fmt.Fprintf(w, "\t\t\t\t\t%d\t%s\t\t\t\n", sl.Slot, be)
			}
		}
	}
	return nil
}

func addrPort(ip string, port uint16) string { return fmt.Sprintf("%s:%d", ip, port) }

func printBackends(w io.Writer, p *bpf.Pinned) error {
	bes, err := p.Backends()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "ID\tADDRESS\tPROTO\tSTATE")
	for _, b := range bes {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", b.ID, b.Addr, b.Proto, stateName(b.State))
	}
	return nil
}

func printConntrack(w io.Writer, p *bpf.Pinned) error {
	cts, err := p.Conntrack()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "DIR\tPROTO\tSOURCE\tDESTINATION\tSERVICE ID\tBACKEND ID\tTRANSLATION\tAGE")
	for _, c := range cts {
		dir, nat := "service", "-"
		switch {
		case c.Reply && c.SNAT:
			dir, nat = "reply", fmt.Sprintf("src→%s dst→%s", c.Frontend, c.NAT)
		case c.Reply:
			dir, nat = "reply", fmt.Sprintf("src→%s", c.Frontend)
		case c.SNAT:
			nat = fmt.Sprintf("snat src→%s", c.NAT)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", dir, c.Proto, c.Src, c.Dst, c.ServiceID, c.BackendID, nat, c.Age.Round(time.Second))
	}
	return nil
}
