package bridge

import (
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// newZonesPipeline is newTestPipeline with the table's VLAN setting:
// ignore is flowtable.Config.IgnoreVLAN (--vlan-zones=false).
func newZonesPipeline(t testing.TB, ignore bool) *Pipeline {
	t.Helper()
	s := DefaultSettings()
	tb, err := flowtable.New(flowtable.Config{MaxEntries: 64, Buckets: 64, Shards: 1, Seed: 1, IgnoreVLAN: ignore})
	if err != nil {
		t.Fatal(err)
	}
	return NewPipeline(tb, 0, NewControl(s), NewFragCache(64, 1))
}

func vlanOf(es []flowtable.EntrySnapshot) map[uint16]int {
	m := map[uint16]int{}
	for _, e := range es {
		m[e.Orig.VLAN]++
	}
	return m
}

// TestVLANZonesTwoVLANs is why --vlan-zones defaults to true: on a trunk
// the same tuple in two VLANs belongs to two networks. With zones a reply
// in VLAN 20 to a request made in VLAN 10 is a new connection of VLAN 20;
// without them (the kernel's keys) it answers the VLAN 10 request, and
// the two networks share one entry.
func TestVLANZonesTwoVLANs(t *testing.T) {
	req := pt.VLAN(pt.UDP4("198.18.0.1", "198.18.0.2", 5000, 53, []byte("q")), 0x8100, 10)
	reply := pt.VLAN(pt.UDP4("198.18.0.2", "198.18.0.1", 53, 5000, []byte("a")), 0x8100, 20)
	for _, tc := range []struct {
		name      string
		ignore    bool
		wantReply statemachine.CtState
		wantZones map[uint16]int
	}{
		{"zones (default)", false, statemachine.StateNew, map[uint16]int{10: 1, 20: 1}},
		{"vlan-zones=false", true, statemachine.StateEstablished, map[uint16]int{0: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := newZonesPipeline(t, tc.ignore)
			if r := pl.Process(req, 0, PortA, sec); r.State != statemachine.StateNew {
				t.Fatalf("request in VLAN 10: got %v, want NEW", r.State)
			}
			if r := pl.Process(reply, 0, PortB, sec); r.State != tc.wantReply {
				t.Errorf("reply in VLAN 20: got %v, want %v", r.State, tc.wantReply)
			}
			if got := vlanOf(entries(pl)); !mapsEqual(got, tc.wantZones) {
				t.Errorf("entries by zone: got %v, want %v", got, tc.wantZones)
			}
		})
	}
}

func mapsEqual(a, b map[uint16]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestVLANZonesAsymmetric is the capture point that tags one direction:
// the client's frames carry VLAN 100, the server's none. Without zones the
// handshake is one connection, as in the kernel, and its fragmented reply
// (the fragment cache keys on the zone too) follows it; with zones the
// SYN/ACK finds no connection in VLAN 0 and is INVALID.
func TestVLANZonesAsymmetric(t *testing.T) {
	c, s := "198.18.0.1", "198.18.0.2"
	syn := pt.VLAN(pt.TCP4(c, s, 40000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535}), 0x8100, 100)
	synack := pt.TCP4(s, c, 80, 40000, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535})
	ack := pt.VLAN(pt.TCP4(c, s, 40000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535}), 0x8100, 100)
	q := pt.VLAN(pt.UDP4(c, s, 7, 2049, []byte("request")), 0x8100, 100)
	bigReply := withIPID(pt.UDP4(s, c, 2049, 7, make([]byte, 3000)), 77)
	frags := pt.Fragments4(bigReply, 1200)

	t.Run("vlan-zones=false", func(t *testing.T) {
		pl := newZonesPipeline(t, true)
		runSteps(t, pl, []step{
			{name: "SYN tagged", frame: syn, in: PortA, wantState: statemachine.StateNew, wantTCP: statemachine.TCPSynSent, wantV: Accept},
			{name: "SYN/ACK untagged", frame: synack, in: PortB, wantState: statemachine.StateEstablished, wantTCP: statemachine.TCPSynRecv, wantV: Accept},
			{name: "ACK tagged", frame: ack, in: PortA, wantState: statemachine.StateEstablished, wantTCP: statemachine.TCPEstablished, wantV: Accept},
			{name: "UDP request tagged", frame: q, in: PortA, wantState: statemachine.StateNew, wantV: Accept},
		})
		for i, f := range frags {
			if r := pl.Process(f, 0, PortB, 100*sec); r.State != statemachine.StateEstablished || r.Verdict != Accept {
				t.Errorf("untagged reply fragment %d: got %v %v, want ESTABLISHED ACCEPT", i, r.State, r.Verdict)
			}
		}
		if got, want := vlanOf(entries(pl)), map[uint16]int{0: 2}; !mapsEqual(got, want) {
			t.Errorf("entries by zone: got %v, want %v", got, want)
		}
	})
	t.Run("zones (default)", func(t *testing.T) {
		pl := newZonesPipeline(t, false)
		runSteps(t, pl, []step{
			{name: "SYN tagged", frame: syn, in: PortA, wantState: statemachine.StateNew, wantTCP: statemachine.TCPSynSent, wantV: Accept},
			{name: "SYN/ACK untagged", frame: synack, in: PortB, wantState: statemachine.StateInvalid, wantV: Accept},
			{name: "UDP request tagged", frame: q, in: PortA, wantState: statemachine.StateNew, wantV: Accept},
		})
		if r := pl.Process(frags[0], 0, PortB, 100*sec); r.State != statemachine.StateNew {
			t.Errorf("untagged reply's first fragment: got %v, want NEW (another connection, in zone 0)", r.State)
		}
		if got, want := vlanOf(entries(pl)), map[uint16]int{100: 2, 0: 1}; !mapsEqual(got, want) {
			t.Errorf("entries by zone: got %v, want %v", got, want)
		}
	})
}

