package rules

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
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
		// iptables saves 15b/s as 0b/s (which it refuses to read), and
		// dies of SIGFPE on 1b/s with a burst: statewire refuses both.
		{"-m hashlimit --hashlimit-upto 15b/s --hashlimit-name x", ErrSyntax, "smallest one, 16b/s"},
		{"-m hashlimit --hashlimit-upto 1b/s --hashlimit-burst 10 --hashlimit-name x", ErrSyntax, "smallest one, 16b/s"},
		{"-m hashlimit --hashlimit-upto 16b/s --hashlimit-burst 10 --hashlimit-name x", ErrSyntax, "burst cannot be smaller than 16b"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-above 5/sec --hashlimit-name x", ErrSyntax, "only one"},
		{"-m hashlimit --hashlimit-upto 5/sec ! --hashlimit-name x", ErrSyntax, "cannot be inverted"},
		{"--hashlimit-upto 5/sec --hashlimit-name x", ErrSyntax, "needs -m hashlimit"},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name x -m limit", ErrUnsupported, "one -m limit, -m recent or -m connlimit per rule (-m hashlimit included)"},
	} {
		_, err := load(t, wrap("filter", "-A FORWARD "+tc.rule), FamilyIPv4)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != 6 || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want %v on line 6 containing %q", tc.rule, err, tc.err, tc.msg)
		}
	}
}

// hlRun evaluates p through rs at now with worker state l and returns the
// verdict; a verdict through -m hashlimit must never be cacheable.
func hlRun(t *testing.T, rs *RuleSet, l *Local, p *packet.Packet, now int64) Verdict {
	t.Helper()
	c := Ctx{State: stNew, Now: now, Local: l}
	v, cacheable := rs.FilterCtx(p, &c)
	if cacheable {
		t.Fatalf("a verdict through -m hashlimit was cacheable")
	}
	return v
}

// hlCount returns how many of n packets from p at now pass.
func hlCount(t *testing.T, rs *RuleSet, l *Local, p *packet.Packet, now int64, n int) int {
	t.Helper()
	k := 0
	for i := range n {
		if hlRun(t, rs, l, p, now+int64(i)).Action == Accept {
			k++
		}
	}
	return k
}

// TestHashlimitBuckets follows xt_hashlimit's arithmetic on a fake clock: a
// full bucket of burst packets per key, then one packet per period, each
// source its own bucket.
func TestHashlimitBuckets(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -p udp -m hashlimit --hashlimit-upto 6/min --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name per-src -j ACCEPT\n"+
		"-A FORWARD -p udp -j DROP"), FamilyIPv4)
	a, b := udpPkt("10.0.0.1", "10.0.0.9", 1000, 53), udpPkt("10.0.0.2", "10.0.0.9", 1000, 53)
	l := rs.NewLocal()
	t0 := 1000 * sec
	if n := hlCount(t, rs, l, a, t0, 5); n != 3 {
		t.Fatalf("source A's burst: %d of 5 passed, want 3", n)
	}
	if n := hlCount(t, rs, l, b, t0, 5); n != 3 {
		t.Fatalf("source B's burst (its own bucket): %d of 5 passed, want 3", n)
	}
	// 6/min: one packet's credit every 10 s (10000 jiffies of 2^37
	// credits against a cost of 10^7 × 137438953).
	if v := hlRun(t, rs, l, a, t0+10*sec-1e6); v.Action != Drop {
		t.Errorf("after 9.999 s: got %v, want DROP", v.Action)
	}
	if v := hlRun(t, rs, l, a, t0+10*sec); v.Action != Accept {
		t.Errorf("after 10 s: got %v, want ACCEPT", v.Action)
	}
	if v := hlRun(t, rs, l, a, t0+11*sec); v.Action != Drop {
		t.Errorf("after 11 s: got %v, want DROP", v.Action)
	}
	// A long pause refills to the burst, never beyond.
	if n := hlCount(t, rs, l, a, t0+3600*sec, 10); n != 3 {
		t.Errorf("after an hour: %d of 10 passed, want the burst, 3", n)
	}
	// Another worker's Local has its own tables.
	if n := hlCount(t, rs, rs.NewLocal(), b, t0+20*sec, 5); n != 3 {
		t.Errorf("a second worker: %d of 5 passed, want 3", n)
	}
	// No Local: no credit.
	c := Ctx{State: stNew, Now: t0}
	if v, _ := rs.FilterCtx(a, &c); v.Action != Drop {
		t.Errorf("without a Local: got %v, want DROP", v.Action)
	}
}

