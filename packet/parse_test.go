package packet_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

const (
	c4, s4 = "10.0.0.1", "10.0.0.2"
	c6, s6 = "2001:db8::1", "2001:db8::2"
	r4     = "192.0.2.254"
	r6     = "2001:db8:ff::1"
)

var (
	synFields = pt.TCPFields{
		Flags: packet.TCPSyn, Seq: 1000, Window: 65535,
		MSS: 1460, HasWScale: true, WScale: 7, SACKPerm: true, TS: true, TSVal: 11, TSEcr: 0,
	}
	dataFields = pt.TCPFields{
		Flags: packet.TCPAck | packet.TCPPsh, Seq: 1001, Ack: 5001, Window: 512,
		TS: true, TSVal: 12, TSEcr: 13,
		SACK:    []packet.SACKBlock{{Left: 100, Right: 200}, {Left: 300, Right: 400}},
		Payload: []byte("GET / HTTP/1.0\r\n\r\n"),
	}
)

// edit returns a copy of frame with f applied.
func edit(frame []byte, f func(b []byte)) []byte {
	b := append([]byte(nil), frame...)
	f(b)
	return b
}

// cut returns the first n bytes of a copy of frame.
func cut(frame []byte, n int) []byte { return append([]byte(nil), frame[:n]...) }

// setIPv4Len sets the IPv4 total length of an untagged frame.
func setIPv4Len(b []byte, n int) { binary.BigEndian.PutUint16(b[14+2:], uint16(n)) }

type parseCase struct {
	name    string
	frame   []byte
	wireLen int
	verify  bool
	want    packet.Reason
	check   func(t *testing.T, p *packet.Packet, frame []byte)
}

