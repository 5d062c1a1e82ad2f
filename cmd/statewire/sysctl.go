package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/statewire/statewire/control"
)

func sysctlCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sysctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cl := addClientFlags(fs)
	fs.Bool("w", false, "accepted for sysctl(8) compatibility: NAME=VALUE writes anyway")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire sysctl [flags] [NAME[=VALUE]...]\n\n"+
			"Reads or sets the conntrack timeouts and switches of a running bridge under the\n"+
			"kernel's names, with or without the net.netfilter. prefix; no NAME lists them all.\n"+
			"Changes apply to the next packet of every worker; they are not saved.\n\n"+
			"Examples:\n"+
			"  statewire sysctl\n"+
			"  statewire sysctl net.netfilter.nf_conntrack_tcp_timeout_established\n"+
			"  statewire sysctl -w nf_conntrack_tcp_loose=0 nf_conntrack_udp_timeout=60\n\n"+
			"Names: %s\n\nFlags:\n", strings.Join(control.SysctlNames(), " "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		_, err := cl.do(control.Request{Op: control.OpSysctlGet}, stdout)
		return err
	}
	for _, a := range fs.Args() {
		req := control.Request{Op: control.OpSysctlGet, Name: a}
		if name, value, ok := strings.Cut(a, "="); ok {
			req = control.Request{Op: control.OpSysctlSet, Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)}
		}
		if _, err := cl.do(req, stdout); err != nil {
			return err
		}
	}
	return nil
}