// TestHashlimitKeys: the mode and masks make the key.
func TestHashlimitKeys(t *testing.T) {
	for _, tc := range []struct {
		args       string
		same, diff [2]*packet.Packet // pairs sharing a bucket, and not
	}{
		{"--hashlimit-mode srcip --hashlimit-srcmask 24",
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 1, 53), udpPkt("10.0.0.2", "10.0.9.8", 2, 54)},
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 1, 53), udpPkt("10.0.1.2", "10.0.9.9", 1, 53)}},
		{"--hashlimit-mode dstip --hashlimit-dstmask 16",
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.1.2.3", 1, 53), udpPkt("10.0.0.2", "10.1.9.9", 1, 53)},
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.1.2.3", 1, 53), udpPkt("10.0.0.1", "10.2.2.3", 1, 53)}},
		{"--hashlimit-mode srcip,dstport",
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 1, 53), udpPkt("10.0.0.1", "10.0.9.8", 2, 53)},
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 1, 53), udpPkt("10.0.0.1", "10.0.9.9", 1, 54)}},
		{"--hashlimit-mode srcport",
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 7, 53), udpPkt("10.0.0.2", "10.0.9.8", 7, 54)},
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 7, 53), udpPkt("10.0.0.1", "10.0.9.9", 8, 53)}},
		{"", // no mode: one bucket for the rule
			[2]*packet.Packet{udpPkt("10.0.0.1", "10.0.9.9", 1, 53), udpPkt("10.9.0.2", "10.0.0.8", 2, 54)},
			[2]*packet.Packet{}},
		{"--hashlimit-mode srcip --hashlimit-srcmask 64",
			[2]*packet.Packet{udpPkt("2001:db8::1", "2001:db8:1::1", 1, 53), udpPkt("2001:db8::2:0:0:2", "2001:db8:1::1", 1, 53)},
			[2]*packet.Packet{udpPkt("2001:db8::1", "2001:db8:1::1", 1, 53), udpPkt("2001:db8:0:1::1", "2001:db8:1::1", 1, 53)}},
	} {
		fam := FamilyIPv4
		if tc.same[0].IPVersion == 6 {
			fam = FamilyIPv6
		}
		rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 2 "+tc.args+" --hashlimit-name k -j ACCEPT\n-A FORWARD -j DROP"), fam)
		l := rs.NewLocal()
		if n := hlCount(t, rs, l, tc.same[0], sec, 1) + hlCount(t, rs, l, tc.same[1], sec, 3); n != 2 {
			t.Errorf("%q: %d of 4 passed from two packets of one key, want the one burst, 2", tc.args, n)
		}
		if tc.diff[0] == nil {
			continue
		}
		l = rs.NewLocal()
		if n := hlCount(t, rs, l, tc.diff[0], sec, 3) + hlCount(t, rs, l, tc.diff[1], sec, 3); n != 4 {
			t.Errorf("%q: %d of 6 passed from two keys, want two bursts, 4", tc.args, n)
		}
	}
}

// TestHashlimitExpiry: an idle key is forgotten after
// --hashlimit-htable-expire ms (every packet, passed or not, renews it) and
// comes back with a full bucket.
func TestHashlimitExpiry(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name e --hashlimit-htable-expire 5000 -j ACCEPT\n"+
		"-A FORWARD -j DROP"), FamilyIPv4)
	p := udpPkt("10.0.0.1", "10.0.0.2", 1, 2)
	l := rs.NewLocal()
	t0 := 50 * sec
	if n := hlCount(t, rs, l, p, t0, 3); n != 2 {
		t.Fatalf("burst: %d of 3 passed, want 2", n)
	}
	if v := hlRun(t, rs, l, p, t0+4*sec); v.Action != Drop {
		t.Errorf("4 s later (not expired, 4 s of 1/min refilled): got %v, want DROP", v.Action)
	}
	if v := hlRun(t, rs, l, p, t0+9*sec-1e6); v.Action != Drop {
		t.Errorf("4.999 s after the last packet: got %v, want DROP (the drop renewed the key)", v.Action)
	}
	if n := hlCount(t, rs, l, p, t0+14*sec-1e6+5*sec, 3); n != 2 {
		t.Errorf("5 s after the last packet: %d of 3 passed, want a fresh burst, 2", n)
	}
}

