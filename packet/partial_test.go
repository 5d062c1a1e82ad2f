package packet_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// partialCases are correct TCP and UDP frames, v4 and v6, tagged and not,
// of every length parity, through both parsers (the fast path and, with a
// QinQ stack or IPv4 options, the general one).
func partialCases() map[string][]byte {
	m := map[string][]byte{}
	for _, n := range []int{0, 1, 2, 3, 10, 57, 1400, 1460} {
		pay := make([]byte, n)
		for i := range pay {
			pay[i] = byte(i*7 + n)
		}
		tf := pt.TCPFields{Flags: packet.TCPAck | packet.TCPPsh, Seq: 1000, Ack: 2000, Window: 512, Payload: pay}
		m[fmt.Sprintf("tcp4-%d", n)] = pt.TCP4(c4, s4, 40000, 80, tf)
		m[fmt.Sprintf("tcp6-%d", n)] = pt.TCP6(c6, s6, 40000, 80, tf)
		m[fmt.Sprintf("udp4-%d", n)] = pt.UDP4(c4, s4, 5353, 53, pay)
		m[fmt.Sprintf("udp6-%d", n)] = pt.UDP6(c6, s6, 5353, 53, pay)
		m[fmt.Sprintf("tcp4-vlan-%d", n)] = pt.VLAN(pt.TCP4(c4, s4, 40000, 80, tf), packet.EtherTypeVLAN, 7)
		m[fmt.Sprintf("udp6-qinq-%d", n)] = pt.VLAN(pt.VLAN(pt.UDP6(c6, s6, 5353, 53, pay), packet.EtherTypeVLAN, 20), packet.EtherTypeQinQ, 10)
	}
	return m
}

// TestParsePartialChecksum: a frame whose checksum field holds the folded
// pseudo-header sum (CHECKSUM_PARTIAL from a sender that offloads it) is
// ReasonOK with ChecksumPartial, with and without VerifyChecksum, every
// other field as for the correct frame; CompleteChecksum turns it into the
// correct frame byte for byte. A checksum off by one, or a correct one over
// a flipped payload bit, stays ReasonBadChecksum (not partial); a correct
// frame is never partial.
func TestParsePartialChecksum(t *testing.T) {
	for name, good := range partialCases() {
		t.Run(name, func(t *testing.T) {
			part := pt.Partial(good)
			for _, verify := range []bool{false, true} {
				opt := packet.Options{VerifyChecksum: verify}
				var pg, pp packet.Packet
				if r := packet.Parse(good, 0, opt, &pg); r != packet.ReasonOK || pg.ChecksumPartial {
					t.Fatalf("verify %v: good frame: got %v partial %v, want ok, not partial", verify, r, pg.ChecksumPartial)
				}
				if bytes.Equal(part, good) {
					// The right checksum is the pseudo-header sum
					// (1 in 65536): nothing to tell apart.
					continue
				}
				if r := packet.Parse(part, 0, opt, &pp); r != packet.ReasonOK {
					t.Fatalf("verify %v: partial frame: got %v, want ok", verify, r)
				}
				if !pp.ChecksumPartial || pp.ChecksumOK || pp.ChecksumChecked != verify {
					t.Fatalf("verify %v: got partial %v ok %v checked %v, want partial, not ok, checked %v",
						verify, pp.ChecksumPartial, pp.ChecksumOK, pp.ChecksumChecked, verify)
				}
				// Apart from the checksum fields, the parse is the good frame's.
				q := pp
				q.ChecksumPartial, q.PartialSum, q.ChecksumOK = false, 0, pg.ChecksumOK
				if q != pg {
					t.Fatalf("verify %v: partial frame parses as\n%+v\nwant (good frame)\n%+v", verify, q, pg)
				}
				f := append([]byte(nil), part...)
				packet.CompleteChecksum(f, &pp)
				if !bytes.Equal(f, good) {
					t.Fatalf("verify %v: completed frame differs from the good one:\n% x\n% x", verify, f, good)
				}
				if pp.ChecksumPartial {
					t.Fatal("ChecksumPartial still set after CompleteChecksum")
				}
				// A second call must not touch the completed frame.
				packet.CompleteChecksum(f, &pp)
				if !bytes.Equal(f, good) {
					t.Fatal("second CompleteChecksum changed the frame")
				}
			}
			// Genuinely corrupt: the field one off the pseudo-header
			// sum, and a correct checksum over a flipped payload bit.
			l4 := int(mustParse(t, good).L4Off)
			ck := l4 + 6
			if bytes.Contains([]byte(name), []byte("tcp")) {
				ck = l4 + 16
			}
			off1 := append([]byte(nil), part...)
			binary.BigEndian.PutUint16(off1[ck:], binary.BigEndian.Uint16(off1[ck:])+1)
			flip := append([]byte(nil), good...)
			flip[len(flip)-1] ^= 0x10
			if len(flip)-1 == ck+1 || len(flip)-1 == ck {
				flip[l4] ^= 0x10 // no payload: flip a port bit instead
			}
			for cname, f := range map[string][]byte{"off-by-one": off1, "flipped": flip} {
				var p packet.Packet
				if r := packet.Parse(f, 0, packet.Options{VerifyChecksum: true}, &p); r != packet.ReasonBadChecksum || p.ChecksumPartial {
					t.Errorf("%s, verify: got %v partial %v, want %v, not partial", cname, r, p.ChecksumPartial, packet.ReasonBadChecksum)
				}
				if r := packet.Parse(f, 0, packet.Options{}, &p); r != packet.ReasonOK || p.ChecksumPartial {
					t.Errorf("%s, no verify: got %v partial %v, want ok, not partial", cname, r, p.ChecksumPartial)
				}
			}
		})
	}
}

// TestPartialChecksumNotOnFragmentsOrCuts: a first fragment or a
// snaplen-cut capture cannot be summed, so it is never partial.
func TestPartialChecksumNotOnFragmentsOrCuts(t *testing.T) {
	part := pt.Partial(pt.UDP4(c4, s4, 1, 2, make([]byte, 100)))
	frag := pt.Frag4(part, 0, 48, true)
	for name, tc := range map[string]struct {
		f       []byte
		wireLen int
	}{"first-fragment": {frag, 0}, "snaplen-cut": {part[:60], len(part)}} {
		for _, verify := range []bool{false, true} {
			var p packet.Packet
			if r := packet.Parse(tc.f, tc.wireLen, packet.Options{VerifyChecksum: verify}, &p); r != packet.ReasonOK || p.ChecksumPartial {
				t.Errorf("%s verify %v: got %v partial %v, want ok, not partial", name, verify, r, p.ChecksumPartial)
			}
		}
	}
}

func mustParse(t *testing.T, f []byte) *packet.Packet {
	t.Helper()
	var p packet.Packet
	if r := packet.Parse(f, 0, packet.Options{}, &p); r != packet.ReasonOK {
		t.Fatalf("parse: %v", r)
	}
	return &p
}
