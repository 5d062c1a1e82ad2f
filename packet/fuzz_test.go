package packet_test

import (
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// FuzzParse feeds Parse arbitrary frames and wire lengths. Seeds: every
// frame of the capture corpus and every table case. Parse must not panic
// and must keep checkBounds's invariants; parsing the same bytes twice must
// give the same result (no state leaks between frames).
func FuzzParse(f *testing.F) {
	for _, c := range readCaptures(f) {
		f.Add(c.data, c.wireLen, false)
	}
	for _, tc := range parseCases() {
		f.Add(tc.frame, tc.wireLen, tc.verify)
	}
	for _, fr := range partialCases() {
		f.Add(pt.Partial(fr), 0, true)
		f.Add(pt.Partial(fr), 0, false)
	}
	f.Fuzz(func(t *testing.T, frame []byte, wireLen int, verify bool) {
		var p, q packet.Packet
		opt := packet.Options{VerifyChecksum: verify}
		r := packet.Parse(frame, wireLen, opt, &p)
		if r >= packet.NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		checkBounds(t, &p, frame, wireLen)
		if p.HasInner && p.InnerReason != packet.ReasonOK {
			t.Fatalf("HasInner with InnerReason %v", p.InnerReason)
		}
		if p.ChecksumOK && !p.ChecksumChecked {
			t.Fatal("ChecksumOK without ChecksumChecked")
		}
		if p.ChecksumPartial && (r != packet.ReasonOK || p.ChecksumOK) {
			t.Fatalf("ChecksumPartial with reason %v, ChecksumOK %v", r, p.ChecksumOK)
		}
		if p.ChecksumPartial {
			// Completing it gives a checksum that verifies.
			c := append([]byte(nil), frame...)
			packet.CompleteChecksum(c, &p)
			var v packet.Packet
			if r := packet.Parse(c, wireLen, packet.Options{VerifyChecksum: true}, &v); r != packet.ReasonOK || !v.ChecksumOK {
				t.Fatalf("completed partial checksum: got %v ok %v, want ok, verified", r, v.ChecksumOK)
			}
			packet.Parse(frame, wireLen, opt, &p)
		}
		q.TCP.MSS = 1 // garbage that Parse must clear
		if r2 := packet.Parse(frame, wireLen, opt, &q); r2 != r || q != p {
			t.Fatalf("second parse differs: %v vs %v", r2, r)
		}
	})
}

// garbage is a Packet with every field set, so that a parser that forgets
// to reset a field shows it in FuzzParseDifferential (the pipeline reuses
// one Packet per worker).
var garbage = packet.Packet{
	EtherType: 0xeeee, VLAN: 0xeee, OuterVLAN: 0xeee, VLANTags: 9, L3Off: 0xeeee,
	IPVersion: 9, Proto: 0xee, TTL: 0xee, Src: packet.Addr{0: 0xee, 15: 0xee}, Dst: packet.Addr{1: 0xee, 14: 0xee},
	IPLen: 0xeeee, L4Off: 0xeeee, Truncated: true,
	Fragment: true, FragOffset: 0xeeee, MoreFrags: true, FragID: 0xeeee,
	SrcPort: 0xeeee, DstPort: 0xeeee,
	TCP: packet.TCP{
		Seq: 0xee, Ack: 0xee, Flags: 0xee, DataOff: 0xee, Window: 0xee, MSS: 0xee, WScale: 0xee,
		SACKPerm: true, HasTS: true, NumSACK: 9, TSVal: 0xee, TSEcr: 0xee,
		SACK: [packet.MaxSACKBlocks]packet.SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}, OptsBroken: true,
	},
	ICMP: packet.ICMP{Type: 0xee, Code: 0xee, ID: 0xee, Seq: 0xee}, HasInner: true,
	Inner: packet.Inner{
		IPVersion: 9, Src: packet.Addr{2: 0xee}, Dst: packet.Addr{3: 0xee}, Proto: 0xee,
		SrcPort: 0xee, DstPort: 0xee, ICMP: packet.ICMP{Type: 0xee}, NonFirstFragment: true,
	},
	InnerReason: 0xee, PayloadOff: 0xeeee, PayloadLen: 0xeeee, ChecksumChecked: true, ChecksumOK: true,
	ChecksumPartial: true, PartialSum: 0xeeee,
}

// FuzzParseDifferential checks Parse against RefParse, the parser as it was
// before its fast path (refparse_test.go): the same Reason and an identical
// Packet for every input and both VerifyChecksum values, parsing into a
// Packet full of garbage (the pipeline reuses one per worker). Seeds: the
// FuzzParse seeds and the benchmark frames.
func FuzzParseDifferential(f *testing.F) {
	for _, c := range readCaptures(f) {
		f.Add(c.data, c.wireLen)
	}
	for _, tc := range parseCases() {
		f.Add(tc.frame, tc.wireLen)
	}
	for _, fr := range partialCases() {
		f.Add(pt.Partial(fr), 0)
	}
	for _, fr := range hotFrames() {
		f.Add(fr, 0)
		f.Add(fr[:len(fr)-1], len(fr)) // snaplen cut by one byte
	}
	f.Fuzz(func(t *testing.T, frame []byte, wireLen int) {
		for _, verify := range []bool{false, true} {
			opt := packet.Options{VerifyChecksum: verify}
			got, want := garbage, garbage
			rg := packet.Parse(frame, wireLen, opt, &got)
			rw := packet.RefParse(frame, wireLen, opt, &want)
			// The reference predates partial checksums: it calls them
			// bad (verify) or says nothing (no verify). Parse must flag
			// exactly the frames RefPartial names, as ReasonOK, and be
			// the reference in everything else.
			isPartial := (rw == packet.ReasonOK || rw == packet.ReasonBadChecksum) && packet.RefPartial(frame, &want)
			if got.ChecksumPartial != isPartial {
				t.Fatalf("verify %v: got ChecksumPartial %v, want %v (reference reason %v)", verify, got.ChecksumPartial, isPartial, rw)
			}
			if isPartial {
				if rg != packet.ReasonOK {
					t.Fatalf("verify %v: partial checksum: got reason %v, want ok", verify, rg)
				}
				rg = rw
				got.ChecksumPartial, got.PartialSum = false, 0
			}
			if rg != rw {
				t.Fatalf("verify %v: got reason %v, want %v (reference)", verify, rg, rw)
			}
			if got != want {
				t.Fatalf("verify %v (reason %v): got packet\n%+v\nwant (reference)\n%+v", verify, rg, got, want)
			}
		}
	})
}
