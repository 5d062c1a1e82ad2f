package packet

// This file freezes the parser as it was before the fast path (parse.go at
// commit f8e1b58), every name prefixed with ref, so that
// FuzzParseDifferential can prove the optimised Parse gives the same Reason
// and the same Packet for every input. Do not edit it to follow parse.go:
// a behaviour change must show up as a divergence here and be argued for.
// One exception, argued at refParseICMP: the ICMP type classification is
// the shared one (icmp.go), not a frozen copy.

import "encoding/binary"

// RefParse is the frozen reference parser, exported for the external test
// package (packet_test) only; it exists in test binaries alone.
var RefParse = refParse

func refAddrFrom4(b [4]byte) Addr {
	var a Addr
	a[10], a[11] = 0xff, 0xff
	a[12], a[13], a[14], a[15] = b[0], b[1], b[2], b[3]
	return a
}

// Header sizes.
const (
	refEthernetHdrLen = 14
	refVlanTagLen     = 4
	refIpv4MinHdrLen  = 20
	refIpv6HdrLen     = 40
	refTcpMinHdrLen   = 20
	refUdpHdrLen      = 8
	refIcmpHdrLen     = 8
)

const refMaxVLANTags = 2

const refMaxIPv6ExtHeaders = 8

// refMaxOffset is the largest offset a uint16 field of Packet can hold; refParse
// treats bytes beyond it as not captured and datagrams ending beyond it as
// malformed, so every offset it stores is exact.
const refMaxOffset = 0xffff

// refParse parses frame into p and says whether the frame is well formed.
// wireLen is the frame's length on the wire; 0 (or anything below
// len(frame)) means len(frame). A snaplen-truncated capture has len(frame) <
// wireLen: lengths then come from the IP header and only the fields that
// were captured are read.
//
// On ReasonOK every field that applies is set. On ReasonNotIP only the layer
// 2 fields are. On ReasonBadChecksum and ReasonICMPBadInner all outer fields
// are set (the tracker counts the packet as INVALID but may still want its
// tuple). On any other reason the fields parsed before the fault are set and
// the rest are zero.
//
// A non-first fragment parses its IP header only: Fragment and FragOffset
// are set, L4Off and PayloadOff point at the fragment's payload, and refParse
// returns ReasonOK; the fragment tracker decides. A first fragment (MF set,
// offset 0) parses its L4 header from the fragment's own bytes and returns
// ReasonTinyFragment when they cannot hold it (RFC 1858).
//
// refParse never allocates and never panics.
func refParse(frame []byte, wireLen int, opt Options, p *Packet) Reason {
	*p = Packet{}
	p.TCP.WScale = WScaleAbsent
	if len(frame) > refMaxOffset {
		frame = frame[:refMaxOffset]
	}
	if wireLen < len(frame) {
		wireLen = len(frame)
	}
	if len(frame) < refEthernetHdrLen {
		return ReasonTruncatedEthernet
	}
	copy(p.MAC[:], frame[:12]) // added with -m mac / -m pkttype (rules)
	et := binary.BigEndian.Uint16(frame[12:])
	off := refEthernetHdrLen
	var vids [refMaxVLANTags]uint16
	for et == EtherTypeVLAN || et == EtherTypeQinQ || et == EtherTypeQinQOld {
		if p.VLANTags == refMaxVLANTags {
			p.EtherType = et
			return ReasonTooManyVLANTags
		}
		if len(frame) < off+refVlanTagLen {
			return ReasonTruncatedVLAN
		}
		vids[p.VLANTags] = binary.BigEndian.Uint16(frame[off:]) & 0x0fff
		et = binary.BigEndian.Uint16(frame[off+2:])
		p.VLANTags++
		off += refVlanTagLen
	}
	p.EtherType = et
	switch p.VLANTags {
	case 1:
		p.VLAN = vids[0]
	case 2:
		p.OuterVLAN, p.VLAN = vids[0], vids[1]
	}
	p.L3Off = uint16(off)
	switch et {
	case EtherTypeIPv4:
		return refParseIPv4(frame, off, wireLen, opt, p)
	case EtherTypeIPv6:
		return refParseIPv6(frame, off, wireLen, opt, p)
	}
	return ReasonNotIP
}