// TestHashlimitTableFull: a table holds at most --hashlimit-htable-max
// keys; the packet of a new key finding it full is dropped whatever the
// rule says (the kernel's hotdrop), counted, and expired keys make room
// at the next sweep (--hashlimit-htable-gcinterval).
func TestHashlimitTableFull(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-above 1/sec --hashlimit-mode srcip --hashlimit-name f "+
		"--hashlimit-htable-size 1 --hashlimit-htable-max 2 --hashlimit-htable-expire 1000 -j DROP\n-A FORWARD -j ACCEPT"), FamilyIPv4)
	l := rs.NewLocal()
	t0 := 100 * sec
	src := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
	for i, s := range src {
		v := hlRun(t, rs, l, udpPkt(s, "10.0.9.9", 1, 2), t0)
		want := i == 2
		if (v.Action == Drop) != want || v.HashlimitFull != want || (want && v.Rule != 0) {
			t.Errorf("source %s: got %+v, want a drop by the full table: %v", s, v, want)
		}
	}
	if l.HashlimitFull() != 1 {
		t.Errorf("HashlimitFull: %d, want 1", l.HashlimitFull())
	}
	// Still full 0.5 s later: the first two keys have not expired.
	if v := hlRun(t, rs, l, udpPkt(src[2], "10.0.9.9", 1, 2), t0+sec/2); !v.HashlimitFull {
		t.Errorf("0.5 s later: got %+v, want the full table's drop", v)
	}
	// 1.5 s later they have, and a sweep has run.
	if v := hlRun(t, rs, l, udpPkt(src[2], "10.0.9.9", 1, 2), t0+3*sec/2); v.Action != Accept || v.HashlimitFull {
		t.Errorf("1.5 s later: got %+v, want ACCEPT (the expired keys were swept)", v)
	}
}

// TestHashlimitBytes: the byte-rate form, 1kb/s with a burst of 2kb: a
// full bucket, refilled whole twice (the burst's refill counter), then
// 2^22 credits per ms against (length/16+1) × the chunk cost.
func TestHashlimitBytes(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 1kb/s --hashlimit-burst 2kb --hashlimit-name b -j ACCEPT\n-A FORWARD -j DROP"), FamilyIPv4)
	p := udpPkt("10.0.0.1", "10.0.0.2", 1, 2)
	p.IPLen = 1000 // 63 chunks of 64527752 credits: 4065248376 of 4194304000
	l := rs.NewLocal()
	t0 := 10 * sec
	if n := hlCount(t, rs, l, p, t0, 5); n != 3 {
		t.Fatalf("1kb/s burst 2kb: %d of 5 1000-byte packets passed, want 3", n)
	}
	// 129055624 credits left: 939 ms of 4194304 make the next packet's.
	if v := hlRun(t, rs, l, p, t0+938*1e6); v.Action != Drop {
		t.Errorf("938 ms later: got %v, want DROP", v.Action)
	}
	if v := hlRun(t, rs, l, p, t0+939*1e6); v.Action != Accept {
		t.Errorf("939 ms later: got %v, want ACCEPT", v.Action)
	}
}

// TestHashlimitRateMatch: --hashlimit-rate-match counts packets per
// --hashlimit-rate-interval and matches while the count stays within rate
// + burst and the previous interval's rate was not above the limit.
func TestHashlimitRateMatch(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 10/sec --hashlimit-rate-match --hashlimit-name r -j ACCEPT\n-A FORWARD -j DROP"), FamilyIPv4)
	p := udpPkt("10.0.0.1", "10.0.0.2", 1, 2)
	l := rs.NewLocal()
	t0 := 10 * sec
	// Packets 50 ms apart: every one renews the key (expiry 1 s, the
	// rate's unit), so the windows follow each other.
	every50ms := func(from int64, n int) int {
		k := 0
		for i := range n {
			if hlRun(t, rs, l, p, from+int64(i)*50e6).Action == Accept {
				k++
			}
		}
		return k
	}
	if n := every50ms(t0, 20); n != 15 {
		t.Errorf("first second: %d of 20 matched, want rate + burst, 15", n)
	}
	// 20 in the last second is above 10/sec: the whole next second fails.
	if n := every50ms(t0+sec, 5); n != 0 {
		t.Errorf("the second after: %d of 5 matched, want 0", n)
	}
	// 5 in that second is within it: the next one matches again.
	if n := every50ms(t0+2*sec, 5); n != 5 {
		t.Errorf("the third second: %d of 5 matched, want 5", n)
	}
}

// TestHashlimitSharedName: rules naming one table share its buckets (the
// kernel's per-namespace table of that name and family), with the first
// rule's settings.
func TestHashlimitSharedName(t *testing.T) {
	rs := mustLoad(t, wrap("filter",
		"-A FORWARD -p udp -m udp --dport 1 -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name s -j ACCEPT\n"+
			"-A FORWARD -p udp -m udp --dport 2 -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 9 --hashlimit-mode srcip --hashlimit-name s -j ACCEPT\n"+
			"-A FORWARD -p udp -m udp --dport 3 -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name other -j ACCEPT\n"+
			"-A FORWARD -j DROP"), FamilyIPv4)
	l := rs.NewLocal()
	if n := hlCount(t, rs, l, udpPkt("10.0.0.1", "10.0.0.2", 1, 1), sec, 1); n != 1 {
		t.Fatalf("port 1: %d passed, want 1", n)
	}
	if n := hlCount(t, rs, l, udpPkt("10.0.0.1", "10.0.0.2", 1, 2), sec, 5); n != 1 {
		t.Errorf("port 2 (table s, the first rule's burst 2, one spent): %d of 5 passed, want 1", n)
	}
	if n := hlCount(t, rs, l, udpPkt("10.0.0.1", "10.0.0.2", 1, 3), sec, 5); n != 2 {
		t.Errorf("port 3 (its own table): %d of 5 passed, want 2", n)
	}
	// A rule whose units differ from the table's first rule is refused.
	_, err := load(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 1/min --hashlimit-name s -j ACCEPT\n"+
		"-A FORWARD -m hashlimit --hashlimit-upto 1kb/s --hashlimit-name s -j ACCEPT"), FamilyIPv4)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "give the rule its own --hashlimit-name") {
		t.Errorf("a byte rule on a packet table: got %v, want ErrUnsupported", err)
	}
}

