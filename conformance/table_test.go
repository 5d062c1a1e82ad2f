package conformance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

func TestParseEntry(t *testing.T) {
	tests := []struct {
		name, line string
		want       Entry
	}{
		{"tcp assured", "ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=40000 dport=80 src=198.18.0.2 dst=198.18.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2",
			Entry{L3: "ipv4", Proto: "tcp", Timeout: 431999, State: "ESTABLISHED", Assured: true,
				Orig: "src=198.18.0.1 dst=198.18.0.2 sport=40000 dport=80", Reply: "src=198.18.0.2 dst=198.18.0.1 sport=80 dport=40000"}},
		{"counters, unreplied, helper, zone", "ipv4     2 tcp      6 119 SYN_SENT src=1.2.3.4 dst=5.6.7.8 sport=1 dport=21 packets=1 bytes=60 [UNREPLIED] src=5.6.7.8 dst=1.2.3.4 sport=21 dport=1 packets=0 bytes=0 mark=0 zone=42 helper=ftp use=1",
			Entry{L3: "ipv4", Proto: "tcp", Timeout: 119, State: "SYN_SENT", Unreplied: true, Zone: 42, Helper: "ftp",
				Orig: "src=1.2.3.4 dst=5.6.7.8 sport=1 dport=21", Reply: "src=5.6.7.8 dst=1.2.3.4 sport=21 dport=1"}},
		{"icmp", "ipv4     2 icmp     1 29 src=198.18.0.1 dst=198.18.0.2 type=8 code=0 id=7 src=198.18.0.2 dst=198.18.0.1 type=0 code=0 id=7 mark=0 use=1",
			Entry{L3: "ipv4", Proto: "icmp", Timeout: 29,
				Orig: "src=198.18.0.1 dst=198.18.0.2 type=8 code=0 id=7", Reply: "src=198.18.0.2 dst=198.18.0.1 type=0 code=0 id=7"}},
		{"ipv6 addresses made canonical", "ipv6     10 udp      17 30 src=2001:0002:0000::1 dst=2001:2::2 sport=5 dport=6 [UNREPLIED] src=2001:2::2 dst=2001:2::1 sport=6 dport=5 mark=0 use=1",
			Entry{L3: "ipv6", Proto: "udp", Timeout: 30, Unreplied: true,
				Orig: "src=2001:2::1 dst=2001:2::2 sport=5 dport=6", Reply: "src=2001:2::2 dst=2001:2::1 sport=6 dport=5"}},
		{"generic", "ipv4     2 unknown  47 599 src=10.0.0.1 dst=10.0.0.2 src=10.0.0.2 dst=10.0.0.1 [OFFLOAD] mark=0 use=1",
			Entry{L3: "ipv4", Proto: "unknown", Timeout: 599, Orig: "src=10.0.0.1 dst=10.0.0.2", Reply: "src=10.0.0.2 dst=10.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEntry(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Line = tc.line
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{
		"ipv4 2 tcp 6",
		"ipv4 2 tcp 6 x ESTABLISHED src=1.1.1.1 dst=2.2.2.2 src=2.2.2.2 dst=1.1.1.1",
		"ipv4 2 udp 17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2",
		"ipv4 2 udp 17 30 sport=1 src=1.1.1.1 dst=2.2.2.2 src=2.2.2.2 dst=1.1.1.1",
		"ipv4 2 udp 17 30 src=1 src=2 src=3",
	} {
		if _, err := ParseEntry(bad); err == nil {
			t.Errorf("ParseEntry(%q): got no error", bad)
		}
	}
}

func mustEntry(t *testing.T, line string) Entry {
	t.Helper()
	e, err := ParseEntry(line)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCompareTables(t *testing.T) {
	const (
		est  = "ipv4 2 tcp 6 %d ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 src=2.2.2.2 dst=1.1.1.1 sport=80 dport=1 [ASSURED] mark=0 zone=%d use=1"
		udp  = "ipv4 2 udp 17 30 src=1.1.1.1 dst=2.2.2.2 sport=5 dport=53 [UNREPLIED] src=2.2.2.2 dst=1.1.1.1 sport=53 dport=5 mark=0 use=1"
		syn  = "ipv4 2 tcp 6 120 SYN_SENT src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 [UNREPLIED] src=2.2.2.2 dst=1.1.1.1 sport=80 dport=1 mark=0 use=1"
		help = "ipv4 2 tcp 6 431999 ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 src=2.2.2.2 dst=1.1.1.1 sport=80 dport=1 [ASSURED] mark=0 helper=ftp use=1"
	)
	e := func(f string, a ...any) Entry { return mustEntry(t, fmt.Sprintf(f, a...)) }
	tests := []struct {
		name         string
		kernel, ours []Entry
		want         []string // What of each difference
	}{
		{"equal within tolerance", []Entry{e(est, 431990, 0)}, []Entry{e(est, 431999, 0)}, nil},
		{"timeout beyond tolerance", []Entry{e(est, 431900, 0)}, []Entry{e(est, 431999, 0)}, []string{"timeout"}},
		{"only ours", nil, []Entry{e(udp)}, []string{"missing"}},
		{"only the kernel", []Entry{e(udp)}, nil, []string{"missing"}},
		{"state and flags", []Entry{e(syn)}, []Entry{e(est, 120, 0)}, []string{"state,flags"}},
		{"helper", []Entry{e(est, 431999, 0)}, []Entry{e(help)}, []string{"helper"}},
		{"one per zone", []Entry{e(est, 431999, 0)}, []Entry{e(est, 431999, 0), e(est, 431999, 42)}, []string{"entries"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, d := range CompareTables(tc.kernel, tc.ours, 10) {
				got = append(got, d.What)
				if d.String() == "" {
					t.Error("empty description")
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestOursTable checks statewire's side of the table comparison: a UDP
// exchange listed through ctlist and parsed back, the fake clock expiring
// it, and labels for drops.
func TestOursTable(t *testing.T) {
	o, err := NewOurs(Options{}, flowtable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	q := packettest.UDP4(cli4, srv4, 5000, 53, []byte("q"))
	got := o.Labels([][]byte{q, toClient(packettest.UDP4(srv4, cli4, 53, 5000, []byte("a")))})
	if strings.Join(got, " ") != "NEW ESTABLISHED" {
		t.Fatalf("got %v, want [NEW ESTABLISHED]", got)
	}
	tab := o.Table()
	if len(tab) != 1 {
		t.Fatalf("got %d entries, want 1", len(tab))
	}
	want := Entry{L3: "ipv4", Proto: "udp", Timeout: 30, Orig: "src=198.18.0.1 dst=198.18.0.2 sport=5000 dport=53",
		Reply: "src=198.18.0.2 dst=198.18.0.1 sport=53 dport=5000", Line: tab[0].Line}
	if tab[0] != want {
		t.Errorf("got  %+v\nwant %+v", tab[0], want)
	}
	o.Advance(31e9)
	if tab := o.Table(); len(tab) != 0 {
		t.Errorf("after 31 s: got %v, want no entry", lines(tab))
	}
	if l := Label(bridge.Result{Verdict: bridge.Drop, State: statemachine.StateNew}); l != Dropped {
		t.Errorf("dropped packet: got %s, want %s", l, Dropped)
	}
	if l := Label(bridge.Result{Verdict: bridge.Accept}); l != "NONE" {
		t.Errorf("no state: got %s, want NONE", l)
	}
}

func TestHelperRules(t *testing.T) {
	if got := HelperRules(Options{}); got != "" {
		t.Errorf("no helpers: got %q, want none", got)
	}
	opts := Options{Helpers: true, HelperPorts: []HelperPort{{"ftp", "tcp", 2121}}}
	r := HelperRules(opts)
	for _, want := range []string{"--dport 21 -j CT --helper ftp", "--dport 69 -j CT --helper tftp", "--dport 6667 -j CT --helper irc", "--dport 2121 -j CT --helper ftp"} {
		if !strings.Contains(r, want) {
			t.Errorf("statewire rules lack %q:\n%s", want, r)
		}
	}
	if _, err := OurSettings(opts); err != nil {
		t.Errorf("OurSettings: %v", err)
	}
	nft := ruleset(opts)
	for _, want := range []string{`type "ftp" protocol tcp`, `tcp dport 2121 ct helper set "h_x0"`, `tcp dport 21 ct helper set "h_ftp"`} {
		if !strings.Contains(nft, want) {
			t.Errorf("kernel ruleset lacks %q:\n%s", want, nft)
		}
	}
}
