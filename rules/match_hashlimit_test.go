package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestHashlimitSaveForm: inputs and what iptables-legacy-save 1.8.9 printed
// for them after iptables-legacy-restore of the same rule into a namespace
// (kernel 6.x, xt_hashlimit revision 3).
func TestHashlimitSaveForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name h1",
			"-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name h1"},
		{"-m hashlimit --hashlimit-above 10/min --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name h2",
			"-m hashlimit --hashlimit-above 10/min --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name h2"},
		{"-m hashlimit --hashlimit 100/hour --hashlimit-mode srcip,dstport --hashlimit-srcmask 24 --hashlimit-name h3",
			"-m hashlimit --hashlimit-upto 100/hour --hashlimit-burst 5 --hashlimit-mode srcip,dstport --hashlimit-name h3 --hashlimit-srcmask 24"},
		{"-m hashlimit --hashlimit-upto 1/day --hashlimit-burst 1 --hashlimit-mode dstip,srcport,srcip,dstport --hashlimit-dstmask 16 --hashlimit-name h4",
			"-m hashlimit --hashlimit-upto 1/day --hashlimit-burst 1 --hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name h4 --hashlimit-dstmask 16"},
		{"-m hashlimit --hashlimit-upto 3/s --hashlimit-name h5 --hashlimit-htable-size 100 --hashlimit-htable-max 50 --hashlimit-htable-expire 5000 --hashlimit-htable-gcinterval 500",
			"-m hashlimit --hashlimit-upto 3/sec --hashlimit-burst 5 --hashlimit-name h5 --hashlimit-htable-size 100 --hashlimit-htable-max 50 --hashlimit-htable-gcinterval 500 --hashlimit-htable-expire 5000"},
		{"-m hashlimit --hashlimit-upto 7/second --hashlimit-name h6 --hashlimit-htable-size 2000000 --hashlimit-htable-max 3000000",
			"-m hashlimit --hashlimit-upto 7/sec --hashlimit-burst 5 --hashlimit-name h6 --hashlimit-htable-size 1048576 --hashlimit-htable-max 1048576"},
		{"-m hashlimit --hashlimit-upto 1kb/s --hashlimit-name h7", "-m hashlimit --hashlimit-upto 1kb/s --hashlimit-name h7"},
		{"-m hashlimit --hashlimit-above 512kb/s --hashlimit-burst 1mb --hashlimit-mode srcip --hashlimit-name h8",
			"-m hashlimit --hashlimit-above 512kb/s --hashlimit-burst 1mb --hashlimit-mode srcip --hashlimit-name h8"},
		{"-m hashlimit --hashlimit-upto 100b/s --hashlimit-burst 150 --hashlimit-name h9",
			"-m hashlimit --hashlimit-upto 96b/s --hashlimit-burst 192b --hashlimit-name h9"},
		{"-m hashlimit --hashlimit-upto 2mb/s --hashlimit-name h10", "-m hashlimit --hashlimit-upto 2mb/s --hashlimit-name h10"},
		{"-m hashlimit --hashlimit-upto 10/sec --hashlimit-rate-match --hashlimit-name h11",
			"-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 5 --hashlimit-name h11 --hashlimit-rate-match"},
		{"-m hashlimit --hashlimit-upto 10/min --hashlimit-rate-match --hashlimit-rate-interval 5 --hashlimit-name h12",
			"-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 5 --hashlimit-name h12 --hashlimit-htable-expire 60000 --hashlimit-rate-match --hashlimit-rate-interval 5"},
		{"-m hashlimit --hashlimit-upto 1kb/s --hashlimit-rate-match --hashlimit-name h13",
			"-m hashlimit --hashlimit-upto 1kb/s --hashlimit-name h13 --hashlimit-rate-match"},
		{"-m hashlimit ! --hashlimit-upto 5/sec --hashlimit-name h14",
			"-m hashlimit --hashlimit-above 5/sec --hashlimit-burst 5 --hashlimit-name h14"},
		{"-m hashlimit ! --hashlimit-above 5/sec --hashlimit-name h15",
			"-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name h15"},
		{"-m hashlimit --hashlimit-upto 3/sec --hashlimit-srcmask 32 --hashlimit-dstmask 0 --hashlimit-mode srcip --hashlimit-name h16",
			"-m hashlimit --hashlimit-upto 3/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name h16 --hashlimit-dstmask 0"},
		{"-m hashlimit --hashlimit-upto 333/sec --hashlimit-name h17", "-m hashlimit --hashlimit-upto 333/sec --hashlimit-burst 5 --hashlimit-name h17"},
		{"-m hashlimit --hashlimit-upto 7/min --hashlimit-burst 1000000 --hashlimit-name h18",
			"-m hashlimit --hashlimit-upto 7/min --hashlimit-burst 1000000 --hashlimit-name h18"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-htable-expire 1000 --hashlimit-name h19",
			"-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name h19"},
		{"-m hashlimit --hashlimit-upto 5/min --hashlimit-htable-expire 1000 --hashlimit-name h20",
			"-m hashlimit --hashlimit-upto 5/min --hashlimit-burst 5 --hashlimit-name h20 --hashlimit-htable-expire 1000"},
		{"-m hashlimit --hashlimit-upto 1000000/sec --hashlimit-name h21", "-m hashlimit --hashlimit-upto 1000000/sec --hashlimit-burst 5 --hashlimit-name h21"},
		{"-m hashlimit --hashlimit-upto 3/sec --hashlimit-mode srcport --hashlimit-name h22",
			"-m hashlimit --hashlimit-upto 3/sec --hashlimit-burst 5 --hashlimit-mode srcport --hashlimit-name h22"},
		{"-m hashlimit --hashlimit-upto 3/sec --hashlimit-mode srcip --hashlimit-name h23 --hashlimit-rate-interval 3",
			"-m hashlimit --hashlimit-upto 3/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name h23"},
		{"-m hashlimit --hashlimit-upto 64kb/s --hashlimit-burst 100kb --hashlimit-name h24",
			"-m hashlimit --hashlimit-upto 64kb/s --hashlimit-burst 128kb --hashlimit-name h24"},
		{"-m hashlimit --hashlimit-upto 5/minute --hashlimit-burst 2 --hashlimit-name h25 --hashlimit-htable-expire 120000",
			"-m hashlimit --hashlimit-upto 5/min --hashlimit-burst 2 --hashlimit-name h25 --hashlimit-htable-expire 120000"},
		{"-p udp -m udp --dport 53 -m hashlimit --hashlimit-upto 5/sec --hashlimit-name x",
			"-p udp -m udp --dport 53 -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name x"},
	}
	for _, tc := range tests {
		rs, err := load(t, wrap("filter", "-A FORWARD "+tc.in+" -j DROP"), FamilyIPv4)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := saveString(t, rs, FamilyIPv4)
		if !strings.Contains(got, "-A FORWARD "+tc.want+" -j DROP\n") {
			t.Errorf("%q saved as\n%s\nwant %q", tc.in, got, tc.want)
			continue
		}
		// The saved form reads back to itself.
		rs2 := mustLoad(t, got, FamilyIPv4)
		if got2 := saveString(t, rs2, FamilyIPv4); got2 != got {
			t.Errorf("%q: saved again as\n%s\nwant\n%s", tc.in, got2, got)
		}
	}
	// ip6tables-legacy-save: the default masks are 128.
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 5/sec --hashlimit-name x --hashlimit-srcmask 64 --hashlimit-mode srcip -j DROP\n"+
		"-A FORWARD -m hashlimit --hashlimit-upto 5/sec --hashlimit-name y --hashlimit-dstmask 128 -j DROP"), FamilyIPv6)
	want := "-A FORWARD -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name x --hashlimit-srcmask 64 -j DROP\n" +
		"-A FORWARD -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name y -j DROP\n"
	if got := saveString(t, rs, FamilyIPv6); !strings.Contains(got, want) {
		t.Errorf("IPv6 saved as\n%s\nwant\n%s", got, want)
	}
}

