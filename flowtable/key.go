package flowtable

import (
	"encoding/binary"

	"github.com/statewire/statewire/packet"
)

// L4 protocols whose tracker keys on ports (kernel: tcp, udp, udplite, sctp,
// dccp). Every other protocol except ICMP/ICMPv6 is generic: addresses and
// protocol only.
const (
	protoDCCP    uint8 = 33
	protoSCTP    uint8 = 132
	protoUDPLite uint8 = 136
)

// Key is the canonical tuple of a connection: both directions of a flow
// produce the same Key, so one lookup finds the entry whatever the direction.
//
// For port protocols (TCP, UDP, UDP-Lite, SCTP, DCCP) the (address, port)
// pairs are ordered: (A, PortA) is the smaller of the two endpoints. For
// generic protocols the ports are zero and the addresses are ordered. For
// ICMP and ICMPv6 A is the requester (source of the request, destination of
// the reply), PortA the identifier and PortB the request type << 8 | code,
// so an echo request and its reply share a key while an echo in the other
// direction with the same identifier is another connection, as in the
// kernel.
//
// The VLAN id is the zone: the same 5-tuple on another VLAN is another
// connection. A table with Config.IgnoreVLAN (--vlan-zones=false) has its
// packets' VLAN ids zeroed by ZoneOf before any key is built, so every
// key's VLAN is 0 there, as in the kernel without zones. Key has no padding (key_test asserts it), so == and the hash
// over its 40 bytes see every field and nothing else.
type Key struct {
	_     [0]uint64 // 8-byte alignment: keys are compared and hashed as five words
	A, B  packet.Addr
	PortA uint16
	PortB uint16
	Proto uint8
	L3    uint8 // 4 or 6
	VLAN  uint16
}

// keySize is the size of Key in bytes; the hash and the comparison read
// exactly this many bytes.
const keySize = 40

// Tuple is one direction of a connection as packets of that direction carry
// it: source, destination, ports. For ICMP and ICMPv6 SrcPort is the
// identifier and DstPort is Type << 8 | Code (see ICMPType, ICMPCode).
// An entry keeps the tuple of its original direction (Entry.Tuple).
type Tuple struct {
	_                [0]uint64
	Src, Dst         packet.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	L3               uint8
	VLAN             uint16
}

// ICMPType returns the ICMP type of an ICMP/ICMPv6 tuple.
func (t *Tuple) ICMPType() uint8 { return uint8(t.DstPort >> 8) }

// ICMPCode returns the ICMP code of an ICMP/ICMPv6 tuple.
func (t *Tuple) ICMPCode() uint8 { return uint8(t.DstPort) }

// ICMPID returns the ICMP identifier of an ICMP/ICMPv6 tuple.
func (t *Tuple) ICMPID() uint16 { return t.SrcPort }

// IsICMP reports whether the tuple is ICMP over IPv4 or ICMPv6 over IPv6,
// whose "ports" are identifier and type/code.
func (t *Tuple) IsICMP() bool { return isICMP(t.Proto, t.L3) }

// HasPorts reports whether the protocol of the tuple has ports.
func (t *Tuple) HasPorts() bool { return hasPorts(t.Proto) }

// IsICMP reports whether the key is ICMP over IPv4 or ICMPv6 over IPv6.
func (k *Key) IsICMP() bool { return isICMP(k.Proto, k.L3) }

func isICMP(proto, l3 uint8) bool { return packet.IsICMP(l3, proto) }

func hasPorts(proto uint8) bool {
	switch proto {
	case packet.ProtoTCP, packet.ProtoUDP, protoUDPLite, protoSCTP, protoDCCP:
		return true
	}
	return false
}

// after reports whether endpoint (a, ap) orders after (b, bp). Any total
// order serves; this one decides on the low address word first, which for
// IPv4-mapped addresses holds the whole address.
func after(a *packet.Addr, ap uint16, b *packet.Addr, bp uint16) bool {
	a1, b1 := binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:])
	if a1 != b1 {
		return a1 > b1
	}
	a0, b0 := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])
	if a0 != b0 {
		return a0 > b0
	}
	return ap > bp
}

// KeyOf returns the key of the connection p belongs to: for an ICMP or
// ICMPv6 error (packet.IsICMPError, redirects included) the connection of
// the packet it quotes, for any other packet its own. Canonical keys make
// the kernel's inversion of a quoted tuple implicit: the quoted packet's
// key is its connection's whichever way it ran. The zone is p's VLAN.
//
// ok is false when there is no such connection to look up: p is not IP or
// is a non-first fragment (no L4 header); p is ICMP of a type that is
// neither a request nor a reply (nothing else makes an entry); p is an
// error whose quote did not parse or is a non-first fragment, or quotes
// ICMP that is neither a request nor a reply (spec §4: INVALID).
//
// Every place that finds the connection of a packet (the pipeline, the
// workers' steering, the test fakes) uses KeyOf or SetOf, so an error and
// the flow it quotes always land on the same shard and entry. Their
// packets went through ZoneOf first, so the zone is the table's.
func KeyOf(p *packet.Packet) (k Key, ok bool) {
	ok = k.SetOf(p)
	return k, ok
}

