package ctsync

import (
	"net/netip"
	"testing"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// TestMarkRoundTrip: the connection mark travels as NTA_MARK (after the
// timeout, as ct2msg writes it) and comes back in State.Mark; a mark of 0
// is sent too, as a ctnetlink dump has it.
func TestMarkRoundTrip(t *testing.T) {
	now := int64(time.Hour)
	es := flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{Src: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.1")), Dst: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.2")),
			SrcPort: 40000, DstPort: 80, Proto: 17, L3: 4},
		Conn: statemachine.Conn{Proto: 17, Expires: now + 30*int64(time.Second)},
		Mark: 0xdeadbeef,
	}
	for _, mark := range []uint32{0xdeadbeef, 0} {
		es.Mark = mark
		c := FromSnapshot(&es, now)
		b, err := AppendCT(nil, Header{Type: TypeCTUpd}, c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := DecodeMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		if !m.CT.Has(NTAMark) || m.CT.Mark != mark {
			t.Fatalf("mark %#x: decoded NTA_MARK present %v value %#x", mark, m.CT.Has(NTAMark), m.CT.Mark)
		}
		st, err := m.CT.ToState(now)
		if err != nil || st.Mark != mark {
			t.Errorf("mark %#x: ToState mark %#x, %v", mark, st.Mark, err)
		}
	}
}