// refParseIPv4 checks the header the way ip_rcv_core does (IHL, then total
// length against what arrived) and hands the L4 bytes on.
func refParseIPv4(frame []byte, off, wireLen int, opt Options, p *Packet) Reason {
	if len(frame)-off < refIpv4MinHdrLen {
		return ReasonTruncatedIPv4
	}
	h := frame[off:]
	if h[0]>>4 != 4 {
		return ReasonIPv4BadVersion
	}
	ihl := int(h[0]&0x0f) * 4
	if ihl < refIpv4MinHdrLen {
		return ReasonIPv4BadIHL
	}
	if ihl > len(h) {
		if off+ihl <= wireLen {
			return ReasonTruncatedIPv4 // options cut by the snaplen
		}
		return ReasonIPv4BadIHL
	}
	tot := int(binary.BigEndian.Uint16(h[2:]))
	end := off + tot
	if tot < ihl || end > wireLen || end > refMaxOffset {
		return ReasonIPv4BadLength
	}
	p.IPVersion = 4
	p.TTL = h[8]
	p.TOS = h[1] // added with -m tos / -m dscp (rules)
	p.Proto = h[9]
	p.Src = refAddrFrom4([4]byte(h[12:16]))
	p.Dst = refAddrFrom4([4]byte(h[16:20]))
	p.IPLen = uint32(tot)
	p.FragID = uint32(binary.BigEndian.Uint16(h[4:]))
	fw := binary.BigEndian.Uint16(h[6:])
	p.FragOffset = (fw & 0x1fff) << 3
	p.MoreFrags = fw&0x2000 != 0
	p.Fragment = p.MoreFrags || p.FragOffset != 0
	return refParseL4(frame, off+ihl, end, opt, p)
}

// refParseIPv6 checks the fixed header (ip6_rcv_core: payload length against
// what arrived) and walks the extension header chain the way
// ipv6_skip_exthdr does, stopping at a non-first fragment.
func refParseIPv6(frame []byte, off, wireLen int, opt Options, p *Packet) Reason {
	if len(frame)-off < refIpv6HdrLen {
		return ReasonTruncatedIPv6
	}
	h := frame[off:]
	if h[0]>>4 != 6 {
		return ReasonIPv6BadVersion
	}
	plen := int(binary.BigEndian.Uint16(h[4:]))
	end := off + refIpv6HdrLen + plen
	if end > wireLen || end > refMaxOffset {
		return ReasonIPv6BadLength
	}
	p.IPVersion = 6
	p.TTL = h[7]
	p.TOS = h[0]<<4 | h[1]>>4
	p.Src = Addr(h[8:24])
	p.Dst = Addr(h[24:40])
	p.IPLen = uint32(refIpv6HdrLen + plen)
	nh, cur, r := refSkipIPv6Ext(frame[:min(end, len(frame))], h[6], off+refIpv6HdrLen, end, p, nil)
	p.Proto = nh
	if r != ReasonOK {
		return r
	}
	if nh == ProtoNoNext {
		p.L4Off = uint16(cur)
		p.PayloadOff = uint16(cur)
		return ReasonOK
	}
	return refParseL4(frame, cur, end, opt, p)
}