// SetOf makes k the key KeyOf returns and reports whether p has one (k is
// then unspecified when not). It fills k in place: the datapath builds a
// batch's keys straight into their array instead of copying 40 bytes
// through a return value.
func (k *Key) SetOf(p *packet.Packet) bool {
	if p.Fragment && p.FragOffset != 0 {
		return false
	}
	if !p.IsICMPError() {
		return k.setCanonical(p.IPVersion, p.Proto, &p.Src, &p.Dst, p.SrcPort, p.DstPort, &p.ICMP, p.VLAN)
	}
	in := &p.Inner
	if !p.HasInner || in.NonFirstFragment {
		return false
	}
	return k.setCanonical(in.IPVersion, in.Proto, &in.Src, &in.Dst, in.SrcPort, in.DstPort, &in.ICMP, p.VLAN)
}

// setCanonical makes k the key of one direction's tuple: the same key for
// both directions of a connection. One function serves the outer packet,
// the quoted one and Tuple.Key, so the three can never drift apart.
func (k *Key) setCanonical(l3, proto uint8, src, dst *packet.Addr, sport, dport uint16, icmp *packet.ICMP, vlan uint16) bool {
	if l3 != 4 && l3 != 6 {
		return false
	}
	k.Proto, k.L3, k.VLAN = proto, l3, vlan
	switch {
	case hasPorts(proto):
		if after(src, sport, dst, dport) {
			k.A, k.B, k.PortA, k.PortB = *dst, *src, dport, sport
		} else {
			k.A, k.B, k.PortA, k.PortB = *src, *dst, sport, dport
		}
	case isICMP(proto, l3):
		req, reply, found := packet.ICMPRequestOf(l3, icmp.Type)
		if !found {
			return false
		}
		if reply {
			k.A, k.B = *dst, *src
		} else {
			k.A, k.B = *src, *dst
		}
		k.PortA, k.PortB = icmp.ID, uint16(req)<<8|uint16(icmp.Code)
	default:
		if after(src, 0, dst, 0) {
			k.A, k.B = *dst, *src
		} else {
			k.A, k.B = *src, *dst
		}
		k.PortA, k.PortB = 0, 0
	}
	return true
}

// TupleFromPacket returns the tuple of the packet in its own direction
// (for ICMP with its own type: a reply keeps the reply type). ok is false
// when the packet has no key of its own: as KeyOf for every packet but an
// ICMP error, which has none (its connection is the quoted packet's).
func TupleFromPacket(p *packet.Packet) (t Tuple, ok bool) {
	if p.IPVersion != 4 && p.IPVersion != 6 {
		return t, false
	}
	if p.Fragment && p.FragOffset != 0 {
		return t, false
	}
	t.Src, t.Dst, t.Proto, t.L3, t.VLAN = p.Src, p.Dst, p.Proto, p.IPVersion, p.VLAN
	switch {
	case hasPorts(p.Proto):
		t.SrcPort, t.DstPort = p.SrcPort, p.DstPort
	case isICMP(p.Proto, p.IPVersion):
		if _, _, found := packet.ICMPRequestOf(p.IPVersion, p.ICMP.Type); !found {
			return t, false
		}
		t.SrcPort, t.DstPort = p.ICMP.ID, uint16(p.ICMP.Type)<<8|uint16(p.ICMP.Code)
	}
	return t, true
}

// Key returns the canonical key of the connection the tuple belongs to:
// the key KeyOf gives a packet that carries the tuple. An ICMP tuple of a
// type without a pair belongs to no connection; its key has no addresses.
func (t *Tuple) Key() Key {
	var k Key
	icmp := packet.ICMP{Type: t.ICMPType(), Code: t.ICMPCode(), ID: t.ICMPID()}
	k.setCanonical(t.L3, t.Proto, &t.Src, &t.Dst, t.SrcPort, t.DstPort, &icmp, t.VLAN)
	return k
}

// Reverse returns the tuple of the other direction: addresses and ports
// swapped; for ICMP the identifier and code kept and the type mapped to its
// pair (echo 8 becomes 0), as the kernel inverts a tuple.
func (t Tuple) Reverse() Tuple {
	r := t
	r.Src, r.Dst = t.Dst, t.Src
	if t.IsICMP() {
		typ, _ := packet.ICMPPair(t.L3, t.ICMPType())
		r.DstPort = uint16(typ)<<8 | uint16(t.ICMPCode())
		return r
	}
	r.SrcPort, r.DstPort = t.DstPort, t.SrcPort
	return r
}
