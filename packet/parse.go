package packet

import "encoding/binary"

// Options tunes Parse. The zero value parses without verifying checksums.
type Options struct {
	// VerifyChecksum verifies the TCP, UDP, ICMP and ICMPv6 checksum when
	// every byte of the datagram was captured and it is not a fragment. The
	// kernel checks them in PRE_ROUTING (nf_conntrack_checksum=1); captures
	// from offloading NICs carry bad ones, hence the switch. The IPv4 header
	// checksum is never verified: the bridge drops those before conntrack.
	VerifyChecksum bool
}

// EtherTypes and protocol numbers the parser knows besides ProtoTCP..ProtoICMPv6.
const (
	EtherTypeIPv4    uint16 = 0x0800
	EtherTypeIPv6    uint16 = 0x86dd
	EtherTypeARP     uint16 = 0x0806
	EtherTypeVLAN    uint16 = 0x8100 // 802.1Q C-tag
	EtherTypeQinQ    uint16 = 0x88a8 // 802.1ad S-tag
	EtherTypeQinQOld uint16 = 0x9100 // pre-standard S-tag

	ProtoHopByHop uint8 = 0
	ProtoDCCP     uint8 = 33
	ProtoRouting  uint8 = 43
	ProtoFragment uint8 = 44
	ProtoESP      uint8 = 50
	ProtoAH       uint8 = 51
	ProtoNoNext   uint8 = 59
	ProtoDestOpts uint8 = 60
	ProtoSCTP     uint8 = 132
	ProtoUDPLite  uint8 = 136
)

// Header sizes.
const (
	ethernetHdrLen = 14
	vlanTagLen     = 4
	ipv4MinHdrLen  = 20
	ipv6HdrLen     = 40
	tcpMinHdrLen   = 20
	udpHdrLen      = 8
	icmpHdrLen     = 8
)

// MaxVLANTags is the most stacked 802.1Q/802.1ad tags Parse accepts.
const MaxVLANTags = 2

// MaxIPv6ExtHeaders caps the IPv6 extension header chain. The kernel walks
// any length; a cap keeps the per-packet cost bounded against crafted chains
// and real traffic never comes near it.
const MaxIPv6ExtHeaders = 8

// maxOffset is the largest offset a uint16 field of Packet can hold; Parse
// treats bytes beyond it as not captured and datagrams ending beyond it as
// malformed, so every offset it stores is exact.
const maxOffset = 0xffff

// Parse parses frame into p and says whether the frame is well formed.
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
// are set, L4Off and PayloadOff point at the fragment's payload, and Parse
// returns ReasonOK; the fragment tracker decides. A first fragment (MF set,
// offset 0) parses its L4 header from the fragment's own bytes and returns
// ReasonTinyFragment when they cannot hold it (RFC 1858).
//
// Parse never allocates and never panics.
func Parse(frame []byte, wireLen int, opt Options, p *Packet) Reason {
	// Nearly every frame on the wire is a complete, untagged or singly
	// tagged, unfragmented IPv4 (no options) or IPv6 (no extension
	// headers) TCP or UDP datagram. parseFast takes those in straight-line
	// code and hands anything else, every malformed frame included, to
	// parseGeneral, which gives the reasons. FuzzParseDifferential proves
	// the pair gives what parseGeneral alone gave. Parse itself stays small
	// enough to inline into its callers: one call per frame.
	return parseFast(frame, wireLen, opt, p)
}

// parseGeneral is Parse for any frame: every tag stack, IP options,
// extension headers, fragments, ICMP, snaplen-cut captures and every
// malformation.
func parseGeneral(frame []byte, wireLen int, opt Options, p *Packet) Reason {
	*p = Packet{}
	p.TCP.WScale = WScaleAbsent
	if len(frame) > maxOffset {
		frame = frame[:maxOffset]
	}
	if wireLen < len(frame) {
		wireLen = len(frame)
	}
	if len(frame) < ethernetHdrLen {
		return ReasonTruncatedEthernet
	}
	p.MAC = [12]byte(frame[:12])
	et := binary.BigEndian.Uint16(frame[12:])
	off := ethernetHdrLen
	var vids [MaxVLANTags]uint16
	for et == EtherTypeVLAN || et == EtherTypeQinQ || et == EtherTypeQinQOld {
		if p.VLANTags == MaxVLANTags {
			p.EtherType = et
			return ReasonTooManyVLANTags
		}
		if len(frame) < off+vlanTagLen {
			return ReasonTruncatedVLAN
		}
		vids[p.VLANTags] = binary.BigEndian.Uint16(frame[off:]) & 0x0fff
		et = binary.BigEndian.Uint16(frame[off+2:])
		p.VLANTags++
		off += vlanTagLen
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
		return parseIPv4(frame, off, wireLen, opt, p)
	case EtherTypeIPv6:
		return parseIPv6(frame, off, wireLen, opt, p)
	}
	return ReasonNotIP
}