// refSkipIPv6Ext walks the extension headers starting with next header nh at
// cur, within b (the captured bytes of the datagram) and the datagram's end.
// It returns the upper-layer protocol and its offset. When p is not nil the
// fragment header's fields are stored there; when fragOff is not nil the
// fragment offset is (the quoted packet of an ICMPv6 error needs only that).
func refSkipIPv6Ext(b []byte, nh uint8, cur, end int, p *Packet, fragOff *uint16) (uint8, int, Reason) {
	for n := 0; ; n++ {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDestOpts, ProtoAH:
		default:
			return nh, cur, ReasonOK
		}
		// Hop-by-hop options must come first (RFC 8200 §4.1; ipv6_rcv
		// drops them elsewhere).
		if n == refMaxIPv6ExtHeaders || (nh == ProtoHopByHop && n > 0) {
			return nh, cur, ReasonIPv6ExtChain
		}
		if cur+2 > len(b) {
			return nh, cur, ReasonIPv6ExtChain
		}
		var l int
		switch nh {
		case ProtoFragment:
			l = 8
			if cur+l > len(b) {
				return nh, cur, ReasonIPv6ExtChain
			}
			fw := binary.BigEndian.Uint16(b[cur+2:])
			fo := fw &^ 7
			if p != nil {
				p.FragOffset = fo
				p.MoreFrags = fw&1 != 0
				p.FragID = binary.BigEndian.Uint32(b[cur+4:])
				p.Fragment = fo != 0 || p.MoreFrags
			}
			if fragOff != nil {
				*fragOff = fo
			}
			if fo != 0 {
				// The bytes after a non-first fragment's header continue
				// the fragmentable part; they are no header to walk.
				return b[cur], cur + l, ReasonOK
			}
		case ProtoAH:
			l = (int(b[cur+1]) + 2) * 4
		default:
			l = (int(b[cur+1]) + 1) * 8
		}
		if cur+l > end {
			return nh, cur, ReasonIPv6ExtChain
		}
		nh = b[cur]
		cur += l
	}
}

// refParseL4 parses the transport header at l4. end is the end of the datagram
// by its IP header; bytes past len(frame) were not captured.
func refParseL4(frame []byte, l4, end int, opt Options, p *Packet) Reason {
	p.L4Off = uint16(l4)
	p.Truncated = end > len(frame)
	if p.FragOffset != 0 {
		p.PayloadOff = uint16(l4)
		p.PayloadLen = uint32(end - l4)
		return ReasonOK
	}
	capEnd := min(end, len(frame))
	seg := end - l4 // the L4 length by the IP header
	verify := opt.VerifyChecksum && !p.Fragment && end <= len(frame)
	switch {
	case p.Proto == ProtoTCP:
		return refParseTCP(frame, l4, end, capEnd, seg, verify, p)
	case p.Proto == ProtoUDP:
		return refParseUDP(frame, l4, end, capEnd, seg, verify, p)
	case p.Proto == ProtoICMP && p.IPVersion == 4, p.Proto == ProtoICMPv6 && p.IPVersion == 6:
		return refParseICMP(frame, l4, end, capEnd, seg, verify, p)
	case p.Proto == ProtoSCTP || p.Proto == ProtoDCCP || p.Proto == ProtoUDPLite:
		// Port-based protocols without a parser of their own: the ports
		// are informative (the generic tracker keys on addresses only).
		if capEnd-l4 >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(frame[l4:])
			p.DstPort = binary.BigEndian.Uint16(frame[l4+2:])
		}
	}
	p.PayloadOff = uint16(l4)
	p.PayloadLen = uint32(seg)
	return ReasonOK
}

// refTooShort is the reason for a segment whose own bytes cannot hold the L4
// header: in a first fragment that is a tiny fragment (RFC 1858), else the
// protocol's short reason.
func refTooShort(p *Packet, short Reason) Reason {
	if p.MoreFrags && p.FragOffset == 0 {
		return ReasonTinyFragment
	}
	return short
}

