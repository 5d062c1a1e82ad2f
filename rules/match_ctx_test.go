package rules

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// TestCtxSaveForm: each rule loads from an input spelling and saves in what
// iptables-legacy-save 1.8.9 printed after iptables-legacy-restore of that
// same input (run by hand into a network namespace; the right column is its
// output).
func TestCtxSaveForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"-m limit --limit 10/s", "-m limit --limit 10/sec"},
		{"-m limit --limit 7/h --limit-burst 5", "-m limit --limit 7/hour"},
		{"-m limit", "-m limit --limit 3/hour"},
		{"-m limit --limit 3/min --limit-burst 2", ""},
		{"-m limit --limit 1/m --limit-burst 10000", "-m limit --limit 1/min --limit-burst 10000"},
		{"-m limit --limit 5000/s", "-m limit --limit 5000/sec"},
		{"-m limit --limit 2/day", ""},
		{"-m limit --limit 1x/s", "-m limit --limit 1/sec"},
		{"-m mark --mark 0x5", ""},
		{"-m mark ! --mark 5/0xff", "-m mark ! --mark 0x5/0xff"},
		{"-m mark --mark 010", "-m mark --mark 0x8"},
		{"-m connmark --mark 1", "-m connmark --mark 0x1"},
		{"-m connmark ! --mark 1/3", "-m connmark ! --mark 0x1/0x3"},
		{"-m conntrack --ctstatus ASSURED,SEEN_REPLY", "-m conntrack --ctstatus SEEN_REPLY,ASSURED"},
		{"-m conntrack --ctstatus EXPECTED,CONFIRMED", ""},
		{"-m conntrack --ctdir original", "-m conntrack --ctdir ORIGINAL"},
		{"-m conntrack --ctproto tcp --ctorigsrc 10.0.0.0/8 --ctorigdst 1.2.3.4 ! --ctreplsrc 5.6.7.8 --ctrepldst 9.9.9.0/24",
			"-m conntrack --ctproto 6 --ctorigsrc 10.0.0.0/8 --ctorigdst 1.2.3.4 ! --ctreplsrc 5.6.7.8 --ctrepldst 9.9.9.0/24"},
		{"-m conntrack --ctorigsrcport 10 --ctorigdstport 20:30 --ctreplsrcport 40 ! --ctrepldstport 50", ""},
		{"-m conntrack --ctexpire 10:100", ""},
		{"-m conntrack --ctstate NEW --ctexpire 10", ""},
		{"-m conntrack --ctdir REPLY --ctexpire 5 --ctstatus NONE --ctrepldstport 50 --ctorigsrcport 10:20 --ctrepldst 9.9.9.9/24 --ctorigsrc 10.1.2.3/8 --ctproto udp --ctstate NEW,RELATED",
			"-m conntrack --ctstate NEW,RELATED --ctproto 17 --ctorigsrc 10.1.2.3/8 --ctrepldst 9.9.9.9/24 --ctorigsrcport 10:20 --ctrepldstport 50 --ctstatus NONE --ctexpire 5 --ctdir REPLY"},
		{"-m conntrack ! --ctproto udplite --ctorigdst 1.2.3.4/255.255.0.0", "-m conntrack ! --ctproto 136 --ctorigdst 1.2.3.4/16"},
		{"-m addrtype --src-type UNICAST ! --dst-type BROADCAST,MULTICAST", ""},
		{"-m addrtype ! --src-type unicast", "-m addrtype ! --src-type UNICAST"},
		{"-m addrtype --src-type UNICAST,MULTICAST,BROADCAST", "-m addrtype --src-type UNICAST,BROADCAST,MULTICAST"},
	}
	for _, tc := range tests {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		rs := mustLoad(t, wrap("filter", "-A FORWARD "+tc.in+" -j DROP"), FamilyIPv4)
		if got := saveString(t, rs, FamilyIPv4); !strings.Contains(got, "-A FORWARD "+want+" -j DROP\n") {
			t.Errorf("%q saved as\n%s\nwant %q", tc.in, got, want)
		}
	}
	targets := []struct{ in, want string }{
		{"MARK --set-mark 7", "MARK --set-xmark 0x7/0xffffffff"},
		{"MARK --set-xmark 7/0xf", "MARK --set-xmark 0x7/0xf"},
		{"MARK --and-mark 0xf", "MARK --set-xmark 0x0/0xfffffff0"},
		{"MARK --or-mark 3", "MARK --set-xmark 0x3/0x3"},
		{"MARK --xor-mark 3", "MARK --set-xmark 0x3/0x0"},
		{"MARK --set-mark 5/0xf0", "MARK --set-xmark 0x5/0xf5"},
		{"CONNMARK --set-mark 2", "CONNMARK --set-xmark 0x2/0xffffffff"},
		{"CONNMARK --set-mark 2/3", "CONNMARK --set-xmark 0x2/0x3"},
		{"CONNMARK --save-mark", "CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"},
		{"CONNMARK --restore-mark", "CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"},
		{"CONNMARK --save-mark --mask 0xff", "CONNMARK --save-mark --nfmask 0xff --ctmask 0xff"},
		{"CONNMARK --restore-mark --nfmask 0xff --ctmask 0xf", "CONNMARK --restore-mark --nfmask 0xff --ctmask 0xf"},
		{"CONNMARK --restore-mark --mask 0xf", "CONNMARK --restore-mark --nfmask 0xf --ctmask 0xf"},
		{"CONNMARK --save-mark --ctmask 3", "CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0x3"},
		{"CONNMARK --set-xmark 1/2", "CONNMARK --set-xmark 0x1/0x2"},
		{"CONNMARK --and-mark 1", "CONNMARK --set-xmark 0x0/0xfffffffe"},
		{"CONNMARK --or-mark 1", "CONNMARK --set-xmark 0x1/0x1"},
		{"CONNMARK --set-mark 1 --mask 3", "CONNMARK --set-xmark 0x1/0x3"},
	}
	for _, tc := range targets {
		rs := mustLoad(t, wrap("filter", "-A FORWARD -j "+tc.in), FamilyIPv4)
		if got := saveString(t, rs, FamilyIPv4); !strings.Contains(got, "-A FORWARD -j "+tc.want+"\n") {
			t.Errorf("%q saved as\n%s\nwant %q", tc.in, got, tc.want)
		}
		// And the saved form reads back to the same text.
		rs2 := mustLoad(t, saveString(t, rs, FamilyIPv4), FamilyIPv4)
		if a, b := saveString(t, rs, FamilyIPv4), saveString(t, rs2, FamilyIPv4); a != b {
			t.Errorf("%q: round trip changed\n%s\ninto\n%s", tc.in, a, b)
		}
	}
}

