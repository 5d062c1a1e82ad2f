// Command statewire is a transparent, stateful bump-in-the-wire: it bridges
// two ports over AF_XDP and tracks connections with Linux conntrack
// semantics. Subcommands:
//
//	statewire run --port-a IF --port-b IF [flags]   bridge two interfaces
//	statewire demo [flags]                          run the bridge in a built-in lab
//	statewire replay [flags] FILE.pcap              track a capture offline
//	statewire sync -i|-e|-c|-f|-n|-s                state sync with a peer bridge
//	statewire detach --name NAME                    remove a fail-open program left attached
//	statewire version
//
// Every subcommand takes -h for its flags and their defaults.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "bridge two interfaces over AF_XDP with connection tracking", runCmd},
		{"demo", "build a lab of namespaces and veth pairs, bridge it, drive traffic, clean up", demoCmd},
		{"replay", "run a pcap/pcapng capture through the conntrack pipeline", replayCmd},
		{"perf", "compare Mpps with the kernel bridge (+conntrack) and XDP_REDIRECT in a lab, counted at an XDP sink", perfCmd},
		{"conformance", "compare statewire with the Linux kernel on captures (per-packet states, final tables)", conformanceCmd},
		{"conntrack", "list, count, delete, flush and watch the live connection table (conntrack -L/-C/-D/-F/-E/-S)", conntrackCmd},
		{"sysctl", "read or set conntrack timeouts and switches of the running bridge", sysctlCmd},
		{"rules", "check a rules file; load (atomically) or show the rules of the running bridge", rulesCmd},
		{"sync", "state sync with a peer bridge: caches, commit at a failover, resync, stats (conntrackd -i/-e/-c/-f/-n/-s)", syncCmd},
		{"detach", "remove the XDP program --fail-mode=open left attached (and its pins), report its fail-open count", detachCmd},
		{"version", "print the version", func(_ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "statewire", version)
			return nil
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "statewire: a transparent stateful bump-in-the-wire (AF_XDP + Linux conntrack semantics)\n\nUsage: statewire COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'statewire COMMAND -h' for a command's flags.\n")
}

func main() {
	os.Exit(mainWithArgs(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors whose message already went to stderr with usage.
var errUsage = errors.New("usage")

func mainWithArgs(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "statewire %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "statewire: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}