func parseCases() []parseCase {
	syn4 := pt.TCP4(c4, s4, 40000, 80, synFields)
	data4 := pt.TCP4(c4, s4, 40000, 80, dataFields)
	syn6 := pt.TCP6(c6, s6, 40000, 25, synFields)
	udp4 := pt.UDP4(c4, s4, 5353, 53, []byte("query..."))
	udp6 := pt.UDP6(c6, s6, 5353, 53, []byte("query..."))
	echo4 := pt.ICMP4Echo(c4, s4, 8, 0x4242, 7, []byte("ping"))
	echo6 := pt.ICMP6Echo(c6, s6, 128, 0x4343, 9, []byte("ping"))
	big4 := pt.UDP4(c4, s4, 700, 2049, bytes.Repeat([]byte{0xab}, 100))
	big6 := pt.UDP6(c6, s6, 700, 2049, bytes.Repeat([]byte{0xcd}, 100))
	unreach4 := pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(udp4, 28))
	ext6 := pt.Ext6(pt.Ext6(pt.Ext6(pt.Ext6(syn6, packet.ProtoAH, make([]byte, 10)),
		packet.ProtoRouting, make([]byte, 6)), packet.ProtoDestOpts, make([]byte, 6)), packet.ProtoHopByHop, make([]byte, 6))

	return []parseCase{
		// Layer 2.
		{name: "arp is not ip", frame: edit(udp4, func(b []byte) { b[12], b[13] = 0x08, 0x06 }), want: packet.ReasonNotIP,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "EtherType", p.EtherType, packet.EtherTypeARP)
				eq(t, "IPVersion", p.IPVersion, uint8(0))
			}},
		{name: "empty frame", frame: nil, want: packet.ReasonTruncatedEthernet},
		{name: "13-byte frame", frame: cut(udp4, 13), want: packet.ReasonTruncatedEthernet},
		{name: "dot1q", frame: pt.VLAN(udp4, packet.EtherTypeVLAN, 123), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "VLAN", p.VLAN, uint16(123))
				eq(t, "OuterVLAN", p.OuterVLAN, uint16(0))
				eq(t, "VLANTags", p.VLANTags, uint8(1))
				eq(t, "L3Off", p.L3Off, uint16(18))
				eq(t, "DstPort", p.DstPort, uint16(53))
			}},
		{name: "qinq 88a8", frame: pt.VLAN(pt.VLAN(udp4, packet.EtherTypeVLAN, 20), packet.EtherTypeQinQ, 10), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "VLAN", p.VLAN, uint16(20))
				eq(t, "OuterVLAN", p.OuterVLAN, uint16(10))
				eq(t, "VLANTags", p.VLANTags, uint8(2))
				eq(t, "L4Off", p.L4Off, uint16(14+8+20))
			}},
		{name: "qinq 9100", frame: pt.VLAN(pt.VLAN(echo6, packet.EtherTypeVLAN, 4095), packet.EtherTypeQinQOld, 1), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "VLAN", p.VLAN, uint16(4095))
				eq(t, "OuterVLAN", p.OuterVLAN, uint16(1))
				eq(t, "ICMP.ID", p.ICMP.ID, uint16(0x4343))
			}},
		{name: "three tags", frame: pt.VLAN(pt.VLAN(pt.VLAN(udp4, packet.EtherTypeVLAN, 3), packet.EtherTypeVLAN, 2), packet.EtherTypeQinQ, 1),
			want: packet.ReasonTooManyVLANTags},
		{name: "tag cut short", frame: cut(pt.VLAN(udp4, packet.EtherTypeVLAN, 5), 16), want: packet.ReasonTruncatedVLAN},

		// IPv4.
		{name: "ipv4 header cut", frame: cut(udp4, 14+19), want: packet.ReasonTruncatedIPv4},
		{name: "ipv4 version 5", frame: edit(udp4, func(b []byte) { b[14] = 0x55 }), want: packet.ReasonIPv4BadVersion},
		{name: "ipv4 ihl 4", frame: edit(udp4, func(b []byte) { b[14] = 0x44 }), want: packet.ReasonIPv4BadIHL},
		{name: "ipv4 ihl beyond frame", frame: edit(cut(udp4, 14+24), func(b []byte) { b[14] = 0x47 }), want: packet.ReasonIPv4BadIHL},
		{name: "ipv4 options cut by snaplen", frame: cut(pt.IPv4Options(udp4, make([]byte, 8)), 14+24), wireLen: len(udp4) + 8,
			want: packet.ReasonTruncatedIPv4},
		{name: "ipv4 total length below ihl", frame: edit(udp4, func(b []byte) { setIPv4Len(b, 19) }), want: packet.ReasonIPv4BadLength},
		{name: "ipv4 total length beyond wire", frame: edit(udp4, func(b []byte) { setIPv4Len(b, len(udp4)-14+1) }), want: packet.ReasonIPv4BadLength},
		{name: "ipv4 total length beyond wire length", frame: cut(udp4, 40), wireLen: 41, want: packet.ReasonIPv4BadLength},
		{name: "ipv4 options", frame: pt.IPv4Options(syn4, []byte{1, 1, 1, 1, 1}), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "L4Off", p.L4Off, uint16(14+28))
				eq(t, "TCP.MSS", p.TCP.MSS, uint16(1460))
				eq(t, "ChecksumOK", p.ChecksumOK, true)
			}},
		{name: "ethernet padding ignored", frame: append(pt.UDP4(c4, s4, 1, 2, nil), make([]byte, 18)...), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "IPLen", p.IPLen, uint32(28))
				eq(t, "PayloadLen", p.PayloadLen, uint32(0))
				eq(t, "len(Payload)", len(p.Payload(f)), 0)
				eq(t, "ChecksumOK", p.ChecksumOK, true)
			}},
		{name: "wire length below captured is ignored", frame: udp4, wireLen: 20, want: packet.ReasonOK},

		// IPv4 fragments.
		{name: "ipv4 first fragment", frame: pt.Frag4(big4, 0, 48, true), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Fragment", p.Fragment, true)
				eq(t, "MoreFrags", p.MoreFrags, true)
				eq(t, "FragOffset", p.FragOffset, uint16(0))
				eq(t, "FragID", p.FragID, uint32(pt.IPID))
				eq(t, "DstPort", p.DstPort, uint16(2049))
				eq(t, "PayloadLen", p.PayloadLen, uint32(40))
				eq(t, "ChecksumChecked", p.ChecksumChecked, false)
			}},
		{name: "ipv4 last fragment", frame: pt.Frag4(big4, 48, 100, false), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Fragment", p.Fragment, true)
				eq(t, "MoreFrags", p.MoreFrags, false)
				eq(t, "FragOffset", p.FragOffset, uint16(48))
				eq(t, "DstPort", p.DstPort, uint16(0))
				eq(t, "L4Off", p.L4Off, uint16(34))
				eq(t, "PayloadOff", p.PayloadOff, uint16(34))
				eq(t, "PayloadLen", p.PayloadLen, uint32(108-48))
			}},
		{name: "ipv4 tiny first fragment tcp", frame: pt.Frag4(syn4, 0, 16, true), want: packet.ReasonTinyFragment},
		{name: "ipv4 tiny first fragment udp", frame: edit(pt.Frag4(big4, 0, 8, true), func(b []byte) {
			setIPv4Len(b, 20+4)
		})[:14+24], want: packet.ReasonTinyFragment},
		{name: "ipv4 first fragment cut in tcp options", frame: pt.Frag4(syn4, 0, 24, true), want: packet.ReasonTinyFragment},

		// IPv6.
		{name: "ipv6 header cut", frame: cut(udp6, 14+39), want: packet.ReasonTruncatedIPv6},
		{name: "ipv6 version 4", frame: edit(udp6, func(b []byte) { b[14] = 0x40 }), want: packet.ReasonIPv6BadVersion},
		{name: "ipv6 payload length beyond wire", frame: edit(udp6, func(b []byte) { b[14+5]++ }), want: packet.ReasonIPv6BadLength},
		{name: "ipv6 ext chain", frame: ext6, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Proto", p.Proto, packet.ProtoTCP)
				eq(t, "L4Off", p.L4Off, uint16(14+40+8+8+8+12))
				eq(t, "IPLen", p.IPLen, uint32(40+36+40))
				eq(t, "TCP.WScale", p.TCP.WScale, uint8(7))
				eq(t, "ChecksumOK", p.ChecksumOK, true)
			}},
		{name: "ipv6 hop-by-hop not first", frame: pt.Ext6(pt.Ext6(syn6, packet.ProtoHopByHop, nil), packet.ProtoDestOpts, nil),
			want: packet.ReasonIPv6ExtChain},
		{name: "ipv6 chain too long", frame: func() []byte {
			f := syn6
			for i := 0; i <= packet.MaxIPv6ExtHeaders; i++ {
				f = pt.Ext6(f, packet.ProtoDestOpts, nil)
			}
			return f
		}(), want: packet.ReasonIPv6ExtChain},
		{name: "ipv6 ext header beyond payload", frame: edit(pt.Ext6(udp6, packet.ProtoDestOpts, nil), func(b []byte) { b[14+40+1] = 10 }),
			want: packet.ReasonIPv6ExtChain},
		{name: "ipv6 ext header cut by capture", frame: cut(pt.Ext6(udp6, packet.ProtoDestOpts, nil), 14+41), wireLen: 14 + 40 + 8 + 16,
			want: packet.ReasonIPv6ExtChain},
		{name: "ipv6 no next header", frame: edit(udp6, func(b []byte) { b[14+6] = packet.ProtoNoNext }), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "Proto", p.Proto, packet.ProtoNoNext)
				eq(t, "L4Off", p.L4Off, uint16(54))
				eq(t, "DstPort", p.DstPort, uint16(0))
				eq(t, "len(Payload)", len(p.Payload(f)), 0)
			}},
		{name: "ipv6 first fragment", frame: pt.Frag6(big6, 0xdeadbeef, 0, 56, true), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Fragment", p.Fragment, true)
				eq(t, "FragID", p.FragID, uint32(0xdeadbeef))
				eq(t, "Proto", p.Proto, packet.ProtoUDP)
				eq(t, "SrcPort", p.SrcPort, uint16(700))
				eq(t, "ChecksumChecked", p.ChecksumChecked, false)
			}},
		{name: "ipv6 non-first fragment", frame: pt.Frag6(big6, 7, 56, 100, false), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "FragOffset", p.FragOffset, uint16(56))
				eq(t, "MoreFrags", p.MoreFrags, false)
				eq(t, "Proto", p.Proto, packet.ProtoUDP)
				eq(t, "L4Off", p.L4Off, uint16(14+48))
				eq(t, "PayloadLen", p.PayloadLen, uint32(108-56))
				eq(t, "SrcPort", p.SrcPort, uint16(0))
			}},
		{name: "ipv6 tiny first fragment", frame: pt.Frag6(syn6, 1, 0, 8, true), want: packet.ReasonTinyFragment},

		// TCP.
		{name: "tcp syn options", frame: syn4, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Src", p.Src.String(), c4)
				eq(t, "Dst", p.Dst.String(), s4)
				eq(t, "TTL", p.TTL, uint8(pt.TTL))
				eq(t, "SrcPort", p.SrcPort, uint16(40000))
				eq(t, "DstPort", p.DstPort, uint16(80))
				eq(t, "Flags", p.TCP.Flags, packet.TCPSyn)
				eq(t, "Seq", p.TCP.Seq, uint32(1000))
				eq(t, "Window", p.TCP.Window, uint16(65535))
				eq(t, "MSS", p.TCP.MSS, uint16(1460))
				eq(t, "WScale", p.TCP.WScale, uint8(7))
				eq(t, "SACKPerm", p.TCP.SACKPerm, true)
				eq(t, "HasTS", p.TCP.HasTS, true)
				eq(t, "TSVal", p.TCP.TSVal, uint32(11))
				eq(t, "DataOff", p.TCP.DataOff, uint8(40))
				eq(t, "OptsBroken", p.TCP.OptsBroken, false)
				eq(t, "ChecksumOK", p.ChecksumOK, true)
				eq(t, "PayloadLen", p.PayloadLen, uint32(0))
			}},
		{name: "tcp data with sack", frame: data4, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "Ack", p.TCP.Ack, uint32(5001))
				eq(t, "Flags", p.TCP.Flags, packet.TCPAck|packet.TCPPsh)
				eq(t, "WScale", p.TCP.WScale, packet.WScaleAbsent)
				eq(t, "NumSACK", p.TCP.NumSACK, uint8(2))
				eq(t, "SACK[1]", p.TCP.SACK[1], packet.SACKBlock{Left: 300, Right: 400})
				eq(t, "TSEcr", p.TCP.TSEcr, uint32(13))
				eq(t, "Payload", string(p.Payload(f)), string(dataFields.Payload))
				eq(t, "PayloadLen", p.PayloadLen, uint32(len(dataFields.Payload)))
			}},
		{name: "tcp four sack blocks", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPAck,
			SACK: []packet.SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}}), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "NumSACK", p.TCP.NumSACK, uint8(4))
				eq(t, "SACK[3]", p.TCP.SACK[3], packet.SACKBlock{Left: 7, Right: 8})
			}},
		{name: "tcp two sack options: the first counts (kernel tcp_sack)", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPAck,
			SACK: []packet.SACKBlock{{10, 20}},
			Opts: []byte{1, 1, 5, 10, 0, 0, 0, 30, 0, 0, 0, 90}}), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "NumSACK", p.TCP.NumSACK, uint8(1))
				eq(t, "SACK[0]", p.TCP.SACK[0], packet.SACKBlock{Left: 10, Right: 20})
			}},
		{name: "tcp wscale 255 not clamped", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPSyn, HasWScale: true, WScale: 255}),
			want:  packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) { eq(t, "WScale", p.TCP.WScale, uint8(255)) }},
		{name: "tcp option with length 1", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPSyn, MSS: 536, Opts: []byte{3, 1, 7, 0}}),
			verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "OptsBroken", p.TCP.OptsBroken, true)
				eq(t, "MSS", p.TCP.MSS, uint16(536))
				eq(t, "WScale", p.TCP.WScale, packet.WScaleAbsent)
			}},
		{name: "tcp option at wrong length ignored", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPSyn, Opts: []byte{3, 4, 7, 0}}),
			want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "OptsBroken", p.TCP.OptsBroken, false)
				eq(t, "WScale", p.TCP.WScale, packet.WScaleAbsent)
			}},
		{name: "tcp options cut by snaplen", frame: cut(syn4, 14+20+20+9), wireLen: len(syn4), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "OptsBroken", p.TCP.OptsBroken, true)
				eq(t, "Truncated", p.Truncated, true)
				eq(t, "MSS", p.TCP.MSS, uint16(1460))
				eq(t, "SACKPerm", p.TCP.SACKPerm, true)
				eq(t, "HasTS", p.TCP.HasTS, false)
				eq(t, "ChecksumChecked", p.ChecksumChecked, false)
				eq(t, "Payload", len(p.Payload(f)), 0)
			}},
		{name: "tcp payload cut by snaplen", frame: cut(data4, len(data4)-10), wireLen: len(data4), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "PayloadLen", p.PayloadLen, uint32(len(dataFields.Payload)))
				eq(t, "len(Payload)", len(p.Payload(f)), len(dataFields.Payload)-10)
				eq(t, "IPLen", p.IPLen, uint32(len(data4)-14))
				eq(t, "Truncated", p.Truncated, true)
			}},
		{name: "tcp header cut by snaplen", frame: cut(syn4, 14+20+19), wireLen: len(syn4), want: packet.ReasonTruncatedTCP},
		{name: "tcp segment shorter than 20", frame: edit(cut(syn4, 14+20+19), func(b []byte) { setIPv4Len(b, 39) }), want: packet.ReasonTruncatedTCP},
		{name: "tcp data offset 16 bytes", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPSyn, DataOff: 4}), want: packet.ReasonTCPBadDataOffset},
		{name: "tcp data offset beyond segment", frame: pt.TCP4(c4, s4, 1, 2, pt.TCPFields{Flags: packet.TCPSyn, DataOff: 6}), want: packet.ReasonTCPBadDataOffset},
		{name: "tcp bad checksum", frame: edit(data4, func(b []byte) { b[len(b)-1] ^= 1 }), verify: true, want: packet.ReasonBadChecksum,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "ChecksumChecked", p.ChecksumChecked, true)
				eq(t, "ChecksumOK", p.ChecksumOK, false)
				eq(t, "DstPort", p.DstPort, uint16(80))
			}},
		{name: "tcp bad checksum not verified", frame: edit(data4, func(b []byte) { b[len(b)-1] ^= 1 }), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) { eq(t, "ChecksumChecked", p.ChecksumChecked, false) }},
		{name: "tcp6 bad checksum", frame: edit(syn6, func(b []byte) { b[14+40+4] ^= 0x80 }), verify: true, want: packet.ReasonBadChecksum},

		// UDP.
		{name: "udp", frame: udp4, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "SrcPort", p.SrcPort, uint16(5353))
				eq(t, "DstPort", p.DstPort, uint16(53))
				eq(t, "Payload", string(p.Payload(f)), "query...")
				eq(t, "ChecksumOK", p.ChecksumOK, true)
			}},
		{name: "udp6", frame: udp6, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) {
				eq(t, "Src", p.Src.String(), c6)
				eq(t, "PayloadOff", p.PayloadOff, uint16(14+40+8))
				eq(t, "ChecksumOK", p.ChecksumOK, true)
			}},
		{name: "udp4 zero checksum is none", frame: edit(udp4, func(b []byte) { b[14+26], b[14+27] = 0, 0 }), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) { eq(t, "ChecksumChecked", p.ChecksumChecked, false) }},
		{name: "udp6 zero checksum is bad", frame: edit(udp6, func(b []byte) { b[14+46], b[14+47] = 0, 0 }), verify: true, want: packet.ReasonBadChecksum},
		{name: "udp length below 8", frame: edit(udp4, func(b []byte) { b[14+25] = 7 }), want: packet.ReasonUDPBadLength},
		{name: "udp length beyond payload", frame: edit(udp4, func(b []byte) { b[14+25] = 17 }), want: packet.ReasonUDPBadLength},
		{name: "udp length short of payload", frame: edit(udp4, func(b []byte) { b[14+25] = 10 }), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, f []byte) { eq(t, "Payload", string(p.Payload(f)), "qu") }},
		{name: "udp header cut", frame: edit(cut(udp4, 14+27), func(b []byte) { setIPv4Len(b, 27) }), want: packet.ReasonTruncatedUDP},
		{name: "udp header cut by snaplen", frame: cut(udp4, 14+27), wireLen: len(udp4), want: packet.ReasonTruncatedUDP},
		{name: "sctp ports", frame: pt.IPv4(c4, s4, packet.ProtoSCTP, []byte{0, 1, 0, 2, 0, 0, 0, 0}), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Proto", p.Proto, packet.ProtoSCTP)
				eq(t, "DstPort", p.DstPort, uint16(2))
			}},
		{name: "gre generic", frame: pt.IPv4(c4, s4, 47, []byte{1, 2, 3, 4}), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Proto", p.Proto, uint8(47))
				eq(t, "PayloadOff", p.PayloadOff, uint16(34))
				eq(t, "PayloadLen", p.PayloadLen, uint32(4))
			}},

		// ICMP.
		{name: "icmp echo", frame: echo4, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "ICMP", p.ICMP, packet.ICMP{Type: 8, ID: 0x4242, Seq: 7})
				eq(t, "HasInner", p.HasInner, false)
				eq(t, "ChecksumOK", p.ChecksumOK, true)
				eq(t, "IsICMPError", p.IsICMPError(), false)
			}},
		{name: "icmp header cut", frame: edit(cut(echo4, 14+27), func(b []byte) { setIPv4Len(b, 27) }), want: packet.ReasonTruncatedICMP},
		{name: "icmp bad checksum", frame: edit(echo4, func(b []byte) { b[len(b)-1]++ }), verify: true, want: packet.ReasonBadChecksum},
		{name: "icmp port unreachable quoting udp", frame: unreach4, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "IsICMPError", p.IsICMPError(), true)
				eq(t, "HasInner", p.HasInner, true)
				eq(t, "Inner.Src", p.Inner.Src.String(), c4)
				eq(t, "Inner.Dst", p.Inner.Dst.String(), s4)
				eq(t, "Inner.Proto", p.Inner.Proto, packet.ProtoUDP)
				eq(t, "Inner.SrcPort", p.Inner.SrcPort, uint16(5353))
				eq(t, "Inner.DstPort", p.Inner.DstPort, uint16(53))
			}},
		{name: "icmp frag needed quoting tcp with options", frame: pt.ICMP4Error(r4, c4, 3, 4, pt.Quote(pt.IPv4Options(syn4, []byte{1, 1, 1, 1}), 32)),
			verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Inner.Proto", p.Inner.Proto, packet.ProtoTCP)
				eq(t, "Inner.DstPort", p.Inner.DstPort, uint16(80))
			}},
		{name: "icmp time exceeded quoting echo", frame: pt.ICMP4Error(r4, c4, 11, 0, pt.Quote(echo4, 28)), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Inner.ICMP", p.Inner.ICMP, packet.ICMP{Type: 8, ID: 0x4242, Seq: 7})
				eq(t, "Inner.SrcPort", p.Inner.SrcPort, uint16(0))
			}},
		{name: "icmp quoting non-first fragment", frame: pt.ICMP4Error(r4, c4, 11, 1, pt.Quote(pt.Frag4(big4, 48, 100, false), 28)), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "HasInner", p.HasInner, true)
				eq(t, "Inner.NonFirstFragment", p.Inner.NonFirstFragment, true)
				eq(t, "Inner.DstPort", p.Inner.DstPort, uint16(0))
			}},
		{name: "icmp quoting 3 udp bytes", frame: pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(udp4, 23)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "HasInner", p.HasInner, false)
				eq(t, "InnerReason", p.InnerReason, packet.ReasonTruncatedUDP)
				eq(t, "ICMP.Type", p.ICMP.Type, uint8(3))
			}},
		{name: "icmp quoting 3 tcp bytes", frame: pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(syn4, 23)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonTruncatedTCP)
			}},
		{name: "icmp quoting 7 icmp bytes", frame: pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(echo4, 27)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonTruncatedICMP)
			}},
		{name: "icmp quoting 10 bytes", frame: pt.ICMP4Error(r4, c4, 12, 0, pt.Quote(udp4, 10)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonTruncatedIPv4)
			}},
		{name: "icmp quoting ipv6", frame: pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(udp6, 48)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonIPv4BadVersion)
			}},
		{name: "icmp quoting bad ihl", frame: pt.ICMP4Error(r4, c4, 3, 3, edit(pt.Quote(udp4, 28), func(b []byte) { b[0] = 0x48 })),
			want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonIPv4BadIHL)
			}},

		// ICMPv6.
		{name: "icmp6 echo", frame: echo6, verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "ICMP", p.ICMP, packet.ICMP{Type: 128, ID: 0x4343, Seq: 9})
				eq(t, "ChecksumOK", p.ChecksumOK, true)
			}},
		{name: "icmp6 bad checksum", frame: edit(echo6, func(b []byte) { b[len(b)-1]++ }), verify: true, want: packet.ReasonBadChecksum},
		{name: "icmp6 neighbour solicitation", frame: pt.NeighborSolicit("fe80::1", "ff02::1:ff00:2", "fe80::2"), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "ICMP.Type", p.ICMP.Type, uint8(135))
				eq(t, "TTL", p.TTL, uint8(255))
				eq(t, "HasInner", p.HasInner, false)
			}},
		{name: "icmp6 port unreachable quoting udp", frame: pt.ICMP6Error(r6, c6, 1, 4, 0, pt.Quote(udp6, 48)), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Inner.IPVersion", p.Inner.IPVersion, uint8(6))
				eq(t, "Inner.Src", p.Inner.Src.String(), c6)
				eq(t, "Inner.DstPort", p.Inner.DstPort, uint16(53))
			}},
		{name: "icmp6 packet too big quoting tcp with ext headers", frame: pt.ICMP6Error(r6, c6, 2, 0, 1280, pt.Quote(ext6, 40+40+8)),
			verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Inner.Proto", p.Inner.Proto, packet.ProtoTCP)
				eq(t, "Inner.DstPort", p.Inner.DstPort, uint16(25))
				eq(t, "ICMP.ID<<16|Seq", uint32(p.ICMP.ID)<<16|uint32(p.ICMP.Seq), uint32(1280))
			}},
		{name: "icmp6 time exceeded quoting echo", frame: pt.ICMP6Error(r6, c6, 3, 0, 0, pt.Quote(echo6, 48)), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Inner.ICMP", p.Inner.ICMP, packet.ICMP{Type: 128, ID: 0x4343, Seq: 9})
			}},
		{name: "icmp6 quoting non-first fragment", frame: pt.ICMP6Error(r6, c6, 3, 1, 0, pt.Quote(pt.Frag6(big6, 1, 56, 100, false), 56)),
			want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "Inner.NonFirstFragment", p.Inner.NonFirstFragment, true)
			}},
		{name: "icmp6 quoting cut ext chain", frame: pt.ICMP6Error(r6, c6, 1, 4, 0, pt.Quote(ext6, 41)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonIPv6ExtChain)
			}},
		{name: "icmp6 quoting 39 bytes", frame: pt.ICMP6Error(r6, c6, 1, 4, 0, pt.Quote(udp6, 39)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonTruncatedIPv6)
			}},
		{name: "icmp6 quoting ipv4", frame: pt.ICMP6Error(r6, c6, 1, 4, 0, pt.Quote(big4, 48)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonIPv6BadVersion)
			}},
		{name: "icmp6 redirect", frame: pt.Redirect6("fe80::1", "fe80::2", "fe80::3", s6, pt.Quote(udp6, 48)), verify: true, want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "HasInner", p.HasInner, true)
				eq(t, "Inner.Dst", p.Inner.Dst.String(), s6)
				eq(t, "Inner.SrcPort", p.Inner.SrcPort, uint16(5353))
			}},
		{name: "icmp6 redirect without header option", frame: pt.ICMP6(r6, c6, 137, 0, 0, make([]byte, 32)), want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonICMPBadInner)
			}},
		// nf_conntrack_icmpv6_redirect reads only the first option: a
		// Target Link-Layer Address option ahead of the redirected header
		// (as Linux routers send) leaves the redirect without a quote.
		{name: "icmp6 redirect with target link-layer option first",
			frame: pt.Redirect6Options("fe80::1", "fe80::2", "fe80::3", s6, pt.TargetLLAOption(pt.SrcMAC), pt.Quote(udp6, 48)), verify: true,
			want: packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonICMPBadInner)
				eq(t, "HasInner", p.HasInner, false)
				eq(t, "ICMP.Type", p.ICMP.Type, uint8(137))
			}},
		{name: "icmp6 redirect with redirected header first, then target link-layer option",
			frame: pt.Redirect6Options("fe80::1", "fe80::2", "fe80::3", s6, append(redirectedHeaderOption(pt.Quote(udp6, 48)), pt.TargetLLAOption(pt.SrcMAC)...), nil), verify: true,
			want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "HasInner", p.HasInner, true)
				eq(t, "Inner.Dst", p.Inner.Dst.String(), s6)
				eq(t, "Inner.SrcPort", p.Inner.SrcPort, uint16(5353))
			}},
		// The quote runs from the option's 8-byte header to the end of the
		// message, whatever the option's length says (the kernel hands
		// that offset to nf_conntrack_inet_error).
		{name: "icmp6 redirect whose header option is shorter than its quote",
			frame: pt.Redirect6Options("fe80::1", "fe80::2", "fe80::3", s6, append([]byte{4, 1, 0, 0, 0, 0, 0, 0}, pt.Quote(udp6, 48)...), nil), verify: true,
			want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "HasInner", p.HasInner, true)
				eq(t, "Inner.SrcPort", p.Inner.SrcPort, uint16(5353))
			}},
		{name: "icmp6 redirect with a zero-length first option",
			frame: pt.Redirect6Options("fe80::1", "fe80::2", "fe80::3", s6, []byte{4, 0, 0, 0, 0, 0, 0, 0}, pt.Quote(udp6, 48)),
			want:  packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonICMPBadInner)
			}},
		{name: "icmp6 redirect cut inside its redirected header option",
			frame: pt.Redirect6Options("fe80::1", "fe80::2", "fe80::3", s6, []byte{4, 7, 0, 0}, nil),
			want:  packet.ReasonICMPBadInner,
			check: func(t *testing.T, p *packet.Packet, _ []byte) {
				eq(t, "InnerReason", p.InnerReason, packet.ReasonTruncatedIPv6)
			}},
		{name: "icmp over ipv6 is generic", frame: pt.IPv6(c6, s6, packet.ProtoICMP, make([]byte, 8)), want: packet.ReasonOK,
			check: func(t *testing.T, p *packet.Packet, _ []byte) { eq(t, "PayloadOff", p.PayloadOff, uint16(54)) }},
	}
}