func refParseTCP(frame []byte, l4, end, capEnd, seg int, verify bool, p *Packet) Reason {
	if seg < refTcpMinHdrLen {
		return refTooShort(p, ReasonTruncatedTCP)
	}
	if capEnd-l4 < refTcpMinHdrLen {
		return ReasonTruncatedTCP
	}
	h := frame[l4:capEnd]
	p.SrcPort = binary.BigEndian.Uint16(h[0:])
	p.DstPort = binary.BigEndian.Uint16(h[2:])
	t := &p.TCP
	t.Seq = binary.BigEndian.Uint32(h[4:])
	t.Ack = binary.BigEndian.Uint32(h[8:])
	doff := int(h[12]>>4) * 4
	t.DataOff = uint8(doff)
	t.Flags = h[13]
	t.Window = binary.BigEndian.Uint16(h[14:])
	if doff < refTcpMinHdrLen {
		return ReasonTCPBadDataOffset
	}
	if doff > seg {
		return refTooShort(p, ReasonTCPBadDataOffset)
	}
	p.PayloadOff = uint16(l4 + doff)
	p.PayloadLen = uint32(seg - doff)
	if doff > len(h) {
		t.OptsBroken = true
		refParseTCPOptions(h[refTcpMinHdrLen:], t)
	} else {
		refParseTCPOptions(h[refTcpMinHdrLen:doff], t)
	}
	if verify {
		p.ChecksumChecked = true
		p.ChecksumOK = refL4Checksum(frame[l4:end], p) == 0xffff
		if !p.ChecksumOK {
			return ReasonBadChecksum
		}
	}
	return ReasonOK
}

// refParseTCPOptions reads the options the tracker uses, accepting an option
// only at its exact length as tcp_options() in nf_conntrack_proto_tcp.c does.
// A length byte below 2 or past the end stops the walk (OptsBroken).
func refParseTCPOptions(o []byte, t *TCP) {
	for i := 0; i < len(o); {
		kind := o[i]
		if kind == 0 { // end of option list
			return
		}
		if kind == 1 { // no-op
			i++
			continue
		}
		if i+2 > len(o) {
			t.OptsBroken = true
			return
		}
		l := int(o[i+1])
		if l < 2 || i+l > len(o) {
			t.OptsBroken = true
			return
		}
		v := o[i+2 : i+l]
		switch {
		case kind == 2 && l == 4:
			t.MSS = binary.BigEndian.Uint16(v)
		case kind == 3 && l == 3:
			t.WScale = v[0]
		case kind == 4 && l == 2:
			t.SACKPerm = true
		case kind == 5 && l >= 10 && (l-2)%8 == 0 && t.NumSACK == 0:
			// Changed after the freeze, with Parse: only the first
			// well-formed SACK option counts (kernel tcp_sack).
			n := 0
			for ; n < MaxSACKBlocks && 8*n+8 <= len(v); n++ {
				t.SACK[n] = SACKBlock{
					Left:  binary.BigEndian.Uint32(v[8*n:]),
					Right: binary.BigEndian.Uint32(v[8*n+4:]),
				}
			}
			t.NumSACK = uint8(n)
		case kind == 8 && l == 10:
			t.HasTS = true
			t.TSVal = binary.BigEndian.Uint32(v)
			t.TSEcr = binary.BigEndian.Uint32(v[4:])
		}
		i += l
	}
}

// refParseUDP applies udp_error(): the UDP length must lie within 8 and the IP
// payload. On a first fragment the length speaks for the whole datagram, so
// only its lower bound is checked and the payload is the fragment's.
func refParseUDP(frame []byte, l4, end, capEnd, seg int, verify bool, p *Packet) Reason {
	if seg < refUdpHdrLen {
		return refTooShort(p, ReasonTruncatedUDP)
	}
	if capEnd-l4 < refUdpHdrLen {
		return ReasonTruncatedUDP
	}
	h := frame[l4:]
	p.SrcPort = binary.BigEndian.Uint16(h[0:])
	p.DstPort = binary.BigEndian.Uint16(h[2:])
	ulen := int(binary.BigEndian.Uint16(h[4:]))
	if ulen < refUdpHdrLen || (ulen > seg && !p.Fragment) {
		return ReasonUDPBadLength
	}
	p.PayloadOff = uint16(l4 + refUdpHdrLen)
	if p.Fragment {
		p.PayloadLen = uint32(seg - refUdpHdrLen)
	} else {
		p.PayloadLen = uint32(ulen - refUdpHdrLen)
	}
	// A zero checksum means none on IPv4; on IPv6 it is computed and fails,
	// as nf_checksum does.
	if verify && !(p.IPVersion == 4 && binary.BigEndian.Uint16(h[6:]) == 0) {
		p.ChecksumChecked = true
		// The kernel sums the whole IP payload (skb->len - dataoff),
		// not the UDP length.
		p.ChecksumOK = refL4Checksum(frame[l4:end], p) == 0xffff
		if !p.ChecksumOK {
			return ReasonBadChecksum
		}
	}
	return ReasonOK
}

