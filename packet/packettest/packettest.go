// Package packettest builds real Ethernet frames as []byte for tests: IPv4
// and IPv6 TCP (flags, sequence numbers, window, options, payload), UDP,
// ICMP and ICMPv6 echo, errors quoting another frame, neighbour discovery,
// 802.1Q/802.1ad tags, IPv4 options, IPv6 extension headers and fragments,
// all with correct checksums (IPv4 header and L4).
//
// It is test support, not the hot path: every function allocates a fresh
// frame and panics on arguments a test should not pass (a bad address
// literal). Functions that take a frame return a new one and leave their
// argument alone, so tests can derive variants from one base frame.
//
// Frames are built byte by byte, independent of gopacket, so that tests can
// cross-check the two.
package packettest

import (
	"encoding/binary"
	"net/netip"

	"github.com/statewire/statewire/packet"
)

// Default link-layer addresses and IP header values.
var (
	SrcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	DstMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

const (
	// TTL is the IPv4 TTL and IPv6 hop limit of built frames.
	TTL = 64
	// IPID is the IPv4 identification of built frames.
	IPID = 0x1234
)

// TCPFields describes a TCP segment. The zero value is a segment with no
// flags, no options and no payload.
type TCPFields struct {
	Flags    uint8 // packet.TCPFin ... packet.TCPCwr
	Seq, Ack uint32
	Window   uint16
	Urgent   uint16

	MSS       uint16 // 0: no MSS option
	HasWScale bool
	WScale    uint8
	SACKPerm  bool
	SACK      []packet.SACKBlock
	TS        bool // timestamps option with TSVal, TSEcr
	TSVal     uint32
	TSEcr     uint32
	// Opts are raw option bytes appended after the ones above; the whole
	// is padded with EOL to a multiple of 4.
	Opts []byte
	// DataOff overrides the data offset field (in 32-bit words, 0..15);
	// 0 means computed from the options.
	DataOff uint8

	Payload []byte
}

// TCPOptions returns the option bytes f describes, padded to a multiple
// of 4.
func (f TCPFields) TCPOptions() []byte {
	var o []byte
	if f.MSS != 0 {
		o = append(o, 2, 4, byte(f.MSS>>8), byte(f.MSS))
	}
	if f.SACKPerm {
		o = append(o, 4, 2)
	}
	if f.TS {
		o = append(o, 8, 10)
		o = binary.BigEndian.AppendUint32(o, f.TSVal)
		o = binary.BigEndian.AppendUint32(o, f.TSEcr)
	}
	if f.HasWScale {
		o = append(o, 1, 3, 3, f.WScale)
	}
	if len(f.SACK) > 0 {
		o = append(o, 1, 1, 5, byte(2+8*len(f.SACK)))
		for _, b := range f.SACK {
			o = binary.BigEndian.AppendUint32(o, b.Left)
			o = binary.BigEndian.AppendUint32(o, b.Right)
		}
	}
	o = append(o, f.Opts...)
	for len(o)%4 != 0 {
		o = append(o, 0)
	}
	return o
}

func (f TCPFields) segment() []byte {
	opts := f.TCPOptions()
	b := make([]byte, 20, 20+len(opts)+len(f.Payload))
	binary.BigEndian.PutUint32(b[4:], f.Seq)
	binary.BigEndian.PutUint32(b[8:], f.Ack)
	doff := f.DataOff
	if doff == 0 {
		doff = uint8((20 + len(opts)) / 4)
	}
	b[12] = doff << 4
	b[13] = f.Flags
	binary.BigEndian.PutUint16(b[14:], f.Window)
	binary.BigEndian.PutUint16(b[18:], f.Urgent)
	b = append(b, opts...)
	return append(b, f.Payload...)
}

func withPorts(l4 []byte, sport, dport uint16) []byte {
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	return l4
}

// TCP4 builds an IPv4 TCP frame.
func TCP4(src, dst string, sport, dport uint16, f TCPFields) []byte {
	return IPv4(src, dst, packet.ProtoTCP, withPorts(f.segment(), sport, dport))
}

// TCP6 builds an IPv6 TCP frame.
func TCP6(src, dst string, sport, dport uint16, f TCPFields) []byte {
	return IPv6(src, dst, packet.ProtoTCP, withPorts(f.segment(), sport, dport))
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return withPorts(append(b, payload...), sport, dport)
}

// UDP4 builds an IPv4 UDP frame.
func UDP4(src, dst string, sport, dport uint16, payload []byte) []byte {
	return IPv4(src, dst, packet.ProtoUDP, udp(sport, dport, payload))
}

// UDP6 builds an IPv6 UDP frame.
func UDP6(src, dst string, sport, dport uint16, payload []byte) []byte {
	return IPv6(src, dst, packet.ProtoUDP, udp(sport, dport, payload))
}

func icmp(typ, code uint8, rest uint32, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], rest)
	return append(b, body...)
}

