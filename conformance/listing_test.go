package conformance

import (
	"context"
	"net/netip"
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

// procTimeoutField is timeoutField for /proc/net/nf_conntrack lines (L3
// name and number first).
var procTimeoutField = regexp.MustCompile(`^(\S+ +\d+ \S+ +\d+ )\d+ `)

// procHelper and procAddr6 match what statewire's proc format prints
// differently from the kernel's /proc/net/nf_conntrack (CONFORMANCE.md,
// "The proc format"): a helper= field (the kernel's ct_seq_show has none)
// and IPv6 addresses, which the kernel prints in full (%pI6).
var (
	procHelper = regexp.MustCompile(` helper=\S+`)
	procAddr6  = regexp.MustCompile(`((?:src|dst)=)([0-9a-f]{4}(?::[0-9a-f]{4}){7})\b`)
)

// normaliseProc removes the two known proc-format differences from lines
// of either side.
func normaliseProc(s string) string {
	s = procHelper.ReplaceAllString(s, "")
	return procAddr6.ReplaceAllStringFunc(s, func(m string) string {
		sub := procAddr6.FindStringSubmatch(m)
		a, err := netip.ParseAddr(sub[2])
		if err != nil {
			return m
		}
		return sub[1] + a.String()
	})
}

// normaliseListing masks the timeout column (re matches it) and sorts the
// lines. Everything else, use= included, must be equal.
func normaliseListing(s string, re *regexp.Regexp) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			lines = append(lines, re.ReplaceAllString(l, "${1}T "))
		}
	}
	sort.Strings(lines)
	return lines
}

// listing is what `statewire conntrack -L -o FORMAT` prints for o's table:
// the live entries at o's clock, each master's use= counting its live
// data connections (Table.ChildCounts: o's goroutine owns the table).
func listing(o *Ours, f ctlist.Format) string {
	now := o.rp.Now() + o.now - o.last
	children := o.rp.Table.ChildCounts()
	var b strings.Builder
	for i := range o.rp.Table.NumShards() {
		s := o.rp.Table.Shard(i)
		s.Range(func(e *flowtable.Entry) bool {
			if e.Conn.Expires > now {
				var es flowtable.EntrySnapshot
				s.Snapshot(e, &es)
				es.Children = children[es.Ref]
				b.WriteString(ctlist.Line(&es, now, f))
				b.WriteByte('\n')
			}
			return true
		})
	}
	return b.String()
}

// TestListingDiffable replays captures through the kernel bridge and
// through statewire and requires `statewire conntrack -L` to print, line
// for line and byte for byte, what the kernel's `conntrack -L` prints for
// the same traffic (the timeout column masked), so an operator can diff
// the two; and the same of the proc format against the kernel's
// /proc/net/nf_conntrack. use= included: a helper's master counts one
// reference per live data connection (FTP, IRC DCC), and the proc file one
// more for its reader.
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
		"ftp-active-port-download.pcap",
		"ftp-ipv6-eprt-epsv.pcap",
		"tftp-rrq-octet.pcap",
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
			kernelProc, err := o.Lab().Run(ctx, o.Lab().BridgeNS, "cat", "/proc/net/nf_conntrack")
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
			k, w := normaliseListing(kernel, timeoutField), normaliseListing(listing(ours, ctlist.Conntrack), timeoutField)
			if len(k) == 0 {
				t.Fatalf("the kernel listed no connection for %s", name)
			}
			if strings.Join(k, "\n") != strings.Join(w, "\n") {
				t.Errorf("listings differ\nkernel conntrack -L:\n  %s\nstatewire conntrack -L:\n  %s",
					strings.Join(k, "\n  "), strings.Join(w, "\n  "))
			}
			kp := normaliseListing(normaliseProc(kernelProc), procTimeoutField)
			wp := normaliseListing(normaliseProc(listing(ours, ctlist.Proc)), procTimeoutField)
			if strings.Join(kp, "\n") != strings.Join(wp, "\n") {
				t.Errorf("proc listings differ\nkernel /proc/net/nf_conntrack:\n  %s\nstatewire conntrack -L -o proc:\n  %s",
					strings.Join(kp, "\n  "), strings.Join(wp, "\n  "))
			}
		})
	}
}
