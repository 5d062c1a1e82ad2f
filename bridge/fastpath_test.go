package bridge

import (
	"fmt"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// fakeFast is a FastPath that records offers; TakeBack and Peek report
// the Expires set in live (the fast path's view) when there is one.
type fakeFast struct {
	offered  map[flowtable.Key][2]uint8
	live     map[flowtable.Key]int64
	full     bool
	takeBack int
}

func newFakeFast() *fakeFast {
	return &fakeFast{offered: map[flowtable.Key][2]uint8{}, live: map[flowtable.Key]int64{}}
}

func (f *fakeFast) Offer(e *flowtable.Entry, vs [2]uint8, oc offload.OfferConfig) error {
	if f.full {
		return offload.ErrFull
	}
	if _, ok := f.offered[e.Key()]; ok {
		return offload.ErrOffered
	}
	f.offered[e.Key()] = vs
	return nil
}

func (f *fakeFast) TakeBack(e *flowtable.Entry) (bool, error) {
	k := e.Key()
	if _, ok := f.offered[k]; !ok {
		return false, nil
	}
	delete(f.offered, k)
	f.takeBack++
	if x, ok := f.live[k]; ok {
		e.Conn.Expires = x
	}
	return true, nil
}

func (f *fakeFast) Peek(e *flowtable.Entry, u *offload.Usage) (bool, error) {
	k := e.Key()
	if _, ok := f.offered[k]; !ok {
		return false, nil
	}
	u.Expires = e.Conn.Expires
	if x, ok := f.live[k]; ok {
		u.Expires = x
	}
	return true, nil
}

// TestFastPathOffers: an ESTABLISHED, ASSURED TCP flow is offered after
// an accepted packet with its cached verdicts, taken back before the
// pipeline judges its next packet (and offered again after it), taken
// back by a FIN for good, by a settings change, and by its removal.
func TestFastPathOffers(t *testing.T) {
	pl := newTestPipeline(t, nil, 1024)
	fp := newFakeFast()
	pl.SetFastPath(fp)
	pl.fast.delay = 0 // TestFastPathDelay checks the delay
	c, s := "198.18.0.1", "198.18.0.2"
	syn := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1000, Window: 64240, MSS: 1460})
	synack := pt.TCP4(s, c, 22, 1031, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 5000, Ack: 1001, Window: 65160, MSS: 1460})
	ack := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPAck, Seq: 1001, Ack: 5001, Window: 502})
	ack2 := pt.TCP4(s, c, 22, 1031, pt.TCPFields{Flags: packet.TCPAck, Seq: 5001, Ack: 1001, Window: 509})
	fin := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPFin | packet.TCPAck, Seq: 1001, Ack: 5001, Window: 502})
	est := statemachine.StateEstablished
	runSteps(t, pl, []step{
		{"syn", syn, PortA, 0, statemachine.StateNew, statemachine.TCPSynSent, Accept, DropNone},
		{"synack", synack, PortB, 0, est, statemachine.TCPSynRecv, Accept, DropNone},
	})
	if len(fp.offered) != 0 {
		t.Fatalf("offered before ESTABLISHED")
	}
	runSteps(t, pl, []step{{"ack", ack, PortA, 0, est, statemachine.TCPEstablished, Accept, DropNone}})
	var e *flowtable.Entry
	pl.Shard().Range(func(x *flowtable.Entry) bool { e = x; return false })
	k := e.Key()
	vs, ok := fp.offered[k]
	if !ok || !e.Offloaded() {
		t.Fatalf("ESTABLISHED ASSURED flow with a cached ACCEPT not offered (offered %v, flag %v)", ok, e.Offloaded())
	}
	// Both directions' ESTABLISHED verdicts were cached (SYN/ACK, ACK),
	// with the ports they came in on.
	if vs[statemachine.Original]&1 == 0 || vs[statemachine.Reply]&1 == 0 || vs[statemachine.Original]&(1<<6) != 0 || vs[statemachine.Reply]&(1<<6) == 0 {
		t.Fatalf("verdicts %#x: want ACCEPT ESTABLISHED from port A (original) and port B (reply)", vs)
	}
	// The next packet comes up the slow path: taken back, judged, offered again.
	fp.live[k] = e.Conn.Expires + 7*sec
	runSteps(t, pl, []step{{"ack2", ack2, PortB, 1, est, statemachine.TCPEstablished, Accept, DropNone}})
	if fp.takeBack != 1 || pl.Stats().Fast.TakenBack[TakeBackSlowPath] != 1 || pl.Stats().Fast.Offered != 1 {
		t.Fatalf("after ack2: take-backs %d, stats %+v (want taken back, held off)", fp.takeBack, pl.Stats().Fast)
	}
	// After the hold-off, the next accepted packet offers it again.
	runSteps(t, pl, []step{{"ack2 later", ack2, PortB, 2, est, statemachine.TCPEstablished, Accept, DropNone}})
	if pl.Stats().Fast.Offered != 2 {
		t.Fatalf("after the hold-off: stats %+v, want offered again", pl.Stats().Fast)
	}
	if vs := fp.offered[k]; vs[0] == 0 || vs[1] == 0 {
		t.Fatalf("re-offer: verdicts %#x, want both directions", vs)
	}
	delete(fp.live, k)

	// Expiry: the table's Expires is stale; the fast path's is asked.
	e.Conn.Expires = 150 * sec
	fp.live[k] = 500 * sec
	if pl.Shard().Lookup(&k, pl.table.HashKey(&k), 200*sec) != e || e.Conn.Expires != 500*sec {
		t.Fatalf("lazy expiry removed an offered flow the fast path keeps alive (Expires %d)", e.Conn.Expires)
	}
	delete(fp.live, k)

	// A settings change takes it back; its next packet offers it again.
	s2 := *pl.ctl.Load()
	pl.ctl.Store(&s2)
	pl.SyncFastPath()
	if e.Offloaded() || len(fp.offered) != 0 || pl.Stats().Fast.TakenBack[TakeBackSettings] != 1 {
		t.Fatalf("settings change: offloaded %v, map %d, stats %+v", e.Offloaded(), len(fp.offered), pl.Stats().Fast)
	}
	runSteps(t, pl, []step{{"ack2 again", ack2, PortB, 3, est, statemachine.TCPEstablished, Accept, DropNone}})
	if !e.Offloaded() {
		t.Fatalf("not offered again after the settings change")
	}

	// A FIN: taken back, and FIN_WAIT is not eligible.
	runSteps(t, pl, []step{{"fin", fin, PortA, 4, est, statemachine.TCPFinWait, Accept, DropNone}})
	if e.Offloaded() || len(fp.offered) != 0 {
		t.Fatalf("FIN_WAIT flow still offered")
	}

	// Removal takes an offered entry back (here: a UDP flow, deleted).
	q := pt.UDP4(c, s, 40000, 53, []byte("q"))
	a := pt.UDP4(s, c, 53, 40000, []byte("a"))
	runSteps(t, pl, []step{
		{"q", q, PortA, 4, statemachine.StateNew, 0, Accept, DropNone},
		{"a", a, PortB, 4, est, 0, Accept, DropNone},
		{"q2", q, PortA, 4, est, 0, Accept, DropNone}, // takes it back (offered by a): held off
		{"q3", q, PortA, 5, est, 0, Accept, DropNone},
	})
	uk, _ := flowtable.KeyOf(mustParse(t, q))
	ue := pl.Shard().Lookup(&uk, pl.table.HashKey(&uk), 105*sec)
	if ue == nil || !ue.Offloaded() {
		t.Fatalf("UDP flow with cached verdicts not offered (entry %v, stats %+v)", ue != nil, pl.Stats().Fast)
	}
	before := pl.Stats().Fast.TakenBack[TakeBackRemove]
	pl.Shard().Delete(ue)
	if _, ok := fp.offered[uk]; ok || pl.Stats().Fast.TakenBack[TakeBackRemove] != before+1 {
		t.Fatalf("deleted entry left in the fast path")
	}

	// A full map is counted, not fatal, and backs off.
	fp.full = true
	runSteps(t, pl, []step{
		{"q again", q, PortA, 6, statemachine.StateNew, 0, Accept, DropNone},
		{"a again", a, PortB, 6, est, 0, Accept, DropNone},
		{"q2 again", q, PortA, 6, est, 0, Accept, DropNone},
	})
	if pl.Stats().Fast.Refused != 1 {
		t.Fatalf("refusals %d, want 1 (then back off)", pl.Stats().Fast.Refused)
	}
}

