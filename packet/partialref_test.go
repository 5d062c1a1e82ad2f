package packet

import "encoding/binary"

// RefPartial is the test's own statement of a partial checksum, for
// FuzzParseDifferential: p is RefParse's parse of frame (reason OK or
// BadChecksum); the datagram is TCP or UDP, captured whole, not a
// fragment, carries a checksum (not UDP over IPv4 with 0), its field
// equals the folded pseudo-header sum, and the full check fails.
func RefPartial(frame []byte, p *Packet) bool {
	if p.Proto != ProtoTCP && p.Proto != ProtoUDP || p.Fragment || p.Truncated {
		return false
	}
	end := int(p.L3Off) + int(p.IPLen)
	l4 := int(p.L4Off)
	if end > len(frame) || end-l4 < 8 {
		return false
	}
	seg := frame[l4:end]
	off := 6
	if p.Proto == ProtoTCP {
		off = 16
	}
	field := binary.BigEndian.Uint16(seg[off:])
	if p.Proto == ProtoUDP && p.IPVersion == 4 && field == 0 {
		return false
	}
	return refL4Checksum(seg, p) != 0xffff && field == refPseudo(p, len(seg))
}

// refPseudo is the folded pseudo-header sum for an L4 length of n bytes.
func refPseudo(p *Packet, n int) uint16 {
	var acc uint64
	if p.IPVersion == 4 {
		acc = refSum(p.Src[12:16], acc)
		acc = refSum(p.Dst[12:16], acc)
	} else {
		acc = refSum(p.Src[:], acc)
		acc = refSum(p.Dst[:], acc)
	}
	return refFold(acc + uint64(p.Proto) + uint64(n))
}
