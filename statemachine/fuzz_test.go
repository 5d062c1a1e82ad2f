package statemachine

import (
	"encoding/binary"
	"testing"

	"github.com/statewire/statewire/packet"
)

const validCtStates = StateInvalid | StateNew | StateEstablished | StateRelated

// FuzzTrack drives New/Update with a sequence of packets built from the
// fuzz bytes (13 bytes each: dir, flags, seq, ack, window, payload length,
// options) and checks that nothing panics and every state stays in range.
func FuzzTrack(f *testing.F) {
	f.Add(uint8(packet.ProtoTCP), []byte{
		0, fS, 0, 0, 3, 232, 0, 0, 0, 0, 255, 255, 3,
		1, fSA, 0, 0, 7, 208, 0, 0, 3, 233, 255, 255, 3,
		0, fA, 0, 0, 3, 233, 0, 0, 7, 209, 1, 0, 0,
	})
	f.Add(uint8(packet.ProtoTCP), []byte{0, fA, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, fR, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint8(packet.ProtoUDP), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(uint8(packet.ProtoICMP), []byte{0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, proto uint8, data []byte) {
		cfg := DefaultConfig()
		if len(data) > 0 {
			cfg.BeLiberal = data[0]&0x80 != 0
			cfg.Loose = data[0]&0x40 == 0
			cfg.WindowTracking = data[0]&0x20 == 0
			cfg.IgnoreInvalidRST = data[0]&0x10 != 0
		}
		var c Conn
		exists := false
		now := int64(0)
		for len(data) >= 13 {
			b := data[:13]
			data = data[13:]
			now += int64(b[0]) * sec / 16
			p := &packet.Packet{IPVersion: 4 + 2*(b[0]>>7), Proto: proto}
			p.TCP = packet.TCP{
				Flags:   b[1],
				Seq:     binary.BigEndian.Uint32(b[2:]),
				Ack:     binary.BigEndian.Uint32(b[6:]),
				Window:  binary.BigEndian.Uint16(b[10:]),
				DataOff: 20,
				WScale:  packet.WScaleAbsent,
			}
			if o := b[12]; o&0x80 != 0 {
				p.TCP.DataOff = 40
				p.TCP.WScale = o & 0x1f
				p.TCP.SACKPerm = o&0x40 != 0
				p.TCP.NumSACK = (o >> 5) & 3
				for i := range p.TCP.SACK {
					p.TCP.SACK[i] = packet.SACKBlock{Left: p.TCP.Ack + uint32(i)*1000, Right: p.TCP.Ack + uint32(o)*uint32(i+1)*97}
				}
			}
			p.PayloadLen = uint32(b[12] & 0x3f * 23)
			p.ICMP = packet.ICMP{Type: b[1], Code: b[2]}
			var r Result
			if exists && c.Expires <= now {
				// The flow table never hands out an expired entry:
				// the packet finds none and starts a new one.
				exists = false
			}
			if !exists {
				r = New(&c, p, now, &cfg)
				exists = r.State != StateInvalid && !r.Kill
			} else {
				before, dir := c.State, Dir(b[0]&1)
				r = Update(&c, p, dir, now, &cfg)
				if proto == packet.ProtoTCP && !r.Reopen && !r.Kill {
					checkAlongTable(t, before, c.State, dir, p.TCP.Flags)
				}
				if r.Reopen {
					r = New(&c, p, now, &cfg)
					exists = r.State != StateInvalid && !r.Kill
				} else if r.Kill {
					exists = false
				}
			}
			if r.State == 0 || r.State&^validCtStates != 0 || r.State&(r.State-1) != 0 {
				t.Fatalf("result state %#x not a single valid state", r.State)
			}
			if (r.State == StateInvalid) != (r.Reason != ReasonNone) {
				t.Fatalf("state %v with reason %v", r.State, r.Reason)
			}
			if r.Reason >= NumInvalidReasons {
				t.Fatalf("reason %d out of range", r.Reason)
			}
			if c.State >= NumTCPStates {
				t.Fatalf("TCP state %d out of range", c.State)
			}
			if c.TCP.Peer[0].Scale > 14 || c.TCP.Peer[1].Scale > 14 {
				t.Fatalf("window scale beyond 14: %d %d", c.TCP.Peer[0].Scale, c.TCP.Peer[1].Scale)
			}
			if exists && r.State != StateInvalid && !r.Ignored && c.Expires < now {
				t.Fatalf("accepted packet left the entry expired: state %v expires %d now %d result %+v flags %#x", c.State, c.Expires, now, r, p.TCP.Flags)
			}
		}
	})
}

// checkAlongTable fails unless a TCP entry moved from before to after along
// the kernel's table for this packet: it stayed, it took the table's
// transition, or it is the ignored-SYN resync (a SYN/ACK answering a SYN
// that was ignored moves to SYN_RECV whatever the state).
func checkAlongTable(t *testing.T, before, after TCPState, dir Dir, flags uint8) {
	t.Helper()
	if after == before {
		return
	}
	class := tcpClass(flags)
	if after == tcpConntracks[dir&1][class][before] {
		return
	}
	if class == classSynAck && after == TCPSynRecv {
		return
	}
	t.Fatalf("TCP state %v -> %v on flags %#x dir %v: not along the table (want %v or unchanged)",
		before, after, flags, dir, tcpConntracks[dir&1][class][before])
}