// ICMP4 builds an IPv4 ICMP frame: type, code, the 4 bytes after the
// checksum (rest) and the body.
func ICMP4(src, dst string, typ, code uint8, rest uint32, body []byte) []byte {
	return IPv4(src, dst, packet.ProtoICMP, icmp(typ, code, rest, body))
}

// ICMP4Echo builds an ICMP echo request (typ 8) or reply (typ 0), or any
// other id/sequence type (timestamp, information, address mask).
func ICMP4Echo(src, dst string, typ uint8, id, seq uint16, payload []byte) []byte {
	return ICMP4(src, dst, typ, 0, uint32(id)<<16|uint32(seq), payload)
}

// ICMP4Error builds an ICMP error (3, 4, 5, 11, 12) quoting the IP packet
// quoted (see IP and Quote).
func ICMP4Error(src, dst string, typ, code uint8, quoted []byte) []byte {
	return ICMP4(src, dst, typ, code, 0, quoted)
}

// ICMP6 builds an IPv6 ICMPv6 frame: type, code, the 4 bytes after the
// checksum (rest) and the body.
func ICMP6(src, dst string, typ, code uint8, rest uint32, body []byte) []byte {
	return IPv6(src, dst, packet.ProtoICMPv6, icmp(typ, code, rest, body))
}

// ICMP6Echo builds an ICMPv6 echo request (128) or reply (129).
func ICMP6Echo(src, dst string, typ uint8, id, seq uint16, payload []byte) []byte {
	return ICMP6(src, dst, typ, 0, uint32(id)<<16|uint32(seq), payload)
}

// ICMP6Error builds an ICMPv6 error (1, 2, 3, 4) quoting the IPv6 packet
// quoted. rest is the MTU (2) or pointer (4), else 0.
func ICMP6Error(src, dst string, typ, code uint8, rest uint32, quoted []byte) []byte {
	return ICMP6(src, dst, typ, code, rest, quoted)
}

// NeighborSolicit builds an ICMPv6 neighbour solicitation (135) for target
// with a source link-layer address option.
func NeighborSolicit(src, dst, target string) []byte {
	t := addr(target).As16()
	body := append(t[:], 1, 1)
	body = append(body, SrcMAC[:]...)
	f := ICMP6(src, dst, 135, 0, 0, body)
	return setHopLimit(f, 255)
}

// Redirect6 builds an ICMPv6 redirect (137, code 0, hop limit 255) with a
// redirected header option quoting quoted (padded to 8 bytes).
func Redirect6(src, dst, target, dest string, quoted []byte) []byte {
	return Redirect6Options(src, dst, target, dest, nil, quoted)
}

// Redirect6Options is Redirect6 with the ND options before (whole options,
// type, length and data) ahead of the redirected header option: a Target
// Link-Layer Address option first (TargetLLAOption) is what Linux routers
// send. A nil quoted leaves the redirected header option out.
func Redirect6Options(src, dst, target, dest string, before, quoted []byte) []byte {
	t, d := addr(target).As16(), addr(dest).As16()
	body := append(t[:], d[:]...)
	body = append(body, before...)
	if quoted != nil {
		n := 8 + len(quoted)
		for n%8 != 0 {
			n++
		}
		opt := make([]byte, n)
		opt[0], opt[1] = 4, byte(n/8)
		copy(opt[8:], quoted)
		body = append(body, opt...)
	}
	return setHopLimit(ICMP6(src, dst, 137, 0, 0, body), 255)
}