// TestFastPathNotWithRaw: nothing is offered while the raw table can act
// on the flow's family.
// TestFastPathRawTable: the XDP program has no raw table, so a direction
// is offered only when the raw table left its packets alone and read
// nothing per packet (rules.RawResult.Passive): raw rules that never act
// on the flow keep the fast path, a raw rule reading a per-packet field
// (-f) keeps the flow out of it.
func TestFastPathRawTable(t *testing.T) {
	q := pt.UDP4("198.18.0.1", "198.18.0.2", 40000, 53, []byte("q"))
	a := pt.UDP4("198.18.0.2", "198.18.0.1", 53, 40000, []byte("a"))
	for _, c := range []struct {
		name, raw string
		offered   bool
	}{
		{"raw rules for other flows", "-A PREROUTING -p udp --dport 9 -j DROP\n-A PREROUTING -p tcp --dport 21 -j CT --helper ftp", true},
		{"raw rule reading the fragment bit", "-A PREROUTING -p udp -f -j DROP", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := DefaultSettings()
			s.Rules = loadRules(t, "*raw\n:PREROUTING ACCEPT [0:0]\n"+c.raw+"\nCOMMIT\n")
			pl := newTestPipeline(t, s, 64)
			fp := newFakeFast()
			pl.SetFastPath(fp)
			now := 100 * sec
			// NEW, the reply (eligible from here), then offered by the
			// next packet past offerDelay.
			for i, f := range [][]byte{q, a, q} {
				pl.Process(f, 0, Port(i&1), now)
				now += offerDelay
			}
			vs, ok := fp.offered[mustKey(t, q)]
			if ok != c.offered {
				t.Fatalf("offered %v, want %v (offers %v)", ok, c.offered, fp.offered)
			}
			if ok && (vs[0] == 0 || vs[1] == 0 || vs[0]&0x80 != 0 || vs[1]&0x80 != 0) {
				t.Errorf("offered verdict bytes %#x, want both directions, in the fast path's layout", vs)
			}
		})
	}
}

