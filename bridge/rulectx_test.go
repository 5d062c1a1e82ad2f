package bridge

import (
	"testing"

	"github.com/statewire/statewire/flowtable"
	pt "github.com/statewire/statewire/packet/packettest"
)

// connMarkOf returns the connection mark of the flow of frame (looked up
// as the pipeline does), and whether the flow has an entry.
func connMarkOf(t *testing.T, pl *Pipeline, frame []byte) (uint32, bool) {
	t.Helper()
	p := pl.Packet()
	var k flowtable.Key
	if !k.SetOf(p) {
		t.Fatalf("no key for the last frame")
	}
	e := pl.Shard().Lookup(&k, pl.table.HashKey(&k), 0)
	if e == nil {
		return 0, false
	}
	var es flowtable.EntrySnapshot
	pl.Shard().Snapshot(e, &es)
	if es.Mark != pl.Shard().ConnMark(e) {
		t.Errorf("the snapshot lists mark %d, the entry has %d", es.Mark, pl.Shard().ConnMark(e))
	}
	return es.Mark, true
}

// TestPipelineConnMark follows a connection mark through the pipeline:
// CONNMARK on the first packet (the new entry keeps it), on a later one,
// -m connmark on the reply and on an ICMP error RELATED to the connection
// (the kernel hands the error the connection it relates to).
func TestPipelineConnMark(t *testing.T) {
	s := DefaultSettings()
	s.Rules = loadRules(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 53 -m length --length 100:65535 -j CONNMARK --set-mark 9
-A FORWARD -p udp -m udp --sport 53 -m connmark --mark 9 -j DROP
-A FORWARD -p icmp -m connmark --mark 9 -m conntrack --ctdir REPLY -j DROP
COMMIT
`)
	pl := newTestPipeline(t, s, 64)
	const cli, srv = "198.18.0.1", "198.18.0.2"
	short, long := pt.UDP4(cli, srv, 4000, 53, make([]byte, 20)), pt.UDP4(cli, srv, 4000, 53, make([]byte, 100))
	reply := pt.UDP4(srv, cli, 53, 4000, make([]byte, 20))
	unreach := pt.ICMP4Error(srv, cli, 3, 3, pt.Quote(short, 28))
	now := int64(1e9)
	type want struct {
		name  string
		frame []byte
		in    Port
		drop  bool
		mark  uint32
	}
	for _, w := range []want{
		{"short query", short, PortA, false, 0},
		{"reply, mark 0", reply, PortB, false, 0},
		{"ICMP error, mark 0", unreach, PortB, false, 0},
		{"long query sets the mark", long, PortA, false, 9},
		{"reply, mark 9", reply, PortB, true, 9},
		{"ICMP error RELATED to the marked connection", unreach, PortB, true, 9},
	} {
		now += 1e6
		r := pl.Process(w.frame, 0, w.in, now)
		if (r.Verdict == Drop) != w.drop {
			t.Errorf("%s: verdict %v (drop %v), want drop %v", w.name, r.Verdict, r.Drop, w.drop)
		}
		if w.frame[23] == 17 { // UDP: the flow's own entry
			if m, ok := connMarkOf(t, pl, w.frame); !ok || m != w.mark {
				t.Errorf("%s: connection mark %d (entry %v), want %d", w.name, m, ok, w.mark)
			}
		}
	}
	// A connection whose first packet runs CONNMARK is created with the
	// mark (the kernel confirms the marked ct).
	first := pt.UDP4(cli, srv, 4001, 53, make([]byte, 100))
	if r := pl.Process(first, 0, PortA, now+1e6); r.Verdict != Accept {
		t.Fatalf("first long query: %v", r.Verdict)
	}
	if m, ok := connMarkOf(t, pl, first); !ok || m != 9 {
		t.Errorf("a connection marked by its first packet: mark %d (entry %v), want 9", m, ok)
	}
	if n := testing.AllocsPerRun(200, func() { now += 1e6; pl.Process(reply, 0, PortB, now) }); n != 0 {
		t.Errorf("Process with connmark rules: %v allocs per run, want 0", n)
	}
}

// TestPipelineLimit: the pipeline's -m limit buckets run down with the
// packets' times, refill with time, and start full again with a new rule
// set (as an iptables-restore gives the kernel's rules new buckets).
func TestPipelineLimit(t *testing.T) {
	const text = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 7 -m limit --limit 1/min --limit-burst 2 -j ACCEPT
-A FORWARD -p udp -m udp --dport 7 -j DROP
COMMIT
`
	s := DefaultSettings()
	s.Rules = loadRules(t, text)
	pl := newTestPipeline(t, s, 64)
	f := pt.UDP4("198.18.0.1", "198.18.0.2", 4000, 7, make([]byte, 20))
	now := int64(5e9)
	got := func() Verdict {
		now += 1e6
		return pl.Process(f, 0, PortA, now).Verdict
	}
	for i, w := range []Verdict{Accept, Accept, Drop, Drop} {
		if v := got(); v != w {
			t.Errorf("packet %d: %v, want %v", i+1, v, w)
		}
	}
	now += 60e9
	if v := got(); v != Accept {
		t.Errorf("a minute later: %v, want ACCEPT", v)
	}
	if v := got(); v != Drop {
		t.Errorf("then: %v, want DROP", v)
	}
	s2 := *s
	s2.Rules = loadRules(t, text)
	pl.ctl.Store(&s2)
	if v := got(); v != Accept {
		t.Errorf("after a reload: %v, want ACCEPT (fresh buckets)", v)
	}
	if n := testing.AllocsPerRun(200, func() { got() }); n != 0 {
		t.Errorf("Process through -m limit: %v allocs per run, want 0", n)
	}
}
