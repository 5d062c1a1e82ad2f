package hasync

import (
	"net/netip"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// countLink counts what it is given and keeps nothing.
type countLink struct{ n int }

func (l *countLink) Start(Handler)                          {}
func (l *countLink) SendCT(ctsync.Type, *ctsync.CT) error   { l.n++; return nil }
func (l *countLink) SendExp(ctsync.Type, *ctsync.Exp) error { return nil }
func (l *countLink) RequestResync()                         {}
func (l *countLink) Stats() LinkStats                       { return LinkStats{} }
func (l *countLink) Close() error                           { return nil }

// TestHandleEventsAllocs: an ESTABLISHED update recorded and sent, then
// its DESTROY, allocate nothing once the internal cache has room (the CT is
// kept by value: with one heap CT per event the GC took ~17% of a worker
// pinned beside it in a connections-per-second run).
func TestHandleEventsAllocs(t *testing.T) {
	l := &countLink{}
	s := New(Config{Link: l, Filter: DefaultFilter, Peer: "b", Now: func() int64 { return 0 }})
	var up, del bridge.Event
	up.Kind, del.Kind = bridge.EventUpdate, bridge.EventDestroy
	up.Entry.Orig = flowtable.Tuple{Src: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.1")), Dst: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.2")),
		SrcPort: 40000, DstPort: 80, Proto: packet.ProtoTCP}
	up.Entry.Conn.State = statemachine.TCPEstablished
	del.Entry = up.Entry
	batch := []bridge.Event{up, del}
	s.HandleEvents(batch) // the map's first bucket
	if allocs := testing.AllocsPerRun(1000, func() { s.HandleEvents(batch) }); allocs != 0 {
		t.Fatalf("HandleEvents: %v allocations per update+destroy, want 0", allocs)
	}
	if l.n != 2*1002 { // the first call, AllocsPerRun's warm-up call and its 1000
		t.Fatalf("%d messages sent, want %d (an update and a delete each time)", l.n, 2*1002)
	}
}
