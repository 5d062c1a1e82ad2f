package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"net"
	"strings"
	"time"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/offload"
)

// detachCmd removes the XDP program a `statewire run --fail-mode=open`
// left attached and pinned: its links (the program then detaches from
// both ports), its maps and the bridge's bpffs directory, and reports how
// many frames it forwarded unjudged.
func detachCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("detach", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "instance name of the bridge (statewire run --name; default there: PORTA-PORTB)")
	socket := fs.String("control-socket", "", "control socket of that instance, to refuse while it runs (default /run/statewire/NAME.sock)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire detach --name NAME\n\n"+
			"Removes the XDP program that statewire run --fail-mode=open leaves attached and\n"+
			"pinned in %s/NAME after it exits: from then on nothing passes between the\n"+
			"ports until statewire runs again. Prints how many frames the program forwarded\n"+
			"unjudged while no statewire process ran. Refuses while the instance runs (stop it first).\n\n"+
			"Example:\n  systemctl stop statewire@fw0 && statewire detach --name fw0\n\nFlags:\n", offload.PinRoot)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *name == "" {
		fmt.Fprintf(stderr, "statewire detach: --name is required\n\n")
		fs.Usage()
		return errUsage
	}
	dir, err := offload.PinDir(*name)
	if err != nil {
		return err
	}
	sock := *socket
	if sock == "" {
		sock = control.DefaultPath(*name)
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("statewire %s is running (its control socket %s answers): stop it first; "+
			"with --fail-mode=open its program stays after it exits, then run statewire detach --name %s", *name, sock, *name)
	}
	rep, err := offload.DetachPinned(dir)
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("no pinned XDP program for %q in %s: nothing to detach (it ran with --fail-mode=closed, or was detached already)", *name, dir)
	}
	if err != nil {
		return fmt.Errorf("remove the pins in %s: %w", dir, err)
	}
	ifs := make([]string, 0, len(rep.Interfaces))
	for _, ix := range rep.Interfaces {
		if ifc, err := net.InterfaceByIndex(ix); err == nil {
			ifs = append(ifs, ifc.Name)
		} else {
			ifs = append(ifs, fmt.Sprintf("ifindex %d", ix))
		}
	}
	where := "no interface (its ports are gone)"
	if len(ifs) > 0 {
		where = strings.Join(ifs, " and ")
	}
	fmt.Fprintf(stdout, "statewire %s: XDP program detached from %s, pins in %s removed\n", *name, where, dir)
	if rep.Counted {
		fmt.Fprintf(stdout, "fail-open: forwarded unjudged A->B %d frames (%d bytes), B->A %d frames (%d bytes)\n",
			rep.FailOpen[0].Packets, rep.FailOpen[0].Bytes, rep.FailOpen[1].Packets, rep.FailOpen[1].Bytes)
	}
	return nil
}