// TargetLLAOption is an ND Target Link-Layer Address option (type 2,
// length 1) carrying mac.
func TargetLLAOption(mac [6]byte) []byte {
	return append([]byte{2, 1}, mac[:]...)
}

func setHopLimit(frame []byte, hl uint8) []byte {
	frame[ethHdrLen(frame)+7] = hl
	return frame
}

func addr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		panic("packettest: " + err.Error())
	}
	return a
}

func ether(etherType uint16, l3 []byte) []byte {
	b := make([]byte, 14, 14+len(l3))
	copy(b[0:], DstMAC[:])
	copy(b[6:], SrcMAC[:])
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, l3...)
}

// IPv4 builds an IPv4 frame around the L4 bytes l4, filling in the L4
// checksum for TCP, UDP and ICMP.
func IPv4(src, dst string, proto uint8, l4 []byte) []byte {
	s, d := addr(src).As4(), addr(dst).As4()
	h := make([]byte, 20, 20+len(l4))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(h[4:], IPID)
	h[8] = TTL
	h[9] = proto
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	setIPv4Checksum(h)
	b := append(h, l4...)
	setL4Checksum(b[20:], proto, pseudo4(s, d, proto, len(l4)))
	return ether(packet.EtherTypeIPv4, b)
}

// IPv6 builds an IPv6 frame around the L4 bytes l4, filling in the L4
// checksum for TCP, UDP and ICMPv6.
func IPv6(src, dst string, proto uint8, l4 []byte) []byte {
	s, d := addr(src).As16(), addr(dst).As16()
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = TTL
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	b := append(h, l4...)
	setL4Checksum(b[40:], proto, pseudo6(s, d, proto, len(l4)))
	return ether(packet.EtherTypeIPv6, b)
}

func pseudo4(s, d [4]byte, proto uint8, n int) uint32 {
	return sum16(s[:]) + sum16(d[:]) + uint32(proto) + uint32(n)
}

func pseudo6(s, d [16]byte, proto uint8, n int) uint32 {
	return sum16(s[:]) + sum16(d[:]) + uint32(proto) + uint32(n)
}

// sum16 adds b as big-endian 16-bit words, the plain way (the parser's
// checksum reads 32-bit words; this one is deliberately different).
func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func checksum(s uint32) uint16 {
	for s>>16 != 0 {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func setIPv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], checksum(sum16(h)))
}

func setL4Checksum(l4 []byte, proto uint8, pseudo uint32) {
	switch proto {
	case packet.ProtoTCP:
		if len(l4) >= 18 {
			l4[16], l4[17] = 0, 0
			binary.BigEndian.PutUint16(l4[16:], checksum(pseudo+sum16(l4)))
		}
	case packet.ProtoUDP:
		if len(l4) >= 8 {
			l4[6], l4[7] = 0, 0
			c := checksum(pseudo + sum16(l4))
			if c == 0 {
				c = 0xffff // 0 means "no checksum" on the wire
			}
			binary.BigEndian.PutUint16(l4[6:], c)
		}
	case packet.ProtoICMP:
		if len(l4) >= 4 {
			l4[2], l4[3] = 0, 0
			binary.BigEndian.PutUint16(l4[2:], checksum(sum16(l4)))
		}
	case packet.ProtoICMPv6:
		if len(l4) >= 4 {
			l4[2], l4[3] = 0, 0
			binary.BigEndian.PutUint16(l4[2:], checksum(pseudo+sum16(l4)))
		}
	}
}

// ethHdrLen returns the length of the Ethernet header and VLAN tags.
func ethHdrLen(frame []byte) int {
	off := 14
	for {
		et := binary.BigEndian.Uint16(frame[off-2:])
		if et != packet.EtherTypeVLAN && et != packet.EtherTypeQinQ && et != packet.EtherTypeQinQOld {
			return off
		}
		off += 4
	}
}

// IP returns a copy of the IP packet in frame (after Ethernet and tags).
func IP(frame []byte) []byte {
	return append([]byte(nil), frame[ethHdrLen(frame):]...)
}