func refParseICMP(frame []byte, l4, end, capEnd, seg int, verify bool, p *Packet) Reason {
	if seg < refIcmpHdrLen {
		return refTooShort(p, ReasonTruncatedICMP)
	}
	if capEnd-l4 < refIcmpHdrLen {
		return ReasonTruncatedICMP
	}
	h := frame[l4:capEnd]
	p.ICMP = ICMP{
		Type: h[0],
		Code: h[1],
		ID:   binary.BigEndian.Uint16(h[4:]),
		Seq:  binary.BigEndian.Uint16(h[6:]),
	}
	p.PayloadOff = uint16(l4 + refIcmpHdrLen)
	p.PayloadLen = uint32(seg - refIcmpHdrLen)
	if verify {
		p.ChecksumChecked = true
		if p.IPVersion == 4 {
			p.ChecksumOK = refFold(refSum(frame[l4:end], 0)) == 0xffff
		} else {
			p.ChecksumOK = refL4Checksum(frame[l4:end], p) == 0xffff
		}
		if !p.ChecksumOK {
			return ReasonBadChecksum
		}
	}
	// Which types quote a packet is conntrack's classification, not the
	// parser's work: the frozen copy calls the one classifier (icmp.go),
	// which icmp_test.go checks type by type against the kernel's tables.
	// A frozen second list would either keep the old answer (ICMPv6 1-4
	// only, while the kernel looks up every type below 128) or be edited
	// in step with the first, and prove nothing either way.
	if !IsICMPError(p.IPVersion, p.ICMP.Type) {
		return ReasonOK
	}
	q := h[refIcmpHdrLen:]
	if p.IPVersion == 6 && p.ICMP.Type == 137 {
		var ok bool
		if q, ok = refRedirectedHeader(h); !ok {
			p.InnerReason = ReasonICMPBadInner
			return ReasonICMPBadInner
		}
	}
	var r Reason
	if p.IPVersion == 4 {
		r = refParseInner4(q, &p.Inner)
	} else {
		r = refParseInner6(q, &p.Inner)
	}
	if r != ReasonOK {
		p.Inner = Inner{}
		p.InnerReason = r
		return ReasonICMPBadInner
	}
	p.HasInner = true
	return ReasonOK
}

// refRedirectedHeader returns the quoted packet of an ICMPv6 redirect h
// (captured bytes from the ICMPv6 header on).
//
// Changed after the freeze, with Parse: it searched every option for the
// Redirected Header (type 4) and cut the quote at that option's length.
// The kernel (nf_conntrack_icmpv6_redirect) reads only the first option: a
// missing or zero-length one, or one of another type (a Target Link-Layer
// Address option first, as Linux routers send), leaves the redirect
// INVALID, and a type-4 one quotes from its 8-byte header to the end of the
// packet, whatever its length field says (nf_conntrack_inet_error parses
// from that offset). Searching made such a redirect RELATED where the
// kernel says INVALID.
func refRedirectedHeader(h []byte) ([]byte, bool) {
	// type, code, checksum, reserved (8), target (16), destination (16).
	const optStart = 40
	if len(h) < optStart+2 || h[optStart+1] == 0 || h[optStart] != 4 {
		return nil, false
	}
	return h[min(optStart+8, len(h)):], true
}

