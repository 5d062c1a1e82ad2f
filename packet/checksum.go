package packet

import "encoding/binary"

// checkMode is what Parse does with a TCP or UDP checksum.
type checkMode uint8

const (
	// checkNone: a fragment or a datagram not captured whole; nothing
	// can be said of its checksum.
	checkNone checkMode = iota
	// checkPartial: VerifyChecksum is off; only a partial checksum is
	// recognised (see checkTCPUDP), so that a bridge still completes it.
	checkPartial
	// checkVerify: VerifyChecksum is on.
	checkVerify
)

// Offsets of the checksum field in the TCP and UDP headers.
const (
	tcpChecksumOff = 16
	udpChecksumOff = 6
)

// checkTCPUDP checks the TCP or UDP checksum of seg, the whole segment by
// the IP header, whose checksum field is at seg[off:off+2] (seg holds at
// least the header, which the callers checked).
//
// A sender that offloads checksums (CHECKSUM_PARTIAL: tcp_v4_send_check,
// udp4_hwcsum, their IPv6 twins) stores the folded pseudo-header sum, not
// complemented, in the field and leaves the rest to the device; a veth
// passes the frame on as it is. Such a frame fails the full check and its
// field equals the folded pseudo-header sum: ChecksumPartial, ReasonOK.
// The kernel's nf_conntrack sees the skb's CHECKSUM_PARTIAL and skips the
// check; we cannot see the skb, so the field is the evidence. A corrupt
// frame passes that test with probability 2^-16, as it passes the full
// check, so this admits no more corruption than verification already does.
//
// checkVerify sums the segment once: the full check, then a compare with
// the pseudo-header sum when it fails. checkPartial costs the
// pseudo-header sum and a compare, and the segment's sum only for a frame
// whose field matches.
func checkTCPUDP(seg []byte, off int, check checkMode, p *Packet) Reason {
	field := binary.BigEndian.Uint16(seg[off:])
	ph := pseudoSum(p, len(seg))
	if check == checkVerify {
		p.ChecksumChecked = true
		full := fold(sumAll(seg, ph))
		if full == 0xffff {
			p.ChecksumOK = true
			return ReasonOK
		}
		if field != fold(ph) {
			return ReasonBadChecksum
		}
		p.ChecksumPartial, p.PartialSum = true, full
		return ReasonOK
	}
	if field != fold(ph) {
		return ReasonOK
	}
	if full := fold(sumAll(seg, ph)); full != 0xffff {
		p.ChecksumPartial, p.PartialSum = true, full
	}
	return ReasonOK
}

// CompleteChecksum writes the checksum a device offloading it would have
// written into the TCP or UDP header of frame, which Parse found partial
// (p.ChecksumPartial), and clears ChecksumPartial: the frame leaves with a
// checksum every receiver verifies. It reads no byte of the payload: with
// F the sum Parse took (PartialSum; the field, the pseudo-header sum P,
// counted in it) the datagram without the field sums to F - P in one's
// complement, and the checksum is its complement. A UDP checksum that comes
// out 0 is sent as 0xffff (0 means none; RFC 768, the kernel's
// CSUM_MANGLED_0). It does nothing when p is not partial or frame is not
// the frame p was parsed from (too short).
//
// It never allocates and never panics.
func CompleteChecksum(frame []byte, p *Packet) {
	if !p.ChecksumPartial {
		return
	}
	off := int(p.L4Off) + udpChecksumOff
	if p.Proto == ProtoTCP {
		off = int(p.L4Off) + tcpChecksumOff
	}
	if off+2 > len(frame) {
		return
	}
	field := binary.BigEndian.Uint16(frame[off:])
	c := ^fold(uint64(p.PartialSum) + uint64(^field))
	if c == 0 && p.Proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[off:], c)
	p.ChecksumPartial = false
	p.PartialSum = 0
}
