package bridge

import (
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

const sec = int64(1e9)

// newTestPipeline returns a one-shard pipeline with settings s (nil: the
// defaults with checksums verified) and room for max connections.
func newTestPipeline(t testing.TB, s *Settings, max int) *Pipeline {
	t.Helper()
	if s == nil {
		s = DefaultSettings()
	}
	tb, err := flowtable.New(flowtable.Config{MaxEntries: max, Buckets: max, Shards: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return NewPipeline(tb, 0, NewControl(s), NewFragCache(64, 1))
}

func loadRules(t testing.TB, text string) *rules.RuleSet {
	t.Helper()
	rs, err := rules.FromText("test.rules", text, [2]string{"porta", "portb"})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

type step struct {
	name      string
	frame     []byte
	in        Port
	at        int64 // seconds after start
	wantState statemachine.CtState
	wantTCP   statemachine.TCPState // checked for TCP when Tracked
	wantV     Verdict
	wantDrop  DropReason
}

func runSteps(t *testing.T, pl *Pipeline, steps []step) {
	t.Helper()
	for i, st := range steps {
		r := pl.Process(st.frame, 0, st.in, 100*sec+st.at*sec)
		if r.State != st.wantState {
			t.Errorf("step %d (%s): state got %v, want %v (invalid: %v, parse: %v)", i, st.name, r.State, st.wantState, r.Invalid, r.Parse)
		}
		if st.wantTCP != 0 && r.TCPState != st.wantTCP {
			t.Errorf("step %d (%s): TCP state got %v, want %v", i, st.name, r.TCPState, st.wantTCP)
		}
		if r.Verdict != st.wantV || r.Drop != st.wantDrop {
			t.Errorf("step %d (%s): verdict got %v/%v, want %v/%v", i, st.name, r.Verdict, r.Drop, st.wantV, st.wantDrop)
		}
	}
}

// entryFor returns the snapshot of the only entry with original source src.
func entries(pl *Pipeline) []flowtable.EntrySnapshot {
	var out []flowtable.EntrySnapshot
	pl.Shard().Range(func(e *flowtable.Entry) bool {
		out = append(out, flowtable.EntrySnapshot{Orig: e.Tuple(), Conn: e.Conn, Helper: e.Helper})
		return true
	})
	return out
}

// TestSSHWalkthrough is the seeds' example: SYN → SYN_SENT [UNREPLIED] 120 s,
// SYN/ACK → SYN_RECV 60 s, ACK → ESTABLISHED [ASSURED] 432000 s.
func TestSSHWalkthrough(t *testing.T) {
	pl := newTestPipeline(t, nil, 1024)
	c, s := "198.18.0.1", "198.18.0.2"
	syn := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1000, Window: 64240, MSS: 1460})
	synack := pt.TCP4(s, c, 22, 1031, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 5000, Ack: 1001, Window: 65160, MSS: 1460})
	ack := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPAck, Seq: 1001, Ack: 5001, Window: 502})

	check := func(step string, wantState statemachine.TCPState, wantTimeout int64, assured, replied bool) {
		t.Helper()
		es := entries(pl)
		if len(es) != 1 {
			t.Fatalf("%s: %d entries, want 1", step, len(es))
		}
		e := es[0]
		if e.Conn.State != wantState {
			t.Errorf("%s: state got %v, want %v", step, e.Conn.State, wantState)
		}
		if got := (e.Conn.Expires - 100*sec) / sec; got != wantTimeout {
			t.Errorf("%s: timeout got %d, want %d", step, got, wantTimeout)
		}
		if got := e.Conn.Status&statemachine.StatusAssured != 0; got != assured {
			t.Errorf("%s: ASSURED got %v, want %v", step, got, assured)
		}
		if got := e.Conn.Status&statemachine.StatusSeenReply != 0; got != replied {
			t.Errorf("%s: SEEN_REPLY got %v, want %v", step, got, replied)
		}
	}
	runSteps(t, pl, []step{{"syn", syn, PortA, 0, statemachine.StateNew, statemachine.TCPSynSent, Accept, DropNone}})
	check("syn", statemachine.TCPSynSent, 120, false, false)
	runSteps(t, pl, []step{{"synack", synack, PortB, 0, statemachine.StateEstablished, statemachine.TCPSynRecv, Accept, DropNone}})
	check("synack", statemachine.TCPSynRecv, 60, false, true)
	runSteps(t, pl, []step{{"ack", ack, PortA, 0, statemachine.StateEstablished, statemachine.TCPEstablished, Accept, DropNone}})
	check("ack", statemachine.TCPEstablished, 432000, true, true)
}