// refParseInner4 parses the IPv4 header and first L4 bytes quoted in an ICMP
// error, as ipv4_get_l4proto and nf_ct_get_tuple do for the embedded packet:
// its total length is not checked (the quote is cut), a non-first fragment
// has no L4 header, ports need 4 bytes and an inner ICMP header 8.
func refParseInner4(q []byte, in *Inner) Reason {
	if len(q) < refIpv4MinHdrLen {
		return ReasonTruncatedIPv4
	}
	if q[0]>>4 != 4 {
		return ReasonIPv4BadVersion
	}
	ihl := int(q[0]&0x0f) * 4
	if ihl < refIpv4MinHdrLen || ihl > len(q) {
		return ReasonIPv4BadIHL
	}
	in.IPVersion = 4
	in.Proto = q[9]
	in.Src = refAddrFrom4([4]byte(q[12:16]))
	in.Dst = refAddrFrom4([4]byte(q[16:20]))
	if binary.BigEndian.Uint16(q[6:])&0x1fff != 0 {
		in.NonFirstFragment = true
		return ReasonOK
	}
	return refParseInnerL4(q[ihl:], ProtoICMP, in)
}

// refParseInner6 is refParseInner4 for the IPv6 packet quoted in an ICMPv6 error;
// the extension header chain is walked within the quoted bytes.
func refParseInner6(q []byte, in *Inner) Reason {
	if len(q) < refIpv6HdrLen {
		return ReasonTruncatedIPv6
	}
	if q[0]>>4 != 6 {
		return ReasonIPv6BadVersion
	}
	in.IPVersion = 6
	in.Src = Addr(q[8:24])
	in.Dst = Addr(q[24:40])
	var fo uint16
	nh, cur, r := refSkipIPv6Ext(q, q[6], refIpv6HdrLen, len(q), nil, &fo)
	in.Proto = nh
	if r != ReasonOK {
		return r
	}
	if fo != 0 {
		in.NonFirstFragment = true
		return ReasonOK
	}
	if nh == ProtoNoNext {
		// ipv6_skip_exthdr fails on "no next header": no tuple.
		return ReasonIPv6ExtChain
	}
	return refParseInnerL4(q[cur:], ProtoICMPv6, in)
}

func refParseInnerL4(l4 []byte, icmpProto uint8, in *Inner) Reason {
	switch in.Proto {
	case ProtoTCP, ProtoUDP, ProtoUDPLite, ProtoSCTP, ProtoDCCP:
		if len(l4) < 4 {
			if in.Proto == ProtoTCP {
				return ReasonTruncatedTCP
			}
			return ReasonTruncatedUDP
		}
		in.SrcPort = binary.BigEndian.Uint16(l4)
		in.DstPort = binary.BigEndian.Uint16(l4[2:])
	case icmpProto:
		if len(l4) < refIcmpHdrLen {
			return ReasonTruncatedICMP
		}
		in.ICMP = ICMP{
			Type: l4[0],
			Code: l4[1],
			ID:   binary.BigEndian.Uint16(l4[4:]),
			Seq:  binary.BigEndian.Uint16(l4[6:]),
		}
	}
	return ReasonOK
}

// refL4Checksum returns the folded one's-complement refSum of the pseudo-header
// and the L4 bytes b; 0xffff means the checksum verifies.
func refL4Checksum(b []byte, p *Packet) uint16 {
	var acc uint64
	if p.IPVersion == 4 {
		acc = refSum(p.Src[12:16], acc)
		acc = refSum(p.Dst[12:16], acc)
	} else {
		acc = refSum(p.Src[:], acc)
		acc = refSum(p.Dst[:], acc)
	}
	acc += uint64(p.Proto) + uint64(len(b))
	return refFold(refSum(b, acc))
}

// refSum adds b to acc as big-endian 16-bit words. It reads 32-bit words: the
// one's-complement refSum is the same modulo 0xffff, and refFold brings it back.
func refSum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

func refFold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
