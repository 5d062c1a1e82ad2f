package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/rules"
)

func rulesCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rules", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cl := addClientFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire rules [flags] load FILE [FILE6] | show\n"+
			"       statewire rules check [--port-a IF --port-b IF] [--ipsets SETS] FILE [FILE6]\n\n"+
			"load replaces the rules of a running bridge atomically: the bridge parses and\n"+
			"compiles FILE (iptables-save format; FILE6 the ip6tables-save file) first, and a\n"+
			"file with an error leaves the running rules untouched and names file:line.\n"+
			"Existing connections stay; the new rules judge the next packet. SIGHUP to\n"+
			"`statewire run` reloads the files it was started with. Both read the\n"+
			"--ipsets files run was started with again (ipset save format).\n"+
			"show prints the running rules.\n"+
			"check reads FILE (and FILE6) as `statewire run --rules FILE [--rules6 FILE6]`\n"+
			"would, without a running bridge: exit 0 and a summary, or 1 and the first error\n"+
			"as file:line: and the word statewire cannot read. With --port-a and --port-b it\n"+
			"also checks that -i/-o/--physdev names are bridge ports.\n\nFlags (load, show):\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	a := fs.Args()
	switch {
	case len(a) >= 1 && a[0] == "check":
		return rulesCheck(a[1:], stdout, stderr)
	case len(a) == 1 && a[0] == "show":
		_, err := cl.do(control.Request{Op: control.OpRulesShow}, stdout)
		return err
	case len(a) >= 2 && len(a) <= 3 && a[0] == "load":
		// The bridge reads the files: give it absolute paths.
		req := control.Request{Op: control.OpRulesLoad}
		var err error
		if req.Path, err = filepath.Abs(a[1]); err != nil {
			return err
		}
		if len(a) == 3 {
			if req.Path6, err = filepath.Abs(a[2]); err != nil {
				return err
			}
		}
		n, err := cl.do(req, stdout)
		if err == nil {
			fmt.Fprintf(stdout, "loaded %d rules\n", n)
		}
		return err
	}
	fs.Usage()
	return errUsage
}

// rulesCheck is `statewire rules check`: load and compile the files as
// `statewire run` does, print a summary or return the first error.
func rulesCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rules check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	portA := fs.String("port-a", "", "port A's interface name: check interface names against it")
	portB := fs.String("port-b", "", "port B's interface name")
	var ipsets fileList
	fs.Var(&ipsets, "ipsets", "`ipset save` file with the sets the rules name (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire rules check [--port-a IF --port-b IF] [--ipsets SETS] FILE [FILE6]\n\n"+
			"Reads FILE (iptables-save format; with FILE6, FILE is IPv4 only and FILE6 the\n"+
			"ip6tables-save file) as statewire run would and compiles it. Exit 0 with a\n"+
			"summary, or 1 with the first error naming file:line and the word. Without\n"+
			"--port-a/--port-b, interface names are not checked.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	a := fs.Args()
	if len(a) < 1 || len(a) > 2 || (*portA == "") != (*portB == "") {
		fs.Usage()
		return errUsage
	}
	var file6 string
	if len(a) == 2 {
		file6 = a[1]
	}
	ports := [2]string{*portA, *portB}
	checked := *portA != ""
	if !checked {
		ports = [2]string{"", ""}
	}
	n, err := rules.CheckFilesSets(a[0], file6, ipsets, ports, !checked)
	if err != nil {
		return err
	}
	files := a[0]
	if file6 != "" {
		files += ", " + file6
	}
	note := ""
	if !checked {
		note = " (interface names not checked: give --port-a and --port-b)"
	}
	fmt.Fprintf(stdout, "%s: ok, %d IPv4 and %d IPv6 rules in FORWARD, PREROUTING and the chains they reach%s\n", files, n[0], n[1], note)
	return nil
}