// putAddr4 stores the IPv4-mapped form of the address b (4 bytes) in a as
// two 8-byte words. a = AddrFrom4(...) builds the address byte by byte on
// the stack and copies it with 16-byte moves the CPU cannot forward from
// byte stores: that stall was a third of the IPv4 parse.
func putAddr4(a *Addr, b []byte) {
	binary.LittleEndian.PutUint64(a[:8], 0)
	binary.LittleEndian.PutUint64(a[8:], 0xffff<<16|uint64(binary.LittleEndian.Uint32(b))<<32)
}

// parseIPv4 checks the header the way ip_rcv_core does (IHL, then total
// length against what arrived) and hands the L4 bytes on.
func parseIPv4(frame []byte, off, wireLen int, opt Options, p *Packet) Reason {
	if len(frame)-off < ipv4MinHdrLen {
		return ReasonTruncatedIPv4
	}
	h := frame[off:]
	if h[0]>>4 != 4 {
		return ReasonIPv4BadVersion
	}
	ihl := int(h[0]&0x0f) * 4
	if ihl < ipv4MinHdrLen {
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
	if tot < ihl || end > wireLen || end > maxOffset {
		return ReasonIPv4BadLength
	}
	p.IPVersion = 4
	p.TTL = h[8]
	p.TOS = h[1]
	p.Proto = h[9]
	putAddr4(&p.Src, h[12:16])
	putAddr4(&p.Dst, h[16:20])
	p.IPLen = uint32(tot)
	p.FragID = uint32(binary.BigEndian.Uint16(h[4:]))
	fw := binary.BigEndian.Uint16(h[6:])
	p.FragOffset = (fw & 0x1fff) << 3
	p.MoreFrags = fw&0x2000 != 0
	p.Fragment = p.MoreFrags || p.FragOffset != 0
	return parseL4(frame, off+ihl, end, opt, p)
}

// parseIPv6 checks the fixed header (ip6_rcv_core: payload length against
// what arrived) and walks the extension header chain the way
// ipv6_skip_exthdr does, stopping at a non-first fragment.
func parseIPv6(frame []byte, off, wireLen int, opt Options, p *Packet) Reason {
	if len(frame)-off < ipv6HdrLen {
		return ReasonTruncatedIPv6
	}
	h := frame[off:]
	if h[0]>>4 != 6 {
		return ReasonIPv6BadVersion
	}
	plen := int(binary.BigEndian.Uint16(h[4:]))
	end := off + ipv6HdrLen + plen
	if end > wireLen || end > maxOffset {
		return ReasonIPv6BadLength
	}
	p.IPVersion = 6
	p.TTL = h[7]
	p.TOS = h[0]<<4 | h[1]>>4
	p.Src = Addr(h[8:24])
	p.Dst = Addr(h[24:40])
	p.IPLen = uint32(ipv6HdrLen + plen)
	nh, cur, r := skipIPv6Ext(frame[:min(end, len(frame))], h[6], off+ipv6HdrLen, end, p, nil)
	p.Proto = nh
	if r != ReasonOK {
		return r
	}
	if nh == ProtoNoNext {
		p.L4Off = uint16(cur)
		p.PayloadOff = uint16(cur)
		return ReasonOK
	}
	return parseL4(frame, cur, end, opt, p)
}

// skipIPv6Ext walks the extension headers starting with next header nh at
// cur, within b (the captured bytes of the datagram) and the datagram's end.
// It returns the upper-layer protocol and its offset. When p is not nil the
// fragment header's fields are stored there; when fragOff is not nil the
// fragment offset is (the quoted packet of an ICMPv6 error needs only that).
func skipIPv6Ext(b []byte, nh uint8, cur, end int, p *Packet, fragOff *uint16) (uint8, int, Reason) {
	for n := 0; ; n++ {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDestOpts, ProtoAH:
		default:
			return nh, cur, ReasonOK
		}
		// Hop-by-hop options must come first (RFC 8200 §4.1; ipv6_rcv
		// drops them elsewhere).
		if n == MaxIPv6ExtHeaders || (nh == ProtoHopByHop && n > 0) {
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

// parseL4 parses the transport header at l4. end is the end of the datagram
// by its IP header; bytes past len(frame) were not captured.
func parseL4(frame []byte, l4, end int, opt Options, p *Packet) Reason {
	p.L4Off = uint16(l4)
	p.Truncated = end > len(frame)
	if p.FragOffset != 0 {
		p.PayloadOff = uint16(l4)
		p.PayloadLen = uint32(end - l4)
		return ReasonOK
	}
	capEnd := min(end, len(frame))
	seg := end - l4 // the L4 length by the IP header
	check := checkNone
	if !p.Fragment && end <= len(frame) {
		check = checkPartial
		if opt.VerifyChecksum {
			check = checkVerify
		}
	}
	verify := check == checkVerify
	switch {
	case p.Proto == ProtoTCP:
		return parseTCP(frame, l4, end, capEnd, seg, check, p)
	case p.Proto == ProtoUDP:
		return parseUDP(frame, l4, end, capEnd, seg, check, p)
	case IsICMP(p.IPVersion, p.Proto):
		return parseICMP(frame, l4, end, capEnd, seg, verify, p)
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

// tooShort is the reason for a segment whose own bytes cannot hold the L4
// header: in a first fragment that is a tiny fragment (RFC 1858), else the
// protocol's short reason.
func tooShort(p *Packet, short Reason) Reason {
	if p.MoreFrags && p.FragOffset == 0 {
		return ReasonTinyFragment
	}
	return short
}

func parseTCP(frame []byte, l4, end, capEnd, seg int, check checkMode, p *Packet) Reason {
	if seg < tcpMinHdrLen {
		return tooShort(p, ReasonTruncatedTCP)
	}
	if capEnd-l4 < tcpMinHdrLen {
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
	if doff < tcpMinHdrLen {
		return ReasonTCPBadDataOffset
	}
	if doff > seg {
		return tooShort(p, ReasonTCPBadDataOffset)
	}
	p.PayloadOff = uint16(l4 + doff)
	p.PayloadLen = uint32(seg - doff)
	if doff > len(h) {
		t.OptsBroken = true
		parseTCPOptions(h[tcpMinHdrLen:], t)
	} else {
		parseTCPOptions(h[tcpMinHdrLen:doff], t)
	}
	if check != checkNone {
		return checkTCPUDP(frame[l4:end], tcpChecksumOff, check, p)
	}
	return ReasonOK
}

// parseTCPOptions reads the options the tracker uses, accepting an option
// only at its exact length as tcp_options() in nf_conntrack_proto_tcp.c does.
// A length byte below 2 or past the end stops the walk (OptsBroken).
//
// It switches on the kind before looking at the length and reads values at
// fixed offsets from o, which it reslices past each option: no sub-slice
// per option (that, and the compound case chain, were half the cost of a
// SYN's parse).
func parseTCPOptions(o []byte, t *TCP) {
	for len(o) > 0 {
		kind := o[0]
		if kind == 0 { // end of option list
			return
		}
		if kind == 1 { // no-op
			o = o[1:]
			continue
		}
		if len(o) < 2 {
			t.OptsBroken = true
			return
		}
		l := int(o[1])
		if l < 2 || l > len(o) {
			t.OptsBroken = true
			return
		}
		switch kind {
		case 2:
			if l == 4 {
				t.MSS = binary.BigEndian.Uint16(o[2:4])
			}
		case 3:
			if l == 3 {
				t.WScale = o[2]
			}
		case 4:
			if l == 2 {
				t.SACKPerm = true
			}
		case 5:
			// Only the first well-formed SACK option counts: the
			// kernel's tcp_sack returns after it.
			if l >= 10 && (l-2)%8 == 0 && t.NumSACK == 0 {
				v := o[2:l]
				n := 0
				for ; n < MaxSACKBlocks && 8*n+8 <= len(v); n++ {
					t.SACK[n] = SACKBlock{
						Left:  binary.BigEndian.Uint32(v[8*n:]),
						Right: binary.BigEndian.Uint32(v[8*n+4:]),
					}
				}
				t.NumSACK = uint8(n)
			}
		case 8:
			if l == 10 {
				t.HasTS = true
				t.TSVal = binary.BigEndian.Uint32(o[2:6])
				t.TSEcr = binary.BigEndian.Uint32(o[6:10])
			}
		}
		o = o[l:]
	}
}

// parseUDP applies udp_error(): the UDP length must lie within 8 and the IP
// payload. On a first fragment the length speaks for the whole datagram, so
// only its lower bound is checked and the payload is the fragment's.
func parseUDP(frame []byte, l4, end, capEnd, seg int, check checkMode, p *Packet) Reason {
	if seg < udpHdrLen {
		return tooShort(p, ReasonTruncatedUDP)
	}
	if capEnd-l4 < udpHdrLen {
		return ReasonTruncatedUDP
	}
	h := frame[l4:]
	p.SrcPort = binary.BigEndian.Uint16(h[0:])
	p.DstPort = binary.BigEndian.Uint16(h[2:])
	ulen := int(binary.BigEndian.Uint16(h[4:]))
	if ulen < udpHdrLen || (ulen > seg && !p.Fragment) {
		return ReasonUDPBadLength
	}
	p.PayloadOff = uint16(l4 + udpHdrLen)
	if p.Fragment {
		p.PayloadLen = uint32(seg - udpHdrLen)
	} else {
		p.PayloadLen = uint32(ulen - udpHdrLen)
	}
	// A zero checksum means none on IPv4; on IPv6 it is computed and fails,
	// as nf_checksum does.
	if check != checkNone && !(p.IPVersion == 4 && binary.BigEndian.Uint16(h[6:]) == 0) {
		// The kernel sums the whole IP payload (skb->len - dataoff),
		// not the UDP length.
		return checkTCPUDP(frame[l4:end], udpChecksumOff, check, p)
	}
	return ReasonOK
}

func parseICMP(frame []byte, l4, end, capEnd, seg int, verify bool, p *Packet) Reason {
	if seg < icmpHdrLen {
		return tooShort(p, ReasonTruncatedICMP)
	}
	if capEnd-l4 < icmpHdrLen {
		return ReasonTruncatedICMP
	}
	h := frame[l4:capEnd]
	p.ICMP = ICMP{
		Type: h[0],
		Code: h[1],
		ID:   binary.BigEndian.Uint16(h[4:]),
		Seq:  binary.BigEndian.Uint16(h[6:]),
	}
	p.PayloadOff = uint16(l4 + icmpHdrLen)
	p.PayloadLen = uint32(seg - icmpHdrLen)
	if verify {
		p.ChecksumChecked = true
		if p.IPVersion == 4 {
			p.ChecksumOK = fold(sumAll(frame[l4:end], 0)) == 0xffff
		} else {
			p.ChecksumOK = l4Checksum(frame[l4:end], p) == 0xffff
		}
		if !p.ChecksumOK {
			return ReasonBadChecksum
		}
	}
	if !IsICMPError(p.IPVersion, p.ICMP.Type) {
		return ReasonOK
	}
	q := h[icmpHdrLen:]
	if ICMPClass(p.IPVersion, p.ICMP.Type) == ICMPRedirect {
		var ok bool
		if q, ok = redirectedHeader(h); !ok {
			p.InnerReason = ReasonICMPBadInner
			return ReasonICMPBadInner
		}
	}
	var r Reason
	if p.IPVersion == 4 {
		r = parseInner4(q, &p.Inner)
	} else {
		r = parseInner6(q, &p.Inner)
	}
	if r != ReasonOK {
		p.Inner = Inner{}
		p.InnerReason = r
		return ReasonICMPBadInner
	}
	p.HasInner = true
	return ReasonOK
}

// redirectedHeader returns the packet an ICMPv6 redirect h (captured bytes
// from the ICMPv6 header on) quotes, as nf_conntrack_icmpv6_redirect finds
// it: the kernel reads only the first option after the 40-byte redirect
// message, and it must be the Redirected Header option (type 4). A missing
// or zero-length first option is INVALID ("redirect without options"); a
// first option of any other type, such as the Target Link-Layer Address
// option Linux routers put first, is INVALID too (conntrack returns
// NF_ACCEPT with no connection, and the new ICMPv6 type-137 tuple is
// refused), however many options follow. The quote starts after the
// option's 8-byte header and runs to the end of the message, not of the
// option: the kernel hands that offset to nf_conntrack_inet_error, which
// parses up to the end of the packet whatever the option length says.
func redirectedHeader(h []byte) ([]byte, bool) {
	// type, code, checksum, reserved (8), target (16), destination (16).
	const optStart = 40
	if len(h) < optStart+2 || h[optStart+1] == 0 || h[optStart] != 4 {
		return nil, false
	}
	return h[min(optStart+8, len(h)):], true
}

// parseInner4 parses the IPv4 header and first L4 bytes quoted in an ICMP
// error, as ipv4_get_l4proto and nf_ct_get_tuple do for the embedded packet:
// its total length is not checked (the quote is cut), a non-first fragment
// has no L4 header, ports need 4 bytes and an inner ICMP header 8.
func parseInner4(q []byte, in *Inner) Reason {
	if len(q) < ipv4MinHdrLen {
		return ReasonTruncatedIPv4
	}
	if q[0]>>4 != 4 {
		return ReasonIPv4BadVersion
	}
	ihl := int(q[0]&0x0f) * 4
	if ihl < ipv4MinHdrLen || ihl > len(q) {
		return ReasonIPv4BadIHL
	}
	in.IPVersion = 4
	in.Proto = q[9]
	putAddr4(&in.Src, q[12:16])
	putAddr4(&in.Dst, q[16:20])
	if binary.BigEndian.Uint16(q[6:])&0x1fff != 0 {
		in.NonFirstFragment = true
		return ReasonOK
	}
	return parseInnerL4(q[ihl:], ProtoICMP, in)
}

// parseInner6 is parseInner4 for the IPv6 packet quoted in an ICMPv6 error;
// the extension header chain is walked within the quoted bytes.
func parseInner6(q []byte, in *Inner) Reason {
	if len(q) < ipv6HdrLen {
		return ReasonTruncatedIPv6
	}
	if q[0]>>4 != 6 {
		return ReasonIPv6BadVersion
	}
	in.IPVersion = 6
	in.Src = Addr(q[8:24])
	in.Dst = Addr(q[24:40])
	var fo uint16
	nh, cur, r := skipIPv6Ext(q, q[6], ipv6HdrLen, len(q), nil, &fo)
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
	return parseInnerL4(q[cur:], ProtoICMPv6, in)
}

func parseInnerL4(l4 []byte, icmpProto uint8, in *Inner) Reason {
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
		if len(l4) < icmpHdrLen {
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

// l4Checksum returns the folded one's-complement sum of the pseudo-header
// and the L4 bytes b; 0xffff means the checksum verifies.
func l4Checksum(b []byte, p *Packet) uint16 {
	return fold(sumAll(b, pseudoSum(p, len(b))))
}

// pseudoSum is the unfolded sum of the pseudo-header of p's addresses and
// protocol and an L4 length of n bytes.
func pseudoSum(p *Packet, n int) uint64 {
	var acc uint64
	if p.IPVersion == 4 {
		acc = sum(p.Src[12:16], acc)
		acc = sum(p.Dst[12:16], acc)
	} else {
		acc = sum(p.Src[:], acc)
		acc = sum(p.Dst[:], acc)
	}
	return acc + uint64(p.Proto) + uint64(n)
}

// sumAll is sum for a whole segment: 32-byte blocks first, eight
// independent additions per length check (a full-size frame sums more than
// twice as fast as in sum's loop), then sum for the rest. sum itself stays
// small enough to inline for the pseudo-header's addresses.
func sumAll(b []byte, acc uint64) uint64 {
	for len(b) >= 32 {
		w := (*[32]byte)(b)
		acc += uint64(binary.BigEndian.Uint32(w[0:4])) + uint64(binary.BigEndian.Uint32(w[4:8])) +
			uint64(binary.BigEndian.Uint32(w[8:12])) + uint64(binary.BigEndian.Uint32(w[12:16])) +
			uint64(binary.BigEndian.Uint32(w[16:20])) + uint64(binary.BigEndian.Uint32(w[20:24])) +
			uint64(binary.BigEndian.Uint32(w[24:28])) + uint64(binary.BigEndian.Uint32(w[28:32]))
		b = b[32:]
	}
	return sum(b, acc)
}

// sum adds b to acc as big-endian 16-bit words. It reads 32-bit words: the
// one's-complement sum is the same modulo 0xffff, and fold brings it back.
func sum(b []byte, acc uint64) uint64 {
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

func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
