package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/statewire/statewire/control"
)

func rulesCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rules", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cl := addClientFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire rules [flags] load FILE [FILE6] | show\n\n"+
			"load replaces the rules of a running bridge atomically: the bridge parses and\n"+
			"compiles FILE (iptables-save format; FILE6 the ip6tables-save file) first, and a\n"+
			"file with an error leaves the running rules untouched and names file:line.\n"+
			"Existing connections stay; the new rules judge the next packet. SIGHUP to\n"+
			"`statewire run` reloads the files it was started with.\n"+
			"show prints the running rules.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	a := fs.Args()
	switch {
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
