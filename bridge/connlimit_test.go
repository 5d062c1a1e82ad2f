package bridge

import (
	"fmt"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

const connlimitRules = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-saddr -j DROP
-A FORWARD -p tcp -m tcp --dport 81 --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 1 --connlimit-mask 32 --connlimit-daddr -j DROP
COMMIT
`

// clConn is one TCP connection driven through a pipeline.
type clConn struct {
	pl       *Pipeline
	cli, srv string
	sport    uint16
	dport    uint16
}

func (c clConn) seg(fromCli bool, flags uint8, seq, ack uint32) []byte {
	f := pt.TCPFields{Flags: flags, Seq: seq, Ack: ack, Window: 65535}
	if fromCli {
		return pt.TCP4(c.cli, c.srv, c.sport, c.dport, f)
	}
	return pt.TCP4(c.srv, c.cli, c.dport, c.sport, f)
}

// open sends the SYN and, when it passes, completes the handshake; it
// reports whether the SYN passed.
func (c clConn) open(t *testing.T, now *int64) bool {
	t.Helper()
	*now += 1e6
	if r := c.pl.Process(c.seg(true, packet.TCPSyn, 100, 0), 0, PortA, *now); r.Verdict != Accept {
		if r.Tracked {
			t.Fatalf("%s:%d: a dropped SYN left an entry", c.cli, c.sport)
		}
		return false
	}
	for _, s := range []struct {
		frame []byte
		in    Port
	}{
		{c.seg(false, packet.TCPSyn|packet.TCPAck, 500, 101), PortB},
		{c.seg(true, packet.TCPAck, 101, 501), PortA},
	} {
		*now += 1e6
		if r := c.pl.Process(s.frame, 0, s.in, *now); r.Verdict != Accept {
			t.Fatalf("%s:%d: handshake dropped: %+v", c.cli, c.sport, r)
		}
	}
	return true
}

// close ends an open connection with FINs (TIME_WAIT) or an RST (CLOSE).
func (c clConn) close(t *testing.T, now *int64, rst bool) {
	t.Helper()
	steps := []struct {
		frame []byte
		in    Port
	}{
		{c.seg(true, packet.TCPFin|packet.TCPAck, 101, 501), PortA},
		{c.seg(false, packet.TCPFin|packet.TCPAck, 501, 102), PortB},
		{c.seg(true, packet.TCPAck, 102, 502), PortA},
	}
	want := statemachine.TCPTimeWait
	if rst {
		steps = steps[:0]
		steps = append(steps, struct {
			frame []byte
			in    Port
		}{c.seg(true, packet.TCPRst|packet.TCPAck, 101, 501), PortA})
		want = statemachine.TCPClose
	}
	var r Result
	for _, s := range steps {
		*now += 1e6
		r = c.pl.Process(s.frame, 0, s.in, *now)
	}
	if r.TCPState != want {
		t.Fatalf("%s:%d: closed in %v, want %v", c.cli, c.sport, r.TCPState, want)
	}
}

// TestPipelineConnlimit follows -m connlimit through two pipelines (two
// shards of one table, as two workers): connections opened on either count
// against one limit per /24 (the count is the rule set's, shared); the
// connection over the limit is refused, and again on a retransmitted SYN;
// a connection closed with FINs (TIME_WAIT), with an RST (CLOSE), deleted
// (conntrack -D) or expired frees its slot; daddr mode counts per server;
// a new rule set starts from 0 as iptables-restore does.
func TestPipelineConnlimit(t *testing.T) {
	s := DefaultSettings()
	s.Conntrack.Timeouts.TCPEstablished = 300e9
	s.Rules = loadRules(t, connlimitRules)
	tb, err := flowtable.New(flowtable.Config{MaxEntries: 256, Buckets: 256, Shards: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctl := NewControl(s)
	fc := NewFragCache(64, 1)
	pls := [2]*Pipeline{NewPipeline(tb, 0, ctl, fc), NewPipeline(tb, 1, ctl, fc)}
	now := int64(1e9)
	const srv = "198.18.1.1"
	conn := func(w int, cli string, sport uint16) clConn {
		return clConn{pl: pls[w], cli: cli, srv: srv, sport: sport, dport: 80}
	}
	a := conn(0, "198.18.0.1", 1000)
	b := conn(1, "198.18.0.2", 1001)
	c := conn(0, "198.18.0.3", 1002)
	if !a.open(t, &now) || !b.open(t, &now) {
		t.Fatal("the first two connections of 198.18.0.0/24 were refused")
	}
	if c.open(t, &now) {
		t.Fatal("the third connection of 198.18.0.0/24 passed (limit 2, opened on the other worker)")
	}
	if c.open(t, &now) {
		t.Fatal("the retransmitted SYN of the third connection passed")
	}
	if d := conn(1, "198.18.2.9", 1003); !d.open(t, &now) {
		t.Fatal("a connection from another /24 was refused")
	}
	a.close(t, &now, false) // TIME_WAIT frees a's slot, on worker 0...
	c.pl = pls[1]           // ...seen by worker 1
	if !c.open(t, &now) {
		t.Fatal("after a closed with FINs, the third connection was still refused")
	}
	e := conn(0, "198.18.0.4", 1004)
	if e.open(t, &now) {
		t.Fatal("a fourth connection passed with two open")
	}
	b.close(t, &now, true) // CLOSE
	if !e.open(t, &now) {
		t.Fatal("after b reset, a new connection was still refused")
	}
	// Now c (worker 1) and e (worker 0) are open. conntrack -D of c:
	f := conn(0, "198.18.0.5", 1005)
	if f.open(t, &now) {
		t.Fatal("a connection over the limit passed")
	}
	pls[1].Shard().Range(func(en *flowtable.Entry) bool {
		if en.Tuple().SrcPort == c.sport {
			pls[1].Shard().Delete(en)
		}
		return true
	})
	if !f.open(t, &now) {
		t.Fatal("after the deletion of c, a new connection was still refused")
	}
	// e and f are open on worker 0; expiry (300 s established) frees both.
	g := conn(1, "198.18.0.6", 1006)
	if g.open(t, &now) {
		t.Fatal("a connection over the limit passed")
	}
	now += 301e9
	pls[0].Shard().Expire(now, 1<<20)
	h := conn(1, "198.18.0.7", 1007)
	if !g.open(t, &now) || !h.open(t, &now) {
		t.Fatal("after the expiry of e and f, new connections were refused")
	}

	// Daddr mode: one connection per server, whoever the client.
	x := clConn{pl: pls[0], cli: "198.18.0.20", srv: "198.18.3.1", sport: 2000, dport: 81}
	y := clConn{pl: pls[1], cli: "198.18.4.20", srv: "198.18.3.1", sport: 2001, dport: 81}
	z := clConn{pl: pls[1], cli: "198.18.4.20", srv: "198.18.3.2", sport: 2002, dport: 81}
	if !x.open(t, &now) || y.open(t, &now) || !z.open(t, &now) {
		t.Fatal("daddr: want the first connection to each server only")
	}

	// A new rule set counts from 0: g and h, open, are not counted.
	s2 := *s
	s2.Rules = loadRules(t, connlimitRules)
	ctl.Store(&s2)
	i, j, k := conn(0, "198.18.0.8", 1008), conn(1, "198.18.0.9", 1009), conn(0, "198.18.0.10", 1010)
	if !i.open(t, &now) || !j.open(t, &now) || k.open(t, &now) {
		t.Fatal("after a reload: want two new connections and not a third")
	}
	// g's entry still holds counts of the old rule set: closing it frees
	// nothing in the new one.
	g.close(t, &now, true)
	if k.open(t, &now) {
		t.Fatal("closing a connection counted by the old rule set freed a slot in the new one")
	}
	i.close(t, &now, true)
	if !k.open(t, &now) {
		t.Fatal("closing a connection of the new rule set freed no slot")
	}

	// No allocation per packet: a refused SYN, and connections opened and
	// reset (frames built beforehand).
	l := conn(0, "198.18.0.11", 1011)
	lsyn := l.seg(true, packet.TCPSyn, 100, 0)
	if n := testing.AllocsPerRun(100, func() {
		now += 1e6
		if r := pls[0].Process(lsyn, 0, PortA, now); r.Verdict != Drop {
			t.Fatalf("a SYN over the limit: %v", r.Verdict)
		}
	}); n != 0 {
		t.Errorf("a SYN refused by connlimit: %v allocs per run, want 0", n)
	}
	var syns, rsts [][]byte
	for i := range 110 {
		m := clConn{cli: "198.18.5.1", srv: srv, sport: uint16(3000 + i), dport: 80}
		syns = append(syns, m.seg(true, packet.TCPSyn, 100, 0))
		rsts = append(rsts, m.seg(true, packet.TCPRst|packet.TCPAck, 101, 0))
	}
	next := 0
	if n := testing.AllocsPerRun(100, func() {
		now += 1e6
		if r := pls[1].Process(syns[next], 0, PortA, now); r.Verdict != Accept {
			t.Fatalf("SYN %d: %v", next, r.Verdict)
		}
		pls[1].Process(rsts[next], 0, PortA, now)
		next++
	}); n != 0 {
		t.Errorf("open and reset: %v allocs per run, want 0", n)
	}
}

// TestPipelineConnlimitFull fills the rule set's table of -m connlimit
// counts (65536 addresses, shared by the workers) with connections from
// 65536 + 300 sources through two pipelines: every SYN that finds no room
// for its address is dropped with its own reason, connlimit-full (not the
// rule's), whatever the rule's target, and no SYN is dropped for another
// reason; the pipelines' drop counters, RuleSet.ConnlimitFull and the
// refused SYNs agree. A source whose address already has a count is still
// judged, and a connection that closes frees its address for a new one.
func TestPipelineConnlimitFull(t *testing.T) {
	const addrs = 1 << 16 // rules: climStripes × climPerStripe
	const extra = 300
	s := DefaultSettings()
	s.Conntrack.Timeouts.TCPEstablished = 300e9
	// Each source may have 1000 connections: only a full table drops.
	s.Rules = loadRules(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 1000 --connlimit-mask 32 -j DROP
COMMIT
`)
	tb, err := flowtable.New(flowtable.Config{MaxEntries: 1 << 17, Buckets: 1 << 17, Shards: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctl := NewControl(s)
	fc := NewFragCache(64, 1)
	pls := [2]*Pipeline{NewPipeline(tb, 0, ctl, fc), NewPipeline(tb, 1, ctl, fc)}
	now := int64(1e9)
	src := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", 1+i>>16, i>>8&0xff, i&0xff) }
	var refused []int
	for i := range addrs + extra {
		now += 1e3
		c := clConn{cli: src(i), srv: "198.18.1.1", sport: 1000, dport: 80}
		r := pls[i&1].Process(c.seg(true, packet.TCPSyn, 100, 0), 0, PortA, now)
		switch {
		case r.Verdict == Accept:
		case r.Drop == DropConnlimit:
			if r.Tracked {
				t.Fatalf("source %s: a SYN dropped connlimit-full left an entry", c.cli)
			}
			refused = append(refused, i)
		default:
			t.Fatalf("source %s: got %v %v, want ACCEPT or DROP connlimit-full", c.cli, r.Verdict, r.Drop)
		}
	}
	if DropConnlimit.String() != "connlimit-full" {
		t.Errorf("DropConnlimit is named %q, want connlimit-full", DropConnlimit)
	}
	// The table holds 65536 addresses at most; its stripes fill unevenly,
	// so at least the extra ones are refused.
	var st Stats
	st.Add(pls[0].Stats())
	st.Add(pls[1].Stats())
	full := s.Rules.ConnlimitFull()
	if len(refused) < extra || uint64(len(refused)) != full || st.Drops[DropConnlimit] != full || st.Dropped() != full {
		t.Fatalf("%d SYNs refused, RuleSet.ConnlimitFull %d, pipelines' connlimit-full drops %d of %d drops; want at least %d, all equal",
			len(refused), full, st.Drops[DropConnlimit], st.Dropped(), extra)
	}
	t.Logf("%d of %d sources refused with the table full", len(refused), addrs+extra)

	// A source with a count: its second connection is judged (accepted).
	if r := pls[0].Process(clConn{cli: src(0), srv: "198.18.1.1", sport: 1001, dport: 80}.seg(true, packet.TCPSyn, 100, 0), 0, PortA, now); r.Verdict != Accept {
		t.Fatalf("a second connection of a counted source in a full table: %v %v, want ACCEPT", r.Verdict, r.Drop)
	}
	// Every accepted connection is reset by the server (an RST
	// acknowledging the SYN closes it in SYN_SENT, releasing its count;
	// source 0's second one stays): every refused source gets in.
	next := refused
	for i := range addrs + extra {
		if len(next) > 0 && next[0] == i {
			next = next[1:]
			continue
		}
		now += 1e3
		c := clConn{cli: src(i), srv: "198.18.1.1", sport: 1000, dport: 80}
		if r := pls[i&1].Process(c.seg(false, packet.TCPRst|packet.TCPAck, 0, 101), 0, PortB, now); r.TCPState != statemachine.TCPClose {
			t.Fatalf("source %s: the RST left the connection in %v, want CLOSE", c.cli, r.TCPState)
		}
	}
	for _, i := range refused {
		now += 1e3
		c := clConn{cli: src(i), srv: "198.18.1.1", sport: 2000, dport: 80}
		if r := pls[i&1].Process(c.seg(true, packet.TCPSyn, 100, 0), 0, PortA, now); r.Verdict != Accept {
			t.Fatalf("source %s, refused in the full table, after the others closed: %v %v, want ACCEPT", c.cli, r.Verdict, r.Drop)
		}
	}
	if got := s.Rules.ConnlimitFull(); got != full {
		t.Errorf("ConnlimitFull went from %d to %d with room in the table", full, got)
	}
}