func TestParse(t *testing.T) {
	seen := map[packet.Reason]bool{}
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			var p packet.Packet
			got := packet.Parse(tc.frame, tc.wireLen, packet.Options{VerifyChecksum: tc.verify}, &p)
			seen[got] = true
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			checkBounds(t, &p, tc.frame, tc.wireLen)
			if tc.check != nil {
				tc.check(t, &p, tc.frame)
			}
		})
	}
	t.Run("every reason reachable", func(t *testing.T) {
		for r := packet.Reason(0); r < packet.NumReasons; r++ {
			switch r {
			case packet.ReasonFragmentOverlap, packet.ReasonNonFirstFragment:
				continue // given by the fragment tracker, not by Parse
			}
			if !seen[r] {
				t.Errorf("no case returns %v", r)
			}
		}
	})
}

// checkBounds checks the invariants every parse result keeps, whatever the
// input: offsets within the datagram, accessors safe.
func checkBounds(t testing.TB, p *packet.Packet, frame []byte, wireLen int) {
	t.Helper()
	wire := max(wireLen, len(frame))
	if int(p.L3Off) > len(frame) {
		t.Fatalf("L3Off %d beyond frame of %d bytes", p.L3Off, len(frame))
	}
	if p.IPVersion != 0 {
		end := int(p.L3Off) + int(p.IPLen)
		if end > wire {
			t.Fatalf("IP end %d beyond wire length %d", end, wire)
		}
		if int(p.L4Off) > end || int(p.PayloadOff) > end {
			t.Fatalf("L4Off %d / PayloadOff %d beyond IP end %d", p.L4Off, p.PayloadOff, end)
		}
		if p.PayloadLen != 0 && int(p.PayloadOff)+int(p.PayloadLen) > end {
			t.Fatalf("payload [%d,+%d) beyond IP end %d", p.PayloadOff, p.PayloadLen, end)
		}
	}
	pl := p.Payload(frame)
	if len(pl) > int(p.PayloadLen) {
		t.Fatalf("Payload has %d bytes, PayloadLen %d", len(pl), p.PayloadLen)
	}
	_ = p.L4(frame)
}