// TestCtxRefusals: what iptables-legacy-restore 1.8.9 or the kernel
// refused (checked by hand on the same text), and what statewire refuses
// on its own (the last group), each with the sentinel.
func TestCtxRefusals(t *testing.T) {
	tests := []struct {
		rule string
		want error
		msg  string
	}{
		{"-m limit ! --limit 3/s", ErrSyntax, "cannot be inverted"},
		{"-m limit --limit 1/s --limit-burst 10001", ErrSyntax, "--limit-burst"},
		{"-m limit --limit 10001/s", ErrSyntax, "rate too fast"},
		{"-m limit --limit 1/minutes", ErrSyntax, "bad rate"},
		{"-m limit --limit 0/s", ErrSyntax, "bad rate"},
		{"-m limit --limit-burst 0", ErrSyntax, "refused by the kernel"},
		{"-m limit --limit 1/day --limit-burst 10000", ErrSyntax, "refused by the kernel"},
		{"-m limit --limit 1/d", ErrSyntax, "refused by the kernel"},
		{"--limit 1/s", ErrSyntax, "needs -m limit"},
		{"-m mark --mark 0x100000000", ErrSyntax, "bad mark"},
		{"-m mark", ErrSyntax, "must be specified"},
		{"-m connmark", ErrSyntax, "must be specified"},
		{"-j MARK", ErrSyntax, "is required"},
		{"-j MARK --set-mark 1 --or-mark 2", ErrSyntax, "cannot be used together"},
		{"-j MARK ! --set-mark 1", ErrSyntax, "cannot be negated"},
		{"-j CONNMARK", ErrSyntax, "no operation"},
		{"-j MARK --save-mark", ErrUnknown, "--save-mark"},
		{"-m conntrack ! --ctdir ORIGINAL", ErrSyntax, "cannot be inverted"},
		{"-m conntrack --ctdir SIDEWAYS", ErrSyntax, "--ctdir"},
		{"-m conntrack --ctstatus foo", ErrUnknown, "ctstatus"},
		{"-m conntrack ! --ctproto 0", ErrSyntax, "never match"},
		{"-m addrtype", ErrSyntax, "--src-type or --dst-type"},
		{"-m addrtype --src-type FOO", ErrUnknown, "FOO"},
		// statewire's own refusals.
		{"-m addrtype --src-type LOCAL", ErrUnsupported, "only UNICAST, BROADCAST and MULTICAST"},
		{"-m addrtype --dst-type UNICAST --limit-iface-in", ErrUnsupported, "--limit-iface-in"},
		{"-s 2001:db8::1 -m addrtype --src-type UNICAST", ErrUnsupported, "IPv4 only"},
	}
	for _, tc := range tests {
		_, err := load(t, wrap("filter", "-A FORWARD "+tc.rule), FamilyBoth)
		var pe *ParseError
		if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Line != 6 || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want %v on line 6 containing %q", tc.rule, err, tc.want, tc.msg)
		}
	}
	for _, rule := range []string{"-j MARK --set-mark 1", "-j CONNMARK --save-mark", "-m limit -j ACCEPT"} {
		_, err := load(t, wrap("raw", "-A PREROUTING "+rule), FamilyIPv4)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "raw table") {
			t.Errorf("raw %q: got %v, want ErrUnsupported naming the raw table", rule, err)
		}
	}
}