// TestVLANZonesAllocatesNothing: the zone mask on the hot path costs no
// allocation, tagged or not.
func TestVLANZonesAllocatesNothing(t *testing.T) {
	pl := newZonesPipeline(t, true)
	c, s := "198.18.0.1", "198.18.0.2"
	q := pt.VLAN(pt.UDP4(c, s, 1, 2, nil), 0x8100, 100)
	a := pt.UDP4(s, c, 2, 1, nil)
	pl.Process(q, 0, PortA, sec)
	if n := testing.AllocsPerRun(200, func() {
		pl.Process(q, 0, PortA, sec)
		pl.Process(a, 0, PortB, sec)
	}); n != 0 {
		t.Errorf("%v allocations per pair, want 0", n)
	}
	var out [2]Result
	if n := testing.AllocsPerRun(200, func() { pl.ProcessBatch([][]byte{q, a}, PortA, sec, out[:]) }); n != 0 {
		t.Errorf("ProcessBatch: %v allocations per batch, want 0", n)
	}
}

// TestVLANZonesSteering: the workers' steering keys flows in the table's
// zone. Without zones the tagged and the untagged direction of a flow go
// to one owner; with zones they are two flows, and some land on the other
// worker.
func TestVLANZonesSteering(t *testing.T) {
	for _, ignore := range []bool{true, false} {
		c := validConfig()
		c.Cores, c.Queues = 2, 2
		c.Table.Seed, c.Table.Buckets, c.Table.IgnoreVLAN = 42, 1024, ignore
		dp, err := NewDatapath(c)
		if err != nil {
			t.Fatal(err)
		}
		w := dp.workers[0]
		split := 0
		for port := uint16(1000); port < 1064; port++ {
			out := pt.VLAN(pt.UDP4("198.18.0.1", "198.18.0.2", port, 53, nil), 0x8100, 100)
			back := pt.UDP4("198.18.0.2", "198.18.0.1", 53, port, nil)
			if w.owner(out) != w.owner(back) {
				split++
			}
		}
		switch {
		case ignore && split != 0:
			t.Errorf("vlan-zones=false: %d of 64 flows have their two directions on different workers, want 0", split)
		case !ignore && split == 0:
			t.Errorf("zones: all 64 flows have both directions on one worker, want some split (VLAN 100 and 0 are two flows)")
		}
	}
}
