package statemachine

import (
	"testing"
	"time"

	"github.com/statewire/statewire/packet"
)

const sec = int64(time.Second)

// seg describes a TCP segment for tests.
type seg struct {
	flags    uint8
	seq, ack uint32
	win      uint16
	len      uint32
	wscale   int // -1: no option
	sackPerm bool
	sack     []packet.SACKBlock
}

func (s seg) packet() *packet.Packet {
	p := &packet.Packet{IPVersion: 4, Proto: packet.ProtoTCP, SrcPort: 1031, DstPort: 22}
	p.TCP = packet.TCP{Seq: s.seq, Ack: s.ack, Flags: s.flags, DataOff: 20, Window: s.win, WScale: packet.WScaleAbsent}
	if s.wscale >= 0 {
		p.TCP.WScale = uint8(s.wscale)
		p.TCP.DataOff = 40
	}
	if s.sackPerm {
		p.TCP.SACKPerm = true
		p.TCP.DataOff = 40
	}
	for i, b := range s.sack {
		p.TCP.SACK[i] = b
		p.TCP.NumSACK++
		p.TCP.DataOff = 40
	}
	p.PayloadLen = s.len
	return p
}

// Flag shorthands.
const (
	fS  = packet.TCPSyn
	fSA = packet.TCPSyn | packet.TCPAck
	fA  = packet.TCPAck
	fPA = packet.TCPPsh | packet.TCPAck
	fFA = packet.TCPFin | packet.TCPAck
	fR  = packet.TCPRst
	fRA = packet.TCPRst | packet.TCPAck
)

// Sides of a scenario; the entry's original direction is the side that
// sent the packet that created it.
const (
	client = 0
	server = 1
)

// tracker plays the flow table around New/Update: one connection, created
// on a miss, deleted on Kill, recreated on Reopen. It counts INVALIDs like
// the packetdrill scripts' "--ctstate INVALID" rule counters.
type tracker struct {
	t        testing.TB // a test or a benchmark
	cfg      Config
	c        Conn
	exists   bool
	origSide int
	now      int64
	invalid  int
	last     Result
}

func newTracker(t testing.TB) *tracker {
	return &tracker{t: t, cfg: DefaultConfig(), now: 1000 * sec}
}

func (tr *tracker) send(from int, s seg) Result {
	tr.t.Helper()
	p := s.packet()
	var r Result
	if !tr.exists {
		r = New(&tr.c, p, tr.now, &tr.cfg)
		tr.origSide = from
		tr.exists = r.State != StateInvalid && !r.Kill
	} else {
		r = Update(&tr.c, p, Dir(from^tr.origSide), tr.now, &tr.cfg)
		if r.Reopen {
			r = New(&tr.c, p, tr.now, &tr.cfg)
			tr.origSide = from
			tr.exists = r.State != StateInvalid && !r.Kill
		} else if r.Kill {
			tr.exists = false
		}
	}
	if r.State == StateInvalid {
		tr.invalid++
	}
	tr.last = r
	return r
}

// timeout returns the seconds left on the entry, as the listings show them.
func (tr *tracker) timeout() int64 { return (tr.c.Expires - tr.now) / sec }

func (tr *tracker) wantState(step string, want TCPState) {
	tr.t.Helper()
	if !tr.exists {
		tr.t.Fatalf("%s: no entry, want %v", step, want)
	}
	if tr.c.State != want {
		tr.t.Fatalf("%s: state %v, want %v", step, tr.c.State, want)
	}
}

func (tr *tracker) wantInvalid(want int) {
	tr.t.Helper()
	if tr.invalid != want {
		tr.t.Fatalf("INVALID count %d, want %d", tr.invalid, want)
	}
}

func (tr *tracker) wantStatus(step string, seenReply, assured bool) {
	tr.t.Helper()
	if got := tr.c.Status&StatusSeenReply != 0; got != seenReply {
		tr.t.Fatalf("%s: SEEN_REPLY %v, want %v", step, got, seenReply)
	}
	if got := tr.c.Status&StatusAssured != 0; got != assured {
		tr.t.Fatalf("%s: ASSURED %v, want %v", step, got, assured)
	}
}

// handshake runs SYN, SYN/ACK, ACK with client ISN ci and server ISN si
// (client window scale cws, server sws; -1 for none) and checks ESTABLISHED.
func (tr *tracker) handshake(ci, si uint32, cws, sws int) {
	tr.t.Helper()
	tr.send(client, seg{flags: fS, seq: ci, win: 65535, wscale: cws, sackPerm: true})
	tr.send(server, seg{flags: fSA, seq: si, ack: ci + 1, win: 65535, wscale: sws, sackPerm: true})
	tr.send(client, seg{flags: fA, seq: ci + 1, ack: si + 1, win: 1024, wscale: -1})
	tr.wantState("handshake", TCPEstablished)
	tr.wantInvalid(0)
}