const sec = int64(1e9)

// TestLimitBucket follows xt_limit's arithmetic: a full bucket of burst
// packets, then one packet per period, credit capped at the burst.
func TestLimitBucket(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -p udp -m limit --limit 6/min --limit-burst 3 -j ACCEPT\n-A FORWARD -p udp -j DROP"), FamilyIPv4)
	p := udpPkt("10.0.0.1", "10.0.0.2", 1000, 53)
	l := rs.NewLocal()
	at := func(now int64) Action {
		c := Ctx{State: stNew, Now: now, Local: l}
		v, cacheable := rs.FilterCtx(p, &c)
		if cacheable {
			t.Fatalf("a verdict through -m limit was cacheable")
		}
		return v.Action
	}
	t0 := 1000 * sec
	var got []Action
	for i := range 5 {
		got = append(got, at(t0+int64(i)))
	}
	want := []Action{Accept, Accept, Accept, Drop, Drop}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("burst: got %v, want %v", got, want)
		}
	}
	// 6/min: one packet's credit every 10 s.
	if a := at(t0 + 9*sec); a != Drop {
		t.Errorf("after 9 s: got %v, want DROP", a)
	}
	if a := at(t0 + 10*sec); a != Accept {
		t.Errorf("after 10 s: got %v, want ACCEPT", a)
	}
	if a := at(t0 + 11*sec); a != Drop {
		t.Errorf("after 11 s: got %v, want DROP", a)
	}
	// A long pause refills to the burst, never beyond.
	n := 0
	for i := range 10 {
		if at(t0+3600*sec+int64(i)) == Accept {
			n++
		}
	}
	if n != 3 {
		t.Errorf("after an hour: %d of 10 passed, want the burst, 3", n)
	}
	// Another worker's Local has its own full bucket.
	l2 := rs.NewLocal()
	c := Ctx{State: stNew, Now: t0 + 3600*sec, Local: l2}
	if v, _ := rs.FilterCtx(p, &c); v.Action != Accept {
		t.Errorf("a second worker's bucket: got %v, want ACCEPT", v.Action)
	}
	// No Local: no credit.
	c = Ctx{State: stNew, Now: t0}
	if v, _ := rs.FilterCtx(p, &c); v.Action != Drop {
		t.Errorf("without a Local: got %v, want DROP", v.Action)
	}
}

// TestLimitCredits pins the kernel's numbers: user2credits and the bucket
// of 2/day (avg*burst overflows 32 bits and the kernel keeps the wrapped
// capacity: the bucket holds one packet, not five).
func TestLimitCredits(t *testing.T) {
	a := limitArgs{avg: limitDefAvg, burst: 5}
	if !a.setup() || a.cost != 38400000 || a.cap != 192000000 {
		t.Errorf("3/hour burst 5: cost %d cap %d, want 38400000 192000000", a.cost, a.cap)
	}
	a = limitArgs{avg: limitScale * 86400 / 2, burst: 5}
	if !a.setup() || a.cap != 2617032704 || a.cost != 1382400000 {
		t.Errorf("2/day burst 5: cost %d cap %d, want 1382400000 2617032704", a.cost, a.cap)
	}
	var l limitState
	n := 0
	for range 5 {
		if l.take(0, &a) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("2/day burst 5: %d passed, want 1 (the kernel's wrapped capacity)", n)
	}
}