// TestUDPStream: DNS query NEW with 30 s, reply ESTABLISHED, traffic after
// 2 s makes it a stream: 120 s and ASSURED.
func TestUDPStream(t *testing.T) {
	pl := newTestPipeline(t, nil, 1024)
	q := pt.UDP4("198.18.0.1", "198.18.0.2", 40000, 53, []byte("query"))
	a := pt.UDP4("198.18.0.2", "198.18.0.1", 53, 40000, []byte("answer"))
	runSteps(t, pl, []step{
		{"query", q, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
		{"answer", a, PortB, 0, statemachine.StateEstablished, 0, Accept, DropNone},
	})
	e := entries(pl)[0]
	if got := (e.Conn.Expires - 100*sec) / sec; got != 30 || e.Conn.Status&statemachine.StatusAssured != 0 {
		t.Fatalf("after reply: timeout %d assured %v, want 30 false", got, e.Conn.Status&statemachine.StatusAssured != 0)
	}
	runSteps(t, pl, []step{{"later query", q, PortA, 3, statemachine.StateEstablished, 0, Accept, DropNone}})
	e = entries(pl)[0]
	if got := (e.Conn.Expires - 103*sec) / sec; got != 120 || e.Conn.Status&statemachine.StatusAssured == 0 {
		t.Fatalf("stream: timeout %d assured %v, want 120 true", got, e.Conn.Status&statemachine.StatusAssured != 0)
	}
	// Unreplied flows expire after 30 s: the next query is NEW again.
	q2 := pt.UDP4("198.18.0.1", "198.18.0.2", 40001, 53, nil)
	runSteps(t, pl, []step{
		{"other query", q2, PortA, 10, statemachine.StateNew, 0, Accept, DropNone},
		{"other query after 31 s", q2, PortA, 41, statemachine.StateNew, 0, Accept, DropNone},
	})
}

// TestPingAndICMPErrors: echo request NEW, reply ESTABLISHED; ICMP errors
// quoting a tracked UDP or TCP flow are RELATED, quoting nothing INVALID.
func TestPingAndICMPErrors(t *testing.T) {
	pl := newTestPipeline(t, nil, 1024)
	l, r := "198.18.0.1", "198.18.0.2"
	udp := pt.UDP4(l, r, 5000, 33434, []byte("probe"))
	tcp := pt.TCP4(l, r, 40000, 25, pt.TCPFields{Flags: packet.TCPSyn, Seq: 7, Window: 1000})
	stray := pt.UDP4(l, "198.18.0.9", 5000, 9, nil)
	runSteps(t, pl, []step{
		{"echo request", pt.ICMP4Echo(l, r, 8, 77, 1, nil), PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
		{"echo reply", pt.ICMP4Echo(r, l, 0, 77, 1, nil), PortB, 0, statemachine.StateEstablished, 0, Accept, DropNone},
		{"reply without request", pt.ICMP4Echo(r, l, 0, 78, 1, nil), PortB, 0, statemachine.StateInvalid, 0, Accept, DropNone},
		{"udp", udp, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
		{"port unreachable for udp", pt.ICMP4Error(r, l, 3, 3, pt.Quote(udp, 28)), PortB, 0, statemachine.StateRelated, 0, Accept, DropNone},
		{"tcp syn", tcp, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
		{"frag needed for tcp", pt.ICMP4Error("198.18.0.254", l, 3, 4, pt.Quote(tcp, 0)), PortB, 0, statemachine.StateRelated, 0, Accept, DropNone},
		{"error to a third party", pt.ICMP4Error(r, "198.18.0.7", 3, 3, pt.Quote(udp, 28)), PortB, 0, statemachine.StateInvalid, 0, Accept, DropNone},
		{"error for an unknown flow", pt.ICMP4Error(r, l, 3, 3, pt.Quote(stray, 28)), PortB, 0, statemachine.StateInvalid, 0, Accept, DropNone},
		{"icmpv6 neighbour solicitation", pt.NeighborSolicit("fe80::1", "ff02::1:ff00:2", "2001:2::2"), PortA, 0, statemachine.StateUntracked, 0, Accept, DropNone},
	})
}

// newOnlyFromA is the operator's classic policy: NEW only from port A,
// ESTABLISHED and RELATED both ways, everything else (INVALID) dropped.
const newOnlyFromA = `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -m physdev --physdev-in porta -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// TestRulesNewOnlyFromA is the operator's classic policy: NEW only from
// port A, ESTABLISHED and RELATED both ways, INVALID dropped.
func TestRulesNewOnlyFromA(t *testing.T) {
	s := DefaultSettings()
	s.Rules = loadRules(t, newOnlyFromA)
	pl := newTestPipeline(t, s, 1024)
	l, r := "198.18.0.1", "198.18.0.2"
	synR := pt.TCP4(r, l, 4000, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000})
	synL := pt.TCP4(l, r, 4001, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000})
	synackL := pt.TCP4(r, l, 22, 4001, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 100, Ack: 2, Window: 1000})
	runSteps(t, pl, []step{
		{"syn from B", synR, PortB, 0, statemachine.StateNew, 0, Drop, DropRule},
		{"syn from B again: still no entry", synR, PortB, 0, statemachine.StateNew, 0, Drop, DropRule},
		{"syn from A", synL, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
		{"syn/ack from B", synackL, PortB, 0, statemachine.StateEstablished, 0, Accept, DropNone},
		{"syn/ack from B, cached verdict", synackL, PortB, 0, statemachine.StateEstablished, 0, Accept, DropNone},
		{"lone ack from B: INVALID", pt.TCP4(r, l, 5, 6, pt.TCPFields{Flags: packet.TCPFin, Seq: 1}), PortB, 0, statemachine.StateInvalid, 0, Drop, DropRule},
	})
	if n := len(entries(pl)); n != 1 {
		t.Fatalf("entries: got %d, want 1 (a dropped first packet creates none)", n)
	}
	if pl.Stats().VerdictCacheHits == 0 {
		t.Errorf("verdict cache never hit")
	}
}

// TestMalformedAndNonIP: a broken IPv4 header is dropped before conntrack,
// a broken TCP header is INVALID for the rules, ARP is forwarded (or
// dropped with --non-ip=drop).
func TestMalformedAndNonIP(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	good := pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, nil)
	badIHL := append([]byte(nil), good...)
	badIHL[14] = 0x43
	badTCP := pt.TCP4("198.18.0.1", "198.18.0.2", 1, 2, pt.TCPFields{Flags: packet.TCPSyn, DataOff: 3})
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	runSteps(t, pl, []step{
		{"ihl 3", badIHL, PortA, 0, 0, 0, Drop, DropMalformed},
		{"tcp data offset 3", badTCP, PortA, 0, statemachine.StateInvalid, 0, Accept, DropNone},
		{"arp", arp, PortA, 0, 0, 0, Accept, DropNone},
	})
	s := DefaultSettings()
	s.NonIP = Drop
	pl.ctl.Store(s)
	runSteps(t, pl, []step{{"arp, --non-ip=drop", arp, PortA, 0, 0, 0, Drop, DropNonIP}})
	st := pl.Stats()
	if st.Drops[DropMalformed] != 1 || st.Drops[DropNonIP] != 1 || st.Packets[PortA] != 4 {
		t.Errorf("counters: malformed %d non-ip %d packets %d, want 1 1 4", st.Drops[DropMalformed], st.Drops[DropNonIP], st.Packets[PortA])
	}
}

// TestTableFullKeepsAssured fills a small table with ASSURED connections,
// then floods SYNs: no ASSURED entry is lost and the table never exceeds
// its maximum. With half the table ASSURED the flood's own entries are
// early-dropped to make room (whether some SYN also finds eight buckets
// of only ASSURED entries depends on the hash placement); with all of it
// ASSURED nothing may be evicted, and every SYN is dropped and counted.
func TestTableFullKeepsAssured(t *testing.T) {
	const max = 64
	for _, tc := range []struct {
		name      string
		assured   int
		allFull   bool // every SYN must be a table-full drop
		wantEarly bool // early drops must happen
	}{
		{"half ASSURED", max / 2, false, true},
		{"all ASSURED", max, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := newTestPipeline(t, nil, max)
			l, r := "198.18.0.1", "198.18.0.2"
			// ASSURED UDP streams (reply, then traffic after 2 s).
			for i := range tc.assured {
				q := pt.UDP4(l, r, uint16(10000+i), 53, nil)
				a := pt.UDP4(r, l, 53, uint16(10000+i), nil)
				pl.Process(q, 0, PortA, 100*sec)
				pl.Process(a, 0, PortB, 100*sec)
				pl.Process(q, 0, PortA, 103*sec)
			}
			const syns = 10 * max
			full := 0
			for i := range syns {
				syn := pt.TCP4("198.19.0.1", r, uint16(20000+i), 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000})
				res := pl.Process(syn, 0, PortA, 104*sec)
				if res.Drop == DropTableFull {
					full++
				}
				if n := pl.Shard().Len(); n > max {
					t.Fatalf("table holds %d entries, max %d", n, max)
				}
			}
			assured := 0
			for _, e := range entries(pl) {
				if e.Conn.Status&statemachine.StatusAssured != 0 {
					assured++
				}
			}
			if assured != tc.assured {
				t.Errorf("ASSURED entries after the flood: got %d, want %d", assured, tc.assured)
			}
			early := pl.Shard().Stats().EarlyDrop
			if tc.wantEarly && early == 0 {
				t.Errorf("no early drops counted")
			}
			if !tc.wantEarly && early != 0 {
				t.Errorf("%d early drops of ASSURED entries", early)
			}
			if tc.allFull && full != syns {
				t.Errorf("table-full drops: %d of %d SYNs", full, syns)
			}
			if got := pl.Stats().Drops[DropTableFull]; uint64(full) != got {
				t.Errorf("table-full drops: %d seen, %d counted", full, got)
			}
			// Every ASSURED stream still passes as ESTABLISHED.
			for i := range tc.assured {
				q := pt.UDP4(l, r, uint16(10000+i), 53, nil)
				if res := pl.Process(q, 0, PortA, 105*sec); res.State != statemachine.StateEstablished {
					t.Fatalf("stream %d after flood: %v, want ESTABLISHED", i, res.State)
				}
			}
		})
	}
}

// TestFragments: later fragments get the first fragment's state and
// verdict; a later fragment without its first is INVALID.
func TestFragments(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	big := pt.UDP4("198.18.0.1", "198.18.0.2", 7, 2049, make([]byte, 3000))
	frags := pt.Fragments4(big, 1200)
	if len(frags) < 3 {
		t.Fatalf("got %d fragments", len(frags))
	}
	for i, f := range frags {
		r := pl.Process(f, 0, PortA, 100*sec)
		if r.State != statemachine.StateNew || r.Verdict != Accept {
			t.Errorf("fragment %d: %v %v, want NEW ACCEPT", i, r.State, r.Verdict)
		}
	}
	other := pt.Fragments4(pt.UDP4("198.18.0.3", "198.18.0.2", 7, 2049, make([]byte, 3000)), 1200)
	if r := pl.Process(other[1], 0, PortA, 100*sec); r.State != statemachine.StateInvalid {
		t.Errorf("orphan fragment: %v, want INVALID", r.State)
	}
}

// TestProcessAllocatesNothing guards the hot path: established TCP, UDP,
// a new connection and an ICMP error.
func TestProcessAllocatesNothing(t *testing.T) {
	s := DefaultSettings()
	s.VerifyChecksum = false // the new-flow case rewrites ports without fixing checksums
	pl := newTestPipeline(t, s, 1<<16)
	l, r := "198.18.0.1", "198.18.0.2"
	syn := pt.TCP4(l, r, 1000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535})
	synack := pt.TCP4(r, l, 80, 1000, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535})
	ack := pt.TCP4(l, r, 1000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535})
	pl.Process(syn, 0, PortA, sec)
	pl.Process(synack, 0, PortB, sec)
	udp := pt.UDP4(l, r, 1, 2, nil)
	icmp := pt.ICMP4Error(r, l, 3, 3, pt.Quote(udp, 28))
	port := uint16(0)
	before := pl.Shard().Len()
	for name, f := range map[string]func(){
		"established tcp": func() { pl.Process(ack, 0, PortA, sec) },
		"udp":             func() { pl.Process(udp, 0, PortA, sec) },
		"icmp error":      func() { pl.Process(icmp, 0, PortB, sec) },
		"new udp flows": func() {
			port++
			b := udp
			b[34], b[35] = byte(port>>8), byte(port)
			pl.Process(b, 0, PortA, sec)
		},
	} {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", name, n)
		}
	}
	if created := pl.Shard().Len() - before; created < 200 {
		t.Errorf("new-flow case created %d entries, want ≥ 200", created)
	}
}

// TestStateIndex pins stateIndex to StateNames: each state's index names it.
func TestStateIndex(t *testing.T) {
	for _, tc := range []struct {
		s    statemachine.CtState
		name string
	}{
		{0, "none"},
		{statemachine.StateInvalid, "INVALID"},
		{statemachine.StateNew, "NEW"},
		{statemachine.StateEstablished, "ESTABLISHED"},
		{statemachine.StateRelated, "RELATED"},
		{statemachine.StateUntracked, "UNTRACKED"},
	} {
		if got := StateNames[stateIndex(tc.s)]; got != tc.name {
			t.Errorf("StateNames[stateIndex(%d)]: got %s, want %s", tc.s, got, tc.name)
		}
	}
}

// TestSpoofedIntoWrongPort: frames carrying the tuple of a flow that port A
// opened, sent into port B, are judged for port B in every state — never
// with the verdict cached for port A (issue 17) — and the flow's own
// packets still hit their cached verdict afterwards.
func TestSpoofedIntoWrongPort(t *testing.T) {
	l, r := "198.18.7.1", "198.18.7.2"
	udp := pt.UDP4(l, r, 4000, 5000, []byte("x"))
	syn := pt.TCP4(l, r, 4001, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000})
	t.Run("left-only policy", func(t *testing.T) {
		s := DefaultSettings()
		s.Rules = loadRules(t, newOnlyFromA)
		pl := newTestPipeline(t, s, 1024)
		runSteps(t, pl, []step{
			{"udp from A", udp, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
			{"udp from A again: cached", udp, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
			{"same tuple into B: NEW from B", udp, PortB, 0, statemachine.StateNew, 0, Drop, DropRule},
			{"udp from A after the spoof", udp, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
			{"syn from A", syn, PortA, 0, statemachine.StateNew, statemachine.TCPSynSent, Accept, DropNone},
			{"syn again from A: cached", syn, PortA, 0, statemachine.StateNew, statemachine.TCPSynSent, Accept, DropNone},
			{"same syn into B", syn, PortB, 0, statemachine.StateNew, statemachine.TCPSynSent, Drop, DropRule},
		})
		hits := pl.Stats().VerdictCacheHits
		pl.Process(udp, 0, PortA, 100*sec)
		if pl.Stats().VerdictCacheHits != hits+1 {
			t.Errorf("the flow's own packet missed the cache after the spoofed ones")
		}
	})
	t.Run("drop by port the other way", func(t *testing.T) {
		s := DefaultSettings()
		s.Rules = loadRules(t, `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p udp --dport 9999 -j NOTRACK
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -m physdev --physdev-in portb -m conntrack --ctstate NEW,INVALID,UNTRACKED -j DROP
COMMIT
`)
		pl := newTestPipeline(t, s, 1024)
		// An out-of-window segment of an established flow is INVALID.
		c, sv := pt.TCP4(l, r, 4002, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1000, Window: 1000}),
			pt.TCP4(r, l, 80, 4002, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 5000, Ack: 1001, Window: 1000})
		ack := pt.TCP4(l, r, 4002, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 1001, Ack: 5001, Window: 1000})
		outOfWindow := pt.TCP4(l, r, 4002, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 900000, Ack: 5001, Window: 1000})
		untracked := pt.UDP4(l, r, 4003, 9999, []byte("u"))
		runSteps(t, pl, []step{
			{"udp from A", udp, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
			{"same tuple into B", udp, PortB, 0, statemachine.StateNew, 0, Drop, DropRule},
			{"syn from A", c, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
			{"syn/ack from B", sv, PortB, 0, statemachine.StateEstablished, 0, Accept, DropNone},
			{"ack from A", ack, PortA, 0, statemachine.StateEstablished, statemachine.TCPEstablished, Accept, DropNone},
			{"out of window from A: INVALID, accepted", outOfWindow, PortA, 0, statemachine.StateInvalid, 0, Accept, DropNone},
			{"again from A: cached", outOfWindow, PortA, 0, statemachine.StateInvalid, 0, Accept, DropNone},
			{"same INVALID segment into B", outOfWindow, PortB, 0, statemachine.StateInvalid, 0, Drop, DropRule},
			{"untracked from A", untracked, PortA, 0, statemachine.StateUntracked, 0, Accept, DropNone},
			{"untracked into B", untracked, PortB, 0, statemachine.StateUntracked, 0, Drop, DropRule},
		})
	})
}