func mustKey(t *testing.T, f []byte) flowtable.Key {
	t.Helper()
	k, ok := flowtable.KeyOf(mustParse(t, f))
	if !ok {
		t.Fatal("no key")
	}
	return k
}

func mustParse(t *testing.T, f []byte) *packet.Packet {
	t.Helper()
	var p packet.Packet
	if r := packet.Parse(f, 0, packet.Options{}, &p); r != packet.ReasonOK {
		t.Fatalf("parse: %v", r)
	}
	return &p
}

// TestFastPathDelay: a flow is offered only once it has been eligible for
// offerDelay, so a short connection costs no offer and take-back.
func TestFastPathDelay(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	fp := newFakeFast()
	pl.SetFastPath(fp)
	q := pt.UDP4("198.18.0.1", "198.18.0.2", 40000, 53, []byte("q"))
	a := pt.UDP4("198.18.0.2", "198.18.0.1", 53, 40000, []byte("a"))
	base := 100 * sec
	pl.Process(q, 0, PortA, base)
	pl.Process(a, 0, PortB, base) // eligible from here
	pl.Process(q, 0, PortA, base+offerDelay/2)
	if len(fp.offered) != 0 {
		t.Fatalf("offered before the delay")
	}
	pl.Process(a, 0, PortB, base+offerDelay)
	if len(fp.offered) != 1 || pl.Stats().Fast.Offered != 1 {
		t.Fatalf("not offered after the delay: %+v", pl.Stats().Fast)
	}
}

