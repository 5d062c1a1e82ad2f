package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/statewire/statewire/conformance"
	"github.com/statewire/statewire/replay"
)

// errDisagree is returned when the agreement is below --min-agreement.
var errDisagree = errors.New("agreement below --min-agreement")

func conformanceCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	helpers := fs.Bool("helpers", false, "attach the ftp (TCP 21), tftp (UDP 69) and irc (TCP 6667) helpers by rule on both sides")
	minAgree := fs.Float64("min-agreement", 1.0, "exit non-zero when the packets equal / compared over all captures fall below this")
	inject := fs.Bool("inject-fragments", false, "send IP fragments to the kernel too (it reassembles them); fragments are never compared one by one")
	tolerance := fs.Int64("timeout-tolerance", conformance.DefaultTimeoutTolerance, "seconds the final tables' timeouts may differ")
	failTable := fs.Bool("fail-on-table", false, "also exit non-zero when the final tables differ")
	vlanZones := fs.Bool("vlan-zones", true, vlanZonesHelp+" (the kernel oracle has no zones: with true, a tuple seen on two VLANs differs)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire conformance [flags] FILE.pcap|FILE.pcapng...\n\n"+
			"Replays each capture through a Linux kernel bridge (br_netfilter, nftables ct state,\n"+
			"in a namespace lab) and through statewire's pipeline, and prints per capture the\n"+
			"packets whose user-land conntrack state agrees / the packets compared, every\n"+
			"difference (packet number, tuple, kernel state, statewire state), the packets the\n"+
			"kernel never tracks (non-IP, fragments, unseen), and the differences between the\n"+
			"final connection tables (state, ASSURED/UNREPLIED, helper, timeout). Link types:\n"+
			"Ethernet, Linux cooked (SLL, SLL2), raw IP, BSD loopback. Needs root.\n"+
			"Known differences and their reasons: CONFORMANCE.md.\n\n"+
			"Example:\n  statewire conformance --helpers --min-agreement 0.999 captures/*.pcap\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	if *minAgree < 0 || *minAgree > 1 {
		return fmt.Errorf("--min-agreement must be within 0..1, got %v", *minAgree)
	}
	// Read every capture before building the lab: a bad file or link
	// type is reported at once.
	type capture struct {
		name   string
		frames []replay.Frame
	}
	var caps []capture
	for _, p := range fs.Args() {
		frames, err := replay.ReadFile(p)
		if err != nil {
			return err
		}
		caps = append(caps, capture{filepath.Base(p), frames})
	}
	if os.Geteuid() != 0 {
		return errors.New("the kernel side needs root (network namespaces, veths, nftables, conntrack)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	h, err := conformance.NewHarness(ctx, conformance.Options{Helpers: *helpers, InjectFragments: *inject, IgnoreVLAN: !*vlanZones}, *tolerance)
	if err != nil {
		return err
	}
	defer h.Close()
	var equal, compared, tableDiffs int
	for _, c := range caps {
		r, err := h.Compare(ctx, c.name, c.frames)
		if err != nil {
			return err
		}
		r.Write(stdout)
		equal += r.Equal
		compared += r.Compared
		tableDiffs += len(r.TableDiffs)
	}
	agreement := 1.0
	if compared > 0 {
		agreement = float64(equal) / float64(compared)
	}
	fmt.Fprintf(stdout, "# total: %d/%d packets agree (%.3f%%) over %d captures; %d final-table differences\n",
		equal, compared, 100*agreement, len(caps), tableDiffs)
	if agreement < *minAgree {
		return fmt.Errorf("%w: %.5f < %.5f", errDisagree, agreement, *minAgree)
	}
	if *failTable && tableDiffs > 0 {
		return fmt.Errorf("%d final-table differences", tableDiffs)
	}
	return nil
}
