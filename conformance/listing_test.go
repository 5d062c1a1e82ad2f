package conformance

import (
	"context"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/replay"
)

// timeoutField matches the seconds-to-expiry column of a `conntrack -L`
// line (after the protocol name and number): the one field two listings of
// the same traffic cannot share, since the two clocks differ.
var timeoutField = regexp.MustCompile(`^(\S+ +\d+ )\d+ `)

// masterUse matches the reference count of a helper's master entry: the
// kernel counts one per data connection (ct->master holds a reference),
// statewire prints 1 (CONFORMANCE.md, "use= on helper masters").
var masterUse = regexp.MustCompile(`( helper=\S+ use=)\d+$`)

// normaliseListing masks the timeout column and a master's use count, and
// sorts the lines.
func normaliseListing(s string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			l = timeoutField.ReplaceAllString(l, "${1}T ")
			lines = append(lines, masterUse.ReplaceAllString(l, "${1}N"))
		}
	}
	sort.Strings(lines)
	return lines
}

// TestListingDiffable replays captures through the kernel bridge and
// through statewire and requires `statewire conntrack -L` to print, line
// for line and byte for byte, what the kernel's `conntrack -L` prints for
// the same traffic (the timeout column and a helper master's use count
// masked), so an operator can diff the two.
func TestListingDiffable(t *testing.T) {
	lab.RequireRoot(t)
	shared := testenv.Shared(t)
	ctx := context.Background()
	opts := Options{Helpers: true, InjectFragments: true}
	o, err := NewOracle(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for _, name := range []string{
		"tcp-http-handshake-data-fin.pcap",
		"tcp-syn-flood-200.pcap",
		"dns-udp-query-response.pcap",
		"icmp-echo-ping.pcap",
		"icmpv6-echo.pcap",
		"tcp-ipv6-smtp.pcap",
		"ftp-passive-pasv-download.pcap",
		"irc-dcc-send-with-data-conn.pcap",
	} {
		t.Run(name, func(t *testing.T) {
			frames, err := replay.ReadFile(filepath.Join(shared, "pcaps", name))
			if err != nil {
				t.Fatal(err)
			}
			padded := make([][]byte, len(frames))
			for i, f := range frames {
				padded[i] = Padded(f)
			}
			if _, err := o.StatesFrames(ctx, padded); err != nil {
				t.Fatal(err)
			}
			kernel, err := o.Lab().Run(ctx, o.Lab().BridgeNS, "conntrack", "-L")
			if err != nil {
				t.Fatal(err)
			}
			ours, err := NewOurs(opts, flowtable.Config{})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range padded {
				ours.Step(f, 0)
			}
			k, w := normaliseListing(kernel), normaliseListing(ours.Listing(ctlist.Conntrack))
			if len(k) == 0 {
				t.Fatalf("the kernel listed no connection for %s", name)
			}
			if strings.Join(k, "\n") != strings.Join(w, "\n") {
				t.Errorf("listings differ\nkernel conntrack -L:\n  %s\nstatewire conntrack -L:\n  %s",
					strings.Join(k, "\n  "), strings.Join(w, "\n  "))
			}
		})
	}
}