// TestLimitOrder: a token is spent when the matches written before -m
// limit pass, whatever those after it say (kernel order), and not when an
// earlier one fails.
func TestLimitOrder(t *testing.T) {
	rs := mustLoad(t, wrap("filter",
		"-A FORWARD -p udp -m limit --limit 1/hour --limit-burst 2 -m udp --dport 53 -j ACCEPT\n"+
			"-A FORWARD -p udp -m udp --dport 54 -m limit --limit 1/hour --limit-burst 2 -j ACCEPT\n"+
			"-A FORWARD -j DROP"), FamilyIPv4)
	l := rs.NewLocal()
	run := func(dport uint16) Action {
		c := Ctx{State: stNew, Now: sec, Local: l}
		v, _ := rs.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1000, dport), &c)
		return v.Action
	}
	// Rule 1: port 99 spends rule 1's tokens (limit before --dport).
	run(99)
	run(99)
	if a := run(53); a != Drop {
		t.Errorf("rule 1 after two packets to port 99: got %v, want DROP (their tokens were spent)", a)
	}
	// Rule 2: port 99 fails --dport first and spends nothing... but rule 1
	// saw it too; rule 2's bucket is its own.
	if a, b := run(54), run(54); a != Accept || b != Accept {
		t.Errorf("rule 2: got %v %v, want ACCEPT ACCEPT", a, b)
	}
	if a := run(54); a != Drop {
		t.Errorf("rule 2 third: got %v, want DROP", a)
	}
}

// TestMarkTargets runs MARK and CONNMARK as the kernel computes them and
// reads the marks back with -m mark and -m connmark.
func TestMarkTargets(t *testing.T) {
	rs := mustLoad(t, wrap("filter", strings.Join([]string{
		"-A FORWARD -p udp -m udp --dport 1 -j MARK --set-mark 0x10",
		"-A FORWARD -p udp -m udp --dport 1 -j MARK --or-mark 0x3",
		"-A FORWARD -p udp -m udp --dport 1 -j MARK --xor-mark 0x1",
		"-A FORWARD -p udp -m udp --dport 1 -m mark --mark 0x12 -j CONNMARK --save-mark --mask 0xf0",
		"-A FORWARD -p udp -m udp --dport 1 -m mark --mark 0x12 -j ACCEPT",
		"-A FORWARD -p udp -m udp --dport 2 -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xf0",
		"-A FORWARD -p udp -m udp --dport 2 -m mark --mark 0x10/0xff -j ACCEPT",
		"-A FORWARD -p udp -m udp --dport 3 -m connmark ! --mark 0x10 -j CONNMARK --set-mark 0x7/0xf",
		"-A FORWARD -p udp -m udp --dport 3 -m connmark --mark 0x7/0xf -j ACCEPT",
		"-A FORWARD -j DROP",
	}, "\n")), FamilyIPv4)
	conn := Conn{Mark: 0x5, Confirmed: true, Proto: 17}
	c := Ctx{State: stEstablished, Conn: &conn}
	v, cacheable := rs.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1000, 1), &c)
	// ctmark = (0x5 &^ 0xf0) ^ (0x12 & 0xf0)
	if v.Action != Accept || c.Mark != 0x12 || conn.Mark != 0x15 || cacheable {
		t.Errorf("port 1: %v mark %#x ctmark %#x cacheable %v, want ACCEPT 0x12 0x15 false", v.Action, c.Mark, conn.Mark, cacheable)
	}
	conn.Mark = 0x1f
	c = Ctx{State: stEstablished, Conn: &conn, Mark: 0x300}
	v, _ = rs.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1000, 2), &c)
	if v.Action != Accept || c.Mark != 0x310 {
		t.Errorf("port 2 restore: %v mark %#x, want ACCEPT 0x310", v.Action, c.Mark)
	}
	conn.Mark = 0x10
	c = Ctx{State: stEstablished, Conn: &conn}
	if v, _ = rs.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1000, 3), &c); v.Action != Drop || conn.Mark != 0x10 {
		t.Errorf("port 3 ctmark 0x10: %v ctmark %#x, want DROP 0x10", v.Action, conn.Mark)
	}
	conn.Mark = 0x30
	if v, _ = rs.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1000, 3), &c); v.Action != Accept || conn.Mark != 0x37 {
		t.Errorf("port 3 ctmark 0x30: %v ctmark %#x, want ACCEPT 0x37", v.Action, conn.Mark)
	}
	// No connection (INVALID): CONNMARK does nothing, -m connmark fails
	// even negated.
	c = Ctx{State: stInvalid}
	if v, _ = rs.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1000, 3), &c); v.Action != Drop {
		t.Errorf("port 3 without a connection: %v, want DROP", v.Action)
	}
	// MARK alone keeps the verdict cacheable: the mark is a function of
	// the path.
	rs2 := mustLoad(t, wrap("filter", "-A FORWARD -j MARK --set-mark 1\n-A FORWARD -m mark --mark 1 -j DROP"), FamilyIPv4)
	c = Ctx{State: stNew}
	if v, cacheable := rs2.FilterCtx(udpPkt("10.0.0.1", "10.0.0.2", 1, 2), &c); v.Action != Drop || !cacheable {
		t.Errorf("MARK then -m mark: %v cacheable %v, want DROP true", v.Action, cacheable)
	}
	if !rs.ReadsConn() || rs2.ReadsConn() {
		t.Errorf("ReadsConn: %v %v, want true false", rs.ReadsConn(), rs2.ReadsConn())
	}
}