// TestHashlimitCredits pins the kernel's revision-3 numbers.
func TestHashlimitCredits(t *testing.T) {
	if got := hlUser2Credits(1e6); got != 137438953000000 {
		t.Errorf("user2credits(1/sec): %d", got)
	}
	if hlCPJ*hlHZ/hlScale != hlCreditsPerUser {
		t.Errorf("HZ×CREDITS_PER_JIFFY/SCALE: %d, want %d", hlCPJ*hlHZ/hlScale, hlCreditsPerUser)
	}
	avg := hlBytesToCost(1024)
	if avg != 66076419 || hlUser2CreditsByte(avg) != 64527752 || hlCostToBytes(avg) != 1024 {
		t.Errorf("1kb/s: avg %d cost %d bytes %d, want 66076419 64527752 1024", avg, hlUser2CreditsByte(avg), hlCostToBytes(avg))
	}
}

// TestHashlimitAllocs: new keys, refills and sweeps allocate nothing.
func TestHashlimitAllocs(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hashlimit --hashlimit-upto 100/sec --hashlimit-mode srcip,srcport --hashlimit-name a --hashlimit-htable-expire 100 -j ACCEPT\n"+
		"-A FORWARD -m hashlimit --hashlimit-above 1mb/s --hashlimit-mode dstip --hashlimit-name b -j DROP\n-A FORWARD -j DROP"), FamilyIPv4)
	l := rs.NewLocal()
	p := udpPkt("10.0.0.1", "10.0.0.2", 1, 2)
	p.IPLen = 500
	now := sec
	port := uint16(0)
	if n := testing.AllocsPerRun(5000, func() {
		now += 3e6
		port++
		p.SrcPort = port
		c := Ctx{State: stNew, Now: now, Local: l}
		rs.FilterCtx(p, &c)
	}); n != 0 {
		t.Errorf("FilterCtx through -m hashlimit: %v allocs per run, want 0", n)
	}
}

// randomHashlimit returns a -m hashlimit match for the random rule sets of
// the cache tests (TestCachedVerdictMatchesFresh, ...Ctx): packet and byte
// rates, either direction, keys by address and port. Tables named alike
// share units, as compileHashlimit requires.
func randomHashlimit(r *rand.Rand) string {
	dir := []string{" --hashlimit-upto ", " --hashlimit-above ", " ! --hashlimit-upto "}[r.IntN(3)]
	mode := []string{"", " --hashlimit-mode srcip", " --hashlimit-mode srcip,dstport", " --hashlimit-mode dstip --hashlimit-dstmask 24"}[r.IntN(4)]
	expire := []string{"", " --hashlimit-htable-expire 500", " --hashlimit-htable-max 2 --hashlimit-htable-size 1"}[r.IntN(3)]
	if r.IntN(4) == 0 {
		return " -m hashlimit" + dir + []string{"1kb/s", "64kb/s --hashlimit-burst 128kb"}[r.IntN(2)] + mode + expire + " --hashlimit-name bytes"
	}
	return " -m hashlimit" + dir + []string{"1/sec", "10/min", "20/sec"}[r.IntN(3)] + " --hashlimit-burst " + []string{"1", "3"}[r.IntN(2)] +
		mode + expire + " --hashlimit-name " + []string{"ha", "hb"}[r.IntN(2)]
}

// BenchmarkHashlimit: one packet through a per-source hashlimit rule, the
// sources cycling over 4096 keys (found, refilled, spent or not).
func BenchmarkHashlimit(b *testing.B) {
	rs := mustLoad(b, wrap("filter", "-A FORWARD -p udp -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 10 --hashlimit-mode srcip --hashlimit-name b -j ACCEPT\n-A FORWARD -j DROP"), FamilyIPv4)
	l := rs.NewLocal()
	p := udpPkt("10.0.0.1", "10.9.0.1", 1, 2)
	now := sec
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Src[15] = byte(i)
		p.Src[14] = byte(i>>8) & 0x0f
		now += 1e5
		c := Ctx{State: stNew, Now: now, Local: l}
		rs.FilterCtx(p, &c)
	}
}