// Quote returns a copy of the first n bytes of the IP packet in frame, as
// an ICMP error quotes it (RFC 792: IP header + 8 bytes; Linux: as much as
// fits). n <= 0 or beyond the packet means all of it.
func Quote(frame []byte, n int) []byte {
	ip := IP(frame)
	if n > 0 && n < len(ip) {
		ip = ip[:n]
	}
	return ip
}

// VLAN returns frame with a tag (tpid: packet.EtherTypeVLAN, EtherTypeQinQ
// or EtherTypeQinQOld) inserted as the outermost one.
// VLAN(VLAN(f, EtherTypeVLAN, 20), EtherTypeQinQ, 10) is QinQ outer 10,
// inner 20.
func VLAN(frame []byte, tpid, vid uint16) []byte {
	b := make([]byte, 0, len(frame)+4)
	b = append(b, frame[:12]...)
	b = binary.BigEndian.AppendUint16(b, tpid)
	b = binary.BigEndian.AppendUint16(b, vid&0x0fff)
	return append(b, frame[12:]...)
}

// IPv4Options returns an IPv4 frame with opts (padded with EOL to a
// multiple of 4) inserted as IP options. The L4 checksum is unaffected.
func IPv4Options(frame []byte, opts []byte) []byte {
	off := ethHdrLen(frame)
	ihl := int(frame[off]&0x0f) * 4
	o := append([]byte(nil), opts...)
	for len(o)%4 != 0 {
		o = append(o, 0)
	}
	b := append([]byte(nil), frame[:off+ihl]...)
	b = append(b, o...)
	b = append(b, frame[off+ihl:]...)
	h := b[off:]
	h[0] = 0x40 | byte((ihl+len(o))/4)
	binary.BigEndian.PutUint16(h[2:], binary.BigEndian.Uint16(h[2:])+uint16(len(o)))
	setIPv4Checksum(h[:ihl+len(o)])
	return b
}

// Frag4 returns one IPv4 fragment of the (unfragmented) IPv4 frame: the IP
// payload bytes [off, off+n), off a multiple of 8, with MF set when more.
func Frag4(frame []byte, off, n int, more bool) []byte {
	l3 := ethHdrLen(frame)
	ihl := int(frame[l3]&0x0f) * 4
	pl := frame[l3+ihl:]
	end := min(off+n, len(pl))
	b := append([]byte(nil), frame[:l3+ihl]...)
	b = append(b, pl[off:end]...)
	h := b[l3:]
	binary.BigEndian.PutUint16(h[2:], uint16(ihl+end-off))
	fw := uint16(off / 8)
	if more {
		fw |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:], fw)
	setIPv4Checksum(h[:ihl])
	return b
}

// Fragments4 splits an IPv4 frame into fragments carrying size payload
// bytes each (size a multiple of 8; the last carries the rest).
func Fragments4(frame []byte, size int) [][]byte {
	l3 := ethHdrLen(frame)
	n := len(frame) - l3 - int(frame[l3]&0x0f)*4
	var out [][]byte
	for off := 0; off < n; off += size {
		out = append(out, Frag4(frame, off, size, off+size < n))
	}
	return out
}

// Ext6 returns an IPv6 frame with an extension header of type nh
// (packet.ProtoHopByHop, ProtoRouting, ProtoDestOpts, ProtoAH) inserted
// right after the fixed header. body is the header after its next-header
// and length bytes, padded with zeros to the header's unit (8 bytes; 4 for
// AH). The L4 checksum is unaffected.
func Ext6(frame []byte, nh uint8, body []byte) []byte {
	unit := 8
	if nh == packet.ProtoAH {
		unit = 4
	}
	e := make([]byte, 2, 2+len(body)+unit)
	e = append(e, body...)
	for len(e)%unit != 0 || len(e) < 8 {
		e = append(e, 0)
	}
	if nh == packet.ProtoAH {
		e[1] = byte(len(e)/4 - 2)
	} else {
		e[1] = byte(len(e)/8 - 1)
	}
	return insert6(frame, nh, e)
}

