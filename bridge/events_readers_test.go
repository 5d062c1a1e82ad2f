package bridge

import (
	"fmt"
	"testing"

	pt "github.com/statewire/statewire/packet/packettest"
)

// TestEventsTwoReaders: with a registered reader (the state sync) and a
// drain of another consumer (conntrack -E's), each sees every event, in
// order, whoever drains; after removal the reader sees no more.
func TestEventsTwoReaders(t *testing.T) {
	pl := newTestPipeline(t, nil, 1<<14)
	ev := pl.ctl.Events()
	ev.Subscribe(1)
	defer ev.Unsubscribe()
	udp := func(port int) []byte { return pt.UDP4("198.18.0.1", "198.18.0.2", uint16(port), 53, nil) }
	var sync, ctl []uint16
	record := func(to *[]uint16) func([]Event) {
		return func(es []Event) {
			for i := range es {
				*to = append(*to, es[i].Entry.Orig.SrcPort)
			}
		}
	}
	remove := ev.AddReader(record(&sync))
	buf := make([]Event, 4)
	for p := 1; p <= 10; p++ {
		pl.Process(udp(p), 0, PortA, sec)
		if p%3 == 0 {
			// The sync's own drain: its fn is a no-op, the reader gets them.
			ev.Drain(buf, func([]Event) {})
		}
		if p%5 == 0 {
			// Another consumer's drain: both it and the reader get them.
			ev.Drain(buf, record(&ctl))
		}
	}
	ev.Drain(buf, record(&ctl))
	if len(sync) != 10 {
		t.Fatalf("reader saw ports %v, want 1..10", sync)
	}
	for i, p := range sync {
		if p != uint16(i+1) {
			t.Fatalf("reader saw ports %v, want 1..10 in order", sync)
		}
	}
	// The other consumer's fn saw only what its own drains popped (4, 5
	// and 10; the rest went in the reader-only drains at 3, 6 and 9): so
	// an -E client registers its fan-out as a reader too (control/events.go).
	if got, want := fmt.Sprint(ctl), "[4 5 10]"; got != want {
		t.Fatalf("consumer saw %v, want %v", got, want)
	}
	remove()
	pl.Process(udp(11), 0, PortA, sec)
	ev.Drain(buf, func([]Event) {})
	if len(sync) != 10 {
		t.Errorf("reader saw %v after its removal, want nothing more", sync[10:])
	}
}
