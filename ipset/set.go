package ipset

import (
	"encoding/binary"

	"github.com/statewire/statewire/packet"
)

// Type is a set type of ipset(8).
type Type uint8

// Set types statewire reads.
const (
	HashIP Type = iota + 1
	HashNet
	HashIPPort
	HashNetPort
	BitmapPort
	ListSet
)

var typeNames = [...]string{
	HashIP: "hash:ip", HashNet: "hash:net", HashIPPort: "hash:ip,port",
	HashNetPort: "hash:net,port", BitmapPort: "bitmap:port", ListSet: "list:set",
}

// String returns the type's ipset name ("hash:net").
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "type?"
}

// dimension is the number of --match-set direction flags the type reads
// (ip_set_type.dimension): a rule giving fewer never matches.
func (t Type) dimension() uint8 {
	switch t {
	case HashIP, HashNet, BitmapPort:
		return 1
	case HashIPPort, HashNetPort:
		return 2
	}
	return 0 // list:set: its members check their own
}

// nomatchType says the type has IPSET_TYPE_NOMATCH: entries added with
// nomatch, and --return-nomatch inverts its answers.
func (t Type) nomatchType() bool { return t == HashNet || t == HashNetPort }

// Family of a set: the kernel's NFPROTO_* of the set, 0 for types that
// serve both (bitmap:port, list:set).
const (
	familyAny uint8 = 0
	familyV4  uint8 = 4
	familyV6  uint8 = 6
)

// key is an address in packet.Addr's 16-byte form (IPv4-mapped for IPv4)
// as two big-endian words.
type key struct{ hi, lo uint64 }

func keyOf(a *packet.Addr) key {
	return key{binary.BigEndian.Uint64(a[0:8]), binary.BigEndian.Uint64(a[8:16])}
}

func (k key) and(m key) key { return key{k.hi & m.hi, k.lo & m.lo} }

// maskOf returns the mask of a prefix of bits on the 128-bit form (an IPv4
// prefix /n is /96+n there).
func maskOf(bits int) key {
	var m key
	switch {
	case bits >= 128:
		m = key{^uint64(0), ^uint64(0)}
	case bits > 64:
		m = key{^uint64(0), ^uint64(0) << (128 - bits)}
	case bits > 0:
		m = key{^uint64(0) << (64 - bits), 0}
	}
	return m
}

// pkey is an (address, protocol, port) element of the port types.
type pkey struct {
	a     key
	port  uint16
	proto uint8
}

// level holds the entries of one prefix length of a hash:net or
// hash:net,port set: the kernel's hash:net keeps a list of the prefix
// lengths in use and, for an address, tries each from the longest (the
// first entry found decides, nomatch or not). The value is the entry's
// nomatch flag.
type level[K comparable] struct {
	bits uint8 // prefix length on the set's family (0..32 or 0..128)
	mask key   // on the 16-byte form
	m    map[K]bool
}

// Set is one loaded set. It is immutable once loaded.
type Set struct {
	name   string
	typ    Type
	family uint8
	file   string // where it was created, for error messages
	line   int

	// create options kept for Save.
	hashsize, maxelem uint32
	netmask           uint8 // hash:ip: 0 = host
	size              uint32
	flags             []string // counters, comment, skbinfo, forceadd: accepted, no effect
	timeout           bool     // created with timeout (elements never expire here)

	n int // number of elements

	ips    map[key]struct{}  // hash:ip (masked with netmask)
	nets   []level[key]      // hash:net, longest prefix first
	ipp    map[pkey]struct{} // hash:ip,port
	netp   []level[pkey]     // hash:net,port, longest prefix first
	ipmask key               // hash:ip netmask on the 16-byte form

	first, last uint16   // bitmap:port range
	bits        []uint64 // bitmap:port members, bit (port-first)

	members []*Set // list:set
}

// Name returns the set's name.
func (s *Set) Name() string { return s.name }

// Type returns the set's type.
func (s *Set) Type() Type { return s.typ }

// Len returns the number of elements (ranges and CIDRs of the port and ip
// types expanded, as ipset counts them).
func (s *Set) Len() int { return s.n }

// IPv4 and IPv6 report which packet families the set can hold: a hash set
// is of one family (family inet or inet6), bitmap:port and list:set serve
// both. iptables refuses a rule naming a set of the other family.
func (s *Set) IPv4() bool { return s.family != familyV6 }

// IPv6 reports whether the set can hold IPv6 packets.
func (s *Set) IPv6() bool { return s.family != familyV4 }

// Dir says, per dimension of a --match-set, which address or port is
// taken: bit i set means dimension i+1 is "src", clear "dst". Dims is the
// number of flags given ("src,dst" is 2).
type Dir struct {
	Src  uint8
	Dims uint8
}

// result of one set's lookup, as the kernel's kadt test returns it.
const (
	resNone    = 0  // not in the set (or the packet has no such field)
	resMatch   = 1  // an entry matched
	resNomatch = -1 // the longest entry found is a nomatch entry (-ENOTEMPTY)
)