// TestFastPathBatchOffersOnce: ProcessBatch offers a flow once, after the
// batch, however many of its frames the batch holds.
func TestFastPathBatchOffersOnce(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	fp := newFakeFast()
	pl.SetFastPath(fp)
	pl.fast.delay = 0
	q := pt.UDP4("198.18.0.1", "198.18.0.2", 40000, 53, []byte("q"))
	a := pt.UDP4("198.18.0.2", "198.18.0.1", 53, 40000, []byte("a"))
	pl.Process(q, 0, PortA, 100*sec)
	frames := [][]byte{a, a, a, a}
	out := make([]Result, len(frames))
	pl.ProcessBatch(frames, PortB, 100*sec, out)
	for i, r := range out {
		if r.Verdict != Accept {
			t.Fatalf("frame %d: %v", i, r.Verdict)
		}
	}
	if len(fp.offered) != 1 || pl.Stats().Fast.Offered != 1 || fp.takeBack != 0 {
		t.Fatalf("after the batch: %d flows offered, stats %+v, take-backs %d; want one offer after the batch and no take-back", len(fp.offered), pl.Stats().Fast, fp.takeBack)
	}
}

// TestFastPathSnapshot: a copy of an offered entry (the listings') is
// marked Offloaded and carries the fast path's live Expires, the entry
// keeping its own; a copy of a flow that is not offered does not ask the
// fast path. Removing an offered entry while someone listens gives a
// [DESTROY] event marked Offloaded (the kernel's [OFFLOAD] of conntrack
// -D), after the take-back.
func TestFastPathSnapshot(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	fp := newFakeFast()
	pl.SetFastPath(fp)
	pl.fast.delay = 0
	q := pt.UDP4("198.18.0.1", "198.18.0.2", 40000, 53, []byte("q"))
	a := pt.UDP4("198.18.0.2", "198.18.0.1", 53, 40000, []byte("a"))
	other := pt.UDP4("198.18.0.1", "198.18.0.2", 40001, 53, []byte("q"))
	pl.Process(q, 0, PortA, 100*sec)
	pl.Process(a, 0, PortB, 100*sec)
	pl.Process(other, 0, PortA, 100*sec)
	k, _ := flowtable.KeyOf(mustParse(t, q))
	ok, _ := flowtable.KeyOf(mustParse(t, other))
	e := pl.Shard().Lookup(&k, pl.table.HashKey(&k), 100*sec)
	o := pl.Shard().Lookup(&ok, pl.table.HashKey(&ok), 100*sec)
	if e == nil || !e.Offloaded() || o == nil || o.Offloaded() {
		t.Fatalf("setup: want the answered flow offered and the other not")
	}
	table := e.Conn.Expires
	fp.live[k] = table + 42*sec
	fp.live[ok] = 1 // must not be asked
	var es flowtable.EntrySnapshot
	pl.Shard().Snapshot(e, &es)
	if !es.Offloaded || es.Conn.Expires != table+42*sec || e.Conn.Expires != table {
		t.Errorf("offered entry: copy Offloaded %v Expires %d, entry Expires %d; want true, %d (the fast path's), %d",
			es.Offloaded, es.Conn.Expires, e.Conn.Expires, table+42*sec, table)
	}
	pl.Shard().Snapshot(o, &es)
	if es.Offloaded || es.Conn.Expires == 1 {
		t.Errorf("entry not offered: copy Offloaded %v Expires %d; want false and the table's", es.Offloaded, es.Conn.Expires)
	}

	ev := pl.ctl.Events()
	ev.Subscribe(1)
	defer ev.Unsubscribe()
	pl.WatchEvents(101 * sec)
	pl.Shard().Delete(e)
	pl.Shard().Delete(o)
	var marks []bool
	ev.Drain(make([]Event, 4), func(evs []Event) {
		for i := range evs {
			if evs[i].Kind == EventDestroy {
				marks = append(marks, evs[i].Entry.Offloaded)
			}
		}
	})
	if fmt.Sprint(marks) != "[true false]" {
		t.Errorf("[DESTROY] events marked offloaded: %v, want [true false] (the offered entry's only)", marks)
	}
	if len(fp.offered) != 0 {
		t.Errorf("deleted entry left in the fast path")
	}
}