func TestReasonString(t *testing.T) {
	names := map[string]bool{}
	for r := packet.Reason(0); r < packet.NumReasons; r++ {
		s := r.String()
		if s == "unknown" || s == "" || names[s] {
			t.Errorf("Reason(%d).String() = %q: want a unique name", r, s)
		}
		names[s] = true
	}
	eq(t, "NumReasons.String()", packet.NumReasons.String(), "unknown")
}

func TestParseResetsPacket(t *testing.T) {
	var p packet.Packet
	packet.Parse(pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(pt.TCP4(c4, s4, 1, 2, synFields), 28)), 0, packet.Options{}, &p)
	packet.Parse(pt.UDP4(c4, s4, 1, 2, nil), 0, packet.Options{}, &p)
	eq(t, "HasInner", p.HasInner, false)
	eq(t, "TCP.MSS", p.TCP.MSS, uint16(0))
	eq(t, "TCP.WScale", p.TCP.WScale, packet.WScaleAbsent)
	eq(t, "ICMP.Type", p.ICMP.Type, uint8(0))
}

func TestAddr(t *testing.T) {
	a := packet.AddrFrom4([4]byte{192, 0, 2, 1})
	eq(t, "String", a.String(), "192.0.2.1")
	eq(t, "IsIPv4", a.IsIPv4(), true)
	b := packet.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	eq(t, "String", b.String(), "2001:db8::1")
	eq(t, "IsIPv4", b.IsIPv4(), false)
	eq(t, "round trip", packet.AddrFromNetip(b.Netip()), b)
	eq(t, "round trip v4", packet.AddrFromNetip(a.Netip()), a)
	eq(t, "zero netip", packet.AddrFromNetip(packet.Addr{}.Netip().Unmap()), packet.Addr{})
}