// Test reports whether packet p is in the set for the directions d, as
// ip_set_test decides it for xt_set: a rule giving fewer directions than
// the type has dimensions, or a packet of the other family, is not in the
// set; with returnNomatch, a hash:net or hash:net,port entry added with
// nomatch matches and a plain entry does not. Test does not allocate and
// is safe for concurrent use.
func (s *Set) Test(p *packet.Packet, d Dir, returnNomatch bool) bool {
	if d.Dims < s.typ.dimension() {
		return false
	}
	switch s.family {
	case familyV4:
		if p.IPVersion != 4 {
			return false
		}
	case familyV6:
		if p.IPVersion != 6 {
			return false
		}
	default:
		if p.IPVersion != 4 && p.IPVersion != 6 {
			return false
		}
	}
	r := s.lookup(p, d, returnNomatch)
	if returnNomatch && s.typ.nomatchType() {
		r = -r
	}
	return r > 0
}

func addrOf(p *packet.Packet, src bool) key {
	if src {
		return keyOf(&p.Src)
	}
	return keyOf(&p.Dst)
}

func (s *Set) lookup(p *packet.Packet, d Dir, returnNomatch bool) int {
	switch s.typ {
	case HashIP:
		a := addrOf(p, d.Src&1 != 0).and(s.ipmask)
		if a.hi == 0 && a.lo == 0 || s.family == familyV4 && a.lo == 0xffff00000000 {
			return resNone // the kernel refuses the any address (-EINVAL)
		}
		if _, ok := s.ips[a]; ok {
			return resMatch
		}
	case HashNet:
		a := addrOf(p, d.Src&1 != 0)
		for i := range s.nets {
			l := &s.nets[i]
			if nm, ok := l.m[a.and(l.mask)]; ok {
				if nm {
					return resNomatch
				}
				return resMatch
			}
		}
	case HashIPPort:
		port, proto, ok := portOf(p, d.Src&2 != 0)
		if !ok {
			return resNone
		}
		if _, ok := s.ipp[pkey{addrOf(p, d.Src&1 != 0), port, proto}]; ok {
			return resMatch
		}
	case HashNetPort:
		port, proto, ok := portOf(p, d.Src&2 != 0)
		if !ok {
			return resNone
		}
		a := addrOf(p, d.Src&1 != 0)
		for i := range s.netp {
			l := &s.netp[i]
			if nm, ok := l.m[pkey{a.and(l.mask), port, proto}]; ok {
				if nm {
					return resNomatch
				}
				return resMatch
			}
		}
	case BitmapPort:
		port, proto, ok := portOf(p, d.Src&1 != 0)
		// ip_set_get_ip_port: only TCP and UDP give a port to bitmap:port.
		if !ok || proto != packet.ProtoTCP && proto != packet.ProtoUDP || port < s.first || port > s.last {
			return resNone
		}
		id := int(port - s.first)
		if id/64 < len(s.bits) && s.bits[id/64]&(1<<(id%64)) != 0 {
			return resMatch
		}
	case ListSet:
		// list_set_ktest: the first member that holds the packet, each
		// tested as ip_set_test does (its own dimension, family and
		// --return-nomatch).
		for _, m := range s.members {
			if m.typ != ListSet && m.Test(p, d, returnNomatch) {
				return resMatch
			}
		}
	}
	return resNone
}

// Protocols that carry a port (or an ICMP type/code) for the port types.
const (
	protoSCTP    uint8 = 132
	protoUDPLite uint8 = 136
)

// portOf is ip_set_get_ip4_port / ip_set_get_ip6_port: the port of TCP,
// UDP, SCTP and UDP-Lite, type<<8|code for ICMP and ICMPv6, 0 for other
// protocols. A non-first fragment has no port: IPv4 fails for the port
// protocols and gives port 0 for the others; IPv6 fails for all.
func portOf(p *packet.Packet, src bool) (port uint16, proto uint8, ok bool) {
	proto = p.Proto
	if p.IPVersion == 4 && proto == 0 {
		return 0, 0, false
	}
	if p.Fragment && p.FragOffset != 0 {
		if p.IPVersion == 6 {
			return 0, 0, false
		}
		switch proto {
		case packet.ProtoTCP, packet.ProtoUDP, protoSCTP, protoUDPLite, packet.ProtoICMP:
			return 0, 0, false
		}
		return 0, proto, true
	}
	switch proto {
	case packet.ProtoTCP, packet.ProtoUDP, protoSCTP, protoUDPLite:
		if src {
			port = p.SrcPort
		} else {
			port = p.DstPort
		}
	case packet.ProtoICMP, packet.ProtoICMPv6:
		port = uint16(p.ICMP.Type)<<8 | uint16(p.ICMP.Code)
	}
	return port, proto, true
}