// TestHashlimitRefusals: what iptables-legacy-restore 1.8.9 or the kernel
// (6.x) refused on the same text.
func TestHashlimitRefusals(t *testing.T) {
	for _, tc := range []struct {
		rule string
		err  error
		msg  string
	}{
		// The kernel: avg × burst overflows 64 bits of credits.
		{"-m hashlimit --hashlimit-upto 1/day --hashlimit-name h4", ErrSyntax, "refused by the kernel"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name h --hashlimit-htable-expire 0", ErrSyntax, "must not be 0"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name h --hashlimit-htable-gcinterval 0", ErrSyntax, "must not be 0"},
		{"-m hashlimit --hashlimit-upto 5/sec", ErrSyntax, `"--hashlimit-name" must be specified`},
		{"-m hashlimit --hashlimit-name x", ErrSyntax, "--hashlimit-upto or --hashlimit-above"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name x --hashlimit-srcmask 33", ErrSyntax, "0-32 for IPv4"},
		{"-m hashlimit --hashlimit-upto 2000000/sec --hashlimit-name x", ErrSyntax, "rate too fast"},
		{"-m hashlimit --hashlimit-upto 0/sec --hashlimit-name x", ErrSyntax, "bad value"},
		{"-m hashlimit --hashlimit-upto 5/fortnight --hashlimit-name x", ErrSyntax, "bad value"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 1000001 --hashlimit-name x", ErrSyntax, "1-1000000"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 0 --hashlimit-name x", ErrSyntax, "1-1000000"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-mode foo --hashlimit-name x", ErrSyntax, "srcip, srcport, dstip, dstport"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name a/b", ErrSyntax, "no '/'"},
		{"-m hashlimit --hashlimit-upto 1kb/s --hashlimit-burst 10b --hashlimit-name x", ErrSyntax, "burst cannot be smaller than 1024b"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name x --hashlimit-name y", ErrSyntax, "can only be used once"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-above 5/sec --hashlimit-name x", ErrSyntax, "only one"},
		{"-m hashlimit --hashlimit-upto 5/sec ! --hashlimit-name x", ErrSyntax, "cannot be inverted"},
		{"--hashlimit-upto 5/sec --hashlimit-name x", ErrSyntax, "needs -m hashlimit"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name x -m limit", ErrUnsupported, "one -m limit or -m recent per rule"},
	} {
		_, err := load(t, wrap("filter", "-A FORWARD "+tc.rule), FamilyIPv4)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != 6 || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want %v on line 6 containing %q", tc.rule, err, tc.err, tc.msg)
		}
	}
}