func TestPayloadNeverPanics(t *testing.T) {
	frame := make([]byte, 50)
	for _, p := range []packet.Packet{
		{PayloadOff: 60, PayloadLen: 10},
		{PayloadOff: 50, PayloadLen: 1},
		{PayloadOff: 40, PayloadLen: 100},
		{PayloadOff: 0xffff, PayloadLen: 0xffffffff},
		{IPVersion: 4, L3Off: 14, L4Off: 60, IPLen: 10},
		{IPVersion: 4, L3Off: 14, L4Off: 34, IPLen: 10},
	} {
		pl := p.Payload(frame)
		if len(pl) > len(frame) {
			t.Errorf("Payload of %+v: %d bytes", p, len(pl))
		}
		_ = p.L4(frame)
	}
	p := packet.Packet{PayloadOff: 40, PayloadLen: 100}
	eq(t, "len(Payload) cut to frame", len(p.Payload(frame)), 10)
}

// redirectedHeaderOption is an ND Redirected Header option (type 4) quoting
// quoted, padded to 8 bytes (as packettest.Redirect6 builds it).
func redirectedHeaderOption(quoted []byte) []byte {
	n := (8 + len(quoted) + 7) / 8 * 8
	opt := make([]byte, n)
	opt[0], opt[1] = 4, byte(n/8)
	copy(opt[8:], quoted)
	return opt
}