// TestConntrackExtras: each option against a connection, the reply tuple
// the inverse of the original, and the kernel's rule for packets without
// a connection.
func TestConntrackExtras(t *testing.T) {
	rs := mustLoad(t, wrap("filter", strings.Join([]string{
		"-A FORWARD -p udp -m conntrack --ctorigdstport 1 --ctdir REPLY -j DROP",
		"-A FORWARD -p udp -m udp --dport 2 -m conntrack --ctorigsrc 10.0.0.0/24 --ctrepldst 10.0.0.1 --ctproto udp -j DROP",
		"-A FORWARD -p udp -m udp --dport 3 -m conntrack ! --ctreplsrcport 3 -j DROP",
		"-A FORWARD -p udp -m udp --dport 4 -m conntrack --ctstatus ASSURED -j DROP",
		"-A FORWARD -p udp -m udp --dport 5 -m conntrack --ctexpire 20:40 -j DROP",
		"-A FORWARD -p udp -m udp --dport 6 -m conntrack --ctstate INVALID --ctdir REPLY -j DROP",
		"-A FORWARD -p udp -m udp --dport 7 -m conntrack ! --ctstatus CONFIRMED -j DROP",
	}, "\n")), FamilyIPv4)
	mk := func(dport uint16) Conn {
		return Conn{Proto: 17, Confirmed: true, Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), SrcPort: 1000, DstPort: dport}
	}
	type tc struct {
		what      string
		dport     uint16
		dir       statemachine.Dir
		st        statemachine.CtState
		conn      *Conn
		want      Action
		cacheable bool
	}
	c5 := mk(5)
	c5.Expires = 100*sec + 30*sec
	c4 := mk(4)
	c4.Status = statemachine.StatusAssured
	c7 := mk(7)
	c7.Confirmed = false
	cs := []tc{
		{"ctdir REPLY, original", 1, statemachine.Original, stNew, ptr(mk(1)), Accept, true},
		{"ctdir REPLY, reply", 1, statemachine.Reply, stEstablished, ptr(mk(1)), Drop, true},
		{"orig src and reply dst", 2, statemachine.Original, stNew, ptr(mk(2)), Drop, true},
		{"! ctreplsrcport 3: reply source port is 3", 3, statemachine.Original, stNew, ptr(mk(3)), Accept, true},
		{"ctstatus ASSURED, not assured", 4, statemachine.Original, stEstablished, ptr(mk(4)), Accept, false},
		{"ctstatus ASSURED, assured", 4, statemachine.Original, stEstablished, &c4, Drop, false},
		{"ctexpire 30 s left", 5, statemachine.Original, stEstablished, &c5, Drop, false},
		{"ctexpire, INVALID: no connection, no --ctstate", 5, statemachine.Original, stInvalid, nil, Accept, false},
		{"ctstate INVALID matched: the rest is ignored", 6, statemachine.Original, stInvalid, nil, Drop, true},
		{"ctstate INVALID --ctdir REPLY, original NEW", 6, statemachine.Original, stNew, ptr(mk(6)), Accept, true},
		{"! CONFIRMED on the first packet", 7, statemachine.Original, stNew, &c7, Drop, false},
	}
	for _, x := range cs {
		p := udpPkt("10.0.0.1", "10.0.0.2", 1000, x.dport)
		if x.dir == statemachine.Reply {
			p = udpPkt("10.0.0.2", "10.0.0.1", x.dport, 1000)
		}
		c := Ctx{State: x.st, Dir: x.dir, Conn: x.conn, Now: 100 * sec}
		v, cacheable := rs.FilterCtx(p, &c)
		if v.Action != x.want || cacheable != x.cacheable {
			t.Errorf("%s: got %v cacheable %v, want %v %v", x.what, v.Action, cacheable, x.want, x.cacheable)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestAddrType(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m addrtype --dst-type BROADCAST,MULTICAST -j DROP\n-A FORWARD -m addrtype ! --src-type UNICAST -j DROP"), FamilyIPv4)
	for _, x := range []struct {
		src, dst string
		want     Action
	}{
		{"10.0.0.1", "10.0.0.2", Accept},
		{"10.0.0.1", "255.255.255.255", Drop},
		{"10.0.0.1", "224.0.0.251", Drop},
		{"10.0.0.1", "239.255.255.250", Drop},
		{"0.0.0.0", "10.0.0.2", Drop}, // 0/8 is BROADCAST, not UNICAST
		{"127.0.0.1", "10.0.0.2", Drop},
		{"10.0.0.1", "10.0.0.255", Accept}, // a subnet broadcast: no route says so here
	} {
		c := Ctx{State: stNew}
		v, cacheable := rs.FilterCtx(udpPkt(x.src, x.dst, 1, 2), &c)
		if v.Action != x.want || !cacheable {
			t.Errorf("%s > %s: got %v cacheable %v, want %v true", x.src, x.dst, v.Action, cacheable, x.want)
		}
	}
}

// TestFilterCtxAllocs: the whole new grammar in one rule set, evaluated
// without an allocation.
func TestFilterCtxAllocs(t *testing.T) {
	rs := mustLoad(t, wrap("filter", strings.Join([]string{
		"-A FORWARD -m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL --ctstatus ASSURED --ctorigsrc 10.0.0.0/8 -j MARK --set-mark 1",
		"-A FORWARD -m mark --mark 1 -j CONNMARK --save-mark",
		"-A FORWARD -m mark --mark 1 -j LOG",
		"-A FORWARD -m connmark --mark 1 -m addrtype --dst-type UNICAST -m limit --limit 100/s -j ACCEPT",
		"-A FORWARD -j DROP",
	}, "\n")), FamilyIPv4)
	l := rs.NewLocal()
	conn := Conn{Proto: 17, Confirmed: true, Status: statemachine.StatusAssured, Src: addr("10.0.0.1"), Dst: addr("10.0.0.2")}
	p := udpPkt("10.0.0.1", "10.0.0.2", 1, 2)
	now := sec
	var logs LogHits
	c := Ctx{State: stEstablished, Conn: &conn, Local: l, Logs: &logs}
	if v, _ := rs.FilterCtx(p, &c); v.Action != Accept || logs.N != 1 || logs.Rule[0] != 2 {
		t.Fatalf("got %v, LOG hits %+v; want ACCEPT, rule 2 logged", v.Action, logs)
	}
	if n := testing.AllocsPerRun(1000, func() {
		now += sec
		c = Ctx{State: stEstablished, Conn: &conn, Local: l, Now: now, Logs: &logs}
		rs.FilterCtx(p, &c)
	}); n != 0 {
		t.Errorf("FilterCtx: %v allocs per run, want 0", n)
	}
}

var _ = packet.ProtoUDP

// randomCtxMatches adds the matches of match_*.go to randomMatches'.
func randomCtxMatches(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString(randomMatches(r))
	neg := func() string {
		if r.IntN(4) == 0 {
			return " !"
		}
		return ""
	}
	if r.IntN(4) == 0 {
		b.WriteString(" -m mark" + neg() + " --mark " + []string{"0x1", "0x2/0x2", "0x0"}[r.IntN(3)])
	}
	if r.IntN(3) == 0 {
		b.WriteString(" -m connmark" + neg() + " --mark " + []string{"0x1", "0x2/0x2", "0x0"}[r.IntN(3)])
	}
	if r.IntN(5) == 0 {
		b.WriteString(" -m conntrack" + []string{" --ctdir ORIGINAL", " --ctdir REPLY", neg() + " --ctorigsrc 10.0.0.0/24",
			neg() + " --ctrepldstport 53", neg() + " --ctproto udp"}[r.IntN(5)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m conntrack" + []string{neg() + " --ctstatus ASSURED", neg() + " --ctexpire 0:10", neg() + " --ctstatus CONFIRMED,SEEN_REPLY"}[r.IntN(3)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m addrtype" + neg() + " --dst-type " + []string{"UNICAST", "BROADCAST,MULTICAST"}[r.IntN(2)])
	}
	if strings.Contains(b.String(), "-m connlimit") {
		return b.String() // one stateful match per rule
	}
	switch r.IntN(10) {
	case 0:
		b.WriteString(" -m limit --limit " + []string{"1/sec", "10/min"}[r.IntN(2)] + " --limit-burst " + []string{"1", "3"}[r.IntN(2)])
	case 1:
		b.WriteString(" -m recent" + []string{neg() + " --set", neg() + " --rcheck --seconds 1", neg() + " --update --hitcount 2", neg() + " --remove"}[r.IntN(4)] +
			[]string{"", " --rdest", " --name other"}[r.IntN(3)])
	case 2, 3:
		b.WriteString(" -m connlimit" + []string{neg() + " --connlimit-above 1", neg() + " --connlimit-upto 2", " --connlimit-above 0"}[r.IntN(3)] +
			[]string{"", " --connlimit-mask 24", " --connlimit-daddr", " --connlimit-mask 0 --connlimit-saddr"}[r.IntN(4)])
	case 4, 5:
		b.WriteString(randomHashlimit(r)) // match_hashlimit_test.go
	}
	return b.String()
}

func randomCtxRules(r *rand.Rand) string {
	var b strings.Builder
	policy := []string{"ACCEPT", "DROP"}[r.IntN(2)]
	fmt.Fprintf(&b, "*filter\n:FORWARD %s [0:0]\n:user - [0:0]\n", policy)
	for chain, n := range map[string]int{"FORWARD": 1 + r.IntN(10), "user": r.IntN(4)} {
		for range n {
			b.WriteString("-A " + chain + randomCtxMatches(r))
			targets := []string{"ACCEPT", "DROP", "RETURN", "", "REJECT", "LOG", "MARK --set-mark 1", "MARK --or-mark 2",
				"CONNMARK --set-mark 1", "CONNMARK --save-mark", "CONNMARK --restore-mark --mask 0x4"}
			if chain == "FORWARD" {
				targets = append(targets, "user", "user")
			}
			switch tg := targets[r.IntN(len(targets))]; tg {
			case "":
			case "user":
				b.WriteString([]string{" -j user", " -g user"}[r.IntN(2)])
			default:
				b.WriteString(" -j " + tg)
			}
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// TestCachedVerdictMatchesFreshCtx is TestCachedVerdictMatchesFresh with the
// matches and targets that read the context: each flow keeps its
// connection (whose mark CONNMARK changes), the status and expiry change
// from packet to packet, the clock moves and one worker's limit and hashlimit buckets
// run down and refill (and its hashlimit keys expire). A verdict FilterCtx called cacheable must equal
// every later fresh evaluation for its (flow, state, port).
func TestCachedVerdictMatchesFreshCtx(t *testing.T) {
	const ruleSets, packets = 200, 3000
	var hits, fills, markChanges int
	for seed := range uint64(ruleSets) {
		r := rand.New(rand.NewPCG(seed, 0xc7c7))
		text := randomCtxRules(r)
		rs, err := load(t, text, FamilyIPv4)
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, text)
		}
		type slot struct {
			tu flowtable.Tuple
			st statemachine.CtState
			in uint8
		}
		cache := map[slot]CachedVerdict{}
		conns := map[flowtable.Tuple]*Conn{}
		counts := map[flowtable.Tuple]*ConnCounts{}
		local := rs.NewLocal()
		now := int64(0)
		for range packets {
			now += int64(r.IntN(300)) * 1e6
			p := randomPacket(r)
			if r.IntN(10) == 0 {
				// Multicast and broadcast destinations for -m addrtype.
				p.Dst = addr([]string{"224.0.0.1", "255.255.255.255"}[r.IntN(2)])
			}
			tu, ok := flowtable.TupleFromPacket(p)
			usesCache := ok && !(p.Fragment && p.FragOffset != 0)
			st := allCtStates[r.IntN(len(allCtStates))]
			in := uint8(r.IntN(2))
			var logs LogHits
			c := Ctx{State: st, InPort: in, Now: now, Local: local, Logs: &logs}
			if ok && st != stInvalid && st != stUntracked {
				cn := conns[tu]
				if cn == nil {
					cn = &Conn{Proto: tu.Proto, Src: tu.Src, Dst: tu.Dst, SrcPort: tu.SrcPort, DstPort: tu.DstPort}
					conns[tu] = cn
				}
				if r.IntN(8) == 0 {
					// A packet of the other direction ran CONNMARK.
					cn.Mark = uint32(r.IntN(4))
				}
				cn.Confirmed = r.IntN(4) != 0
				cn.Status = []uint8{0, statemachine.StatusSeenReply, statemachine.StatusSeenReply | statemachine.StatusAssured}[r.IntN(3)]
				cn.Expires = now + int64(r.IntN(40))*1e9
				c.Conn = cn
				// The connection's -m connlimit counts; now and then
				// it closes (leaves every count) and comes back.
				cc := counts[tu]
				if cc == nil {
					cc = &ConnCounts{}
					counts[tu] = cc
				}
				if r.IntN(10) == 0 {
					rs.ReleaseConn(cc)
				}
				cn.Closed = tu.Proto == 6 && r.IntN(10) == 0
				c.Counts = cc
			}
			var before uint32
			if c.Conn != nil {
				before = c.Conn.Mark
			}
			fresh, cacheable := rs.FilterCtx(p, &c)
			if c.Conn != nil && c.Conn.Mark != before {
				markChanges++
			}
			if !usesCache {
				continue
			}
			k := slot{tu, st, in}
			if a, hit := cache[k].Lookup(st, in); hit {
				hits++
				// A REJECT's answer and a LOG line are per packet: a
				// cached verdict must never stand in for them.
				if a != fresh.Action || fresh.Reject != RejectNone || logs.N != 0 {
					t.Fatalf("seed %d: %+v in %v on port %d: cached %v, fresh evaluation %v by %q\nrules:\n%s",
						seed, *p, st, in, a, fresh.Action, rs.RuleText(fresh.Rule), text)
				}
				if c.Conn != nil && c.Conn.Mark != before {
					t.Fatalf("seed %d: %+v in %v on port %d: the cache would skip a CONNMARK that changed the mark %#x to %#x\nrules:\n%s",
						seed, *p, st, in, before, c.Conn.Mark, text)
				}
				continue
			}
			if cacheable {
				fills++
				cache[k] = CacheVerdict(fresh.Action, st, in)
			}
		}
	}
	if hits < ruleSets*packets/20 || fills == 0 || markChanges < ruleSets {
		t.Errorf("the test exercised the cache too little: %d hits, %d fills, %d connection marks changed", hits, fills, markChanges)
	}
	t.Logf("%d rule sets, %d cache hits checked against a fresh evaluation, %d fills, %d connection marks changed", ruleSets, hits, fills, markChanges)
}

// benchCtx is bench20's shape with the classic stateful additions in front:
// ICMP echo limited, SSH brute-force protection with -m recent, and a
// CONNMARK restore/match pair.
const benchCtx = `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -j CONNMARK --restore-mark
-A FORWARD -m mark --mark 0x1 -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type 8 -m limit --limit 10/sec --limit-burst 20 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --set --name ssh
-A FORWARD -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 60 --hitcount 4 --name ssh -j DROP
-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`

// BenchmarkFilterCtx: a NEW SSH packet through CONNMARK, -m mark, two -m
// recent rules; an established packet through CONNMARK and -m mark; an ICMP
// echo through -m limit.
func BenchmarkFilterCtx(b *testing.B) {
	rs := mustLoad(b, benchCtx, FamilyIPv4)
	l := rs.NewLocal()
	conn := Conn{Proto: 6, Confirmed: true, Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), SrcPort: 40000, DstPort: 22}
	for _, bc := range []struct {
		name string
		p    *packet.Packet
		st   statemachine.CtState
	}{
		{"ssh-new", tcpPkt("10.0.0.1", "10.0.0.2", 40000, 22, syn), stNew},
		{"established", tcpPkt("10.0.0.1", "10.0.0.2", 40000, 22, ack), stEstablished},
		{"icmp-limit", icmpPkt("10.0.0.1", "10.0.0.2", 8, 0), stNew},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			now := int64(0)
			for b.Loop() {
				now += 1e3
				c := Ctx{State: bc.st, Now: now, Local: l, Conn: &conn}
				rs.FilterCtx(bc.p, &c)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}
