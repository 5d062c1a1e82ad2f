package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/statewire/statewire/control"
)

// clientFlags locate the control socket of a running bridge.
type clientFlags struct {
	name, socket string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	cf := &clientFlags{}
	fs.StringVar(&cf.name, "name", "", "instance name (`statewire run --name`, default PORTA-PORTB); default: the only bridge running")
	fs.StringVar(&cf.socket, "socket", os.Getenv("STATEWIRE_SOCKET"), "control socket (default $STATEWIRE_SOCKET, else /run/statewire/NAME.sock)")
	return cf
}

func (cf *clientFlags) path() (string, error) {
	switch {
	case cf.socket != "":
		return cf.socket, nil
	case cf.name != "":
		return control.DefaultPath(cf.name), nil
	}
	return control.FindSocket(control.SocketDir)
}

// do sends one request, printing the output lines on stdout; SIGINT and
// SIGTERM end it (the way out of an event stream).
func (cf *clientFlags) do(req control.Request, stdout io.Writer) (int, error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	path, err := cf.path()
	if err != nil {
		return 0, err
	}
	n, err := control.Do(ctx, path, req, func(l string) { fmt.Fprintln(stdout, l) })
	if err != nil && ctx.Err() != nil && req.Op == control.OpEvents {
		return n, nil // interrupted event stream: a normal end
	}
	return n, err
}

func conntrackCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conntrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cl := addClientFlags(fs)
	var (
		list, count, stats, del, flush, events, expect bool
		format, proto, family                          string
		f                                              control.Filter
	)
	fs.BoolVar(&list, "L", false, "list the connection table (conntrack -L)")
	fs.BoolVar(&count, "C", false, "count the entries (conntrack -C)")
	fs.BoolVar(&stats, "S", false, "per-worker statistics with the kernel's counter names (conntrack -S)")
	fs.BoolVar(&del, "D", false, "delete the entries that match the filters (conntrack -D)")
	fs.BoolVar(&flush, "F", false, "flush the whole table (conntrack -F)")
	fs.BoolVar(&events, "E", false, "print [NEW], [UPDATE] and [DESTROY] events until interrupted (conntrack -E)")
	fs.BoolVar(&expect, "expect-list", false, "list the expectations (/proc/net/nf_conntrack_expect format)")
	fs.StringVar(&format, "o", "", "output format of -L and -E: proc (/proc/net/nf_conntrack) or json; default the conntrack -L format")
	for _, n := range []string{"p", "proto"} {
		fs.StringVar(&proto, n, "", "filter: L4 protocol (tcp, udp, icmp, icmpv6, ... or a number)")
	}
	fs.StringVar(&family, "f", "", "filter: family ipv4 or ipv6")
	for _, n := range []string{"s", "src", "orig-src"} {
		fs.StringVar(&f.Src, n, "", "filter: original source address or prefix")
	}
	for _, n := range []string{"d", "dst", "orig-dst"} {
		fs.StringVar(&f.Dst, n, "", "filter: original destination address or prefix")
	}
	for _, n := range []string{"sport", "orig-port-src"} {
		fs.IntVar(&f.SPort, n, 0, "filter: original source port")
	}
	for _, n := range []string{"dport", "orig-port-dst"} {
		fs.IntVar(&f.DPort, n, 0, "filter: original destination port")
	}
	fs.StringVar(&f.State, "state", "", "filter: TCP state (SYN_SENT, ESTABLISHED, TIME_WAIT, ...)")
	fs.StringVar(&f.Status, "status", "", "filter: status bits, comma-separated: ASSURED, UNREPLIED, SEEN_REPLY, EXPECTED, OFFLOAD (in the XDP fast path)")
	fs.IntVar(&f.Zone, "zone", 0, "filter: zone (the VLAN id)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire conntrack -L|-C|-S|-D|-F|-E|--expect-list [filters] [flags]\n\n"+
			"Reads and changes the connection table of a running `statewire run` through its\n"+
			"control socket, like conntrack(8) does for the kernel.\n\n"+
			"Examples:\n"+
			"  statewire conntrack -L -p tcp --state ESTABLISHED\n"+
			"  statewire conntrack -L -o proc          # /proc/net/nf_conntrack format\n"+
			"  statewire conntrack -D -s 198.18.0.1 -p tcp --dport 22\n"+
			"  statewire conntrack -E -p tcp\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if proto != "" {
		p, err := control.ParseProto(proto)
		if err != nil {
			return err
		}
		f.Proto = p
	}
	switch family {
	case "":
	case "ipv4", "4":
		f.Family = 4
	case "ipv6", "6":
		f.Family = 6
	default:
		return fmt.Errorf("-f must be ipv4 or ipv6, got %q", family)
	}
	var ops []string
	for _, o := range []struct {
		set bool
		op  string
	}{{list, control.OpList}, {count, control.OpCount}, {stats, control.OpStats}, {del, control.OpDelete},
		{flush, control.OpFlush}, {events, control.OpEvents}, {expect, control.OpExpectList}} {
		if o.set {
			ops = append(ops, o.op)
		}
	}
	if len(ops) != 1 || fs.NArg() != 0 {
		fmt.Fprintf(stderr, "statewire conntrack: give exactly one of -L, -C, -S, -D, -F, -E, --expect-list\n\n")
		fs.Usage()
		return errUsage
	}
	req := control.Request{Op: ops[0], Format: format, Filter: f}
	switch req.Op {
	case control.OpCount:
		n, err := cl.do(req, stdout)
		if err == nil {
			fmt.Fprintln(stdout, n)
		}
		return err
	case control.OpDelete:
		if f.IsZero() {
			return fmt.Errorf("-D needs a filter (-p, -s, -d, --sport, --dport, --state, --status); -F flushes everything")
		}
		n, err := cl.do(req, stdout)
		if err == nil {
			fmt.Fprintf(stderr, "statewire conntrack: %d flow entries have been deleted.\n", n)
		}
		return err
	case control.OpFlush:
		_, err := cl.do(req, stdout)
		if err == nil {
			fmt.Fprintf(stderr, "statewire conntrack: connection tracking table has been emptied.\n")
		}
		return err
	case control.OpList:
		n, err := cl.do(req, stdout)
		if err == nil {
			fmt.Fprintf(stderr, "statewire conntrack: %d flow entries have been shown.\n", n)
		}
		return err
	case control.OpExpectList:
		n, err := cl.do(req, stdout)
		if err == nil {
			fmt.Fprintf(stderr, "statewire conntrack: %d expectations have been shown.\n", n)
		}
		return err
	}
	_, err := cl.do(req, stdout)
	return err
}