// insert6 inserts the extension header e (its byte 0 is overwritten with
// the fixed header's next header) after the IPv6 fixed header.
func insert6(frame []byte, nh uint8, e []byte) []byte {
	l3 := ethHdrLen(frame)
	h := frame[l3:]
	e[0] = h[6]
	b := append([]byte(nil), frame[:l3+40]...)
	b = append(b, e...)
	b = append(b, frame[l3+40:]...)
	h = b[l3:]
	h[6] = nh
	binary.BigEndian.PutUint16(h[4:], binary.BigEndian.Uint16(h[4:])+uint16(len(e)))
	return b
}

// Frag6 returns one IPv6 fragment of the (unfragmented) IPv6 frame: a
// fragment header with id is inserted after the fixed header, and the
// fragment carries bytes [off, off+n) of what followed the fixed header
// (off a multiple of 8), with M set when more.
func Frag6(frame []byte, id uint32, off, n int, more bool) []byte {
	l3 := ethHdrLen(frame)
	pl := frame[l3+40:]
	end := min(off+n, len(pl))
	b := append([]byte(nil), frame[:l3+40]...)
	b = append(b, pl[off:end]...)
	fh := make([]byte, 8)
	fw := uint16(off)
	if more {
		fw |= 1
	}
	binary.BigEndian.PutUint16(fh[2:], fw)
	binary.BigEndian.PutUint32(fh[4:], id)
	b = insert6(b, packet.ProtoFragment, fh)
	binary.BigEndian.PutUint16(b[l3+4:], uint16(8+end-off))
	return b
}

// Fragments6 splits an IPv6 frame into fragments with id carrying size
// bytes each (size a multiple of 8; the last carries the rest).
func Fragments6(frame []byte, id uint32, size int) [][]byte {
	n := len(frame) - ethHdrLen(frame) - 40
	var out [][]byte
	for off := 0; off < n; off += size {
		out = append(out, Frag6(frame, id, off, size, off+size < n))
	}
	return out
}

// FixChecksums recomputes the IPv4 header checksum and the L4 checksum of
// an unfragmented frame after a test edited it. It does not walk IPv6
// extension headers.
func FixChecksums(frame []byte) []byte {
	l3 := ethHdrLen(frame)
	h := frame[l3:]
	if h[0]>>4 == 4 {
		ihl := int(h[0]&0x0f) * 4
		setIPv4Checksum(h[:ihl])
		tot := int(binary.BigEndian.Uint16(h[2:]))
		setL4Checksum(h[ihl:tot], h[9], pseudo4([4]byte(h[12:16]), [4]byte(h[16:20]), h[9], tot-ihl))
		return frame
	}
	pl := int(binary.BigEndian.Uint16(h[4:]))
	setL4Checksum(h[40:40+pl], h[6], pseudo6([16]byte(h[8:24]), [16]byte(h[24:40]), h[6], pl))
	return frame
}

// Partial returns a copy of a TCP or UDP frame (IPv4 without options, or
// IPv6 without extension headers; tags allowed) as a sender that offloads
// checksums hands it to a veth (CHECKSUM_PARTIAL): the L4 checksum field
// holds the folded pseudo-header sum, not complemented, as
// tcp_v4_send_check and udp4_hwcsum store it. It panics on any other frame
// (a test's mistake).
func Partial(frame []byte) []byte {
	b := append([]byte(nil), frame...)
	ip := b[ethHdrLen(b):]
	var proto uint8
	var l4 []byte
	var ps uint32
	switch ip[0] >> 4 {
	case 4:
		if ip[0] != 0x45 {
			panic("packettest.Partial: IPv4 options")
		}
		proto = ip[9]
		l4 = ip[20:binary.BigEndian.Uint16(ip[2:])]
		ps = pseudo4([4]byte(ip[12:16]), [4]byte(ip[16:20]), proto, len(l4))
	case 6:
		proto = ip[6]
		l4 = ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:]))]
		ps = pseudo6([16]byte(ip[8:24]), [16]byte(ip[24:40]), proto, len(l4))
	}
	off := map[uint8]int{packet.ProtoTCP: 16, packet.ProtoUDP: 6}
	o, ok := off[proto]
	if !ok {
		panic("packettest.Partial: not TCP or UDP")
	}
	binary.BigEndian.PutUint16(l4[o:], ^checksum(ps))
	return b
}
