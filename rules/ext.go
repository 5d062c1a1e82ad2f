package rules

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/statewire/statewire/packet"
)

// The matches of this file read the packet beyond its flow key. Only
// -m iprange reads something fixed for a flow direction (the addresses);
// every other one reads a field of this one frame and is in perPacketBits,
// so a verdict that consulted it is never cached (and the XDP fast path,
// which only takes cached verdicts, never takes such packets):
//
//   - -m length: the IP length, different from packet to packet;
//   - -m ttl / -m hl, -m tos, -m dscp: header fields a sender may change
//     at any packet of a connection (traceroute, DSCP remarking);
//   - -m mac --mac-source, -m pkttype: the Ethernet header, which is not
//     part of the flow key (a host can send a flow's tuple from another
//     MAC, or to a broadcast address).

// addrRange is an inclusive address range in the 16-byte form of
// packet.Addr, as two big-endian words each for lexicographic comparison.
type addrRange struct{ lo, hi [2]uint64 }

func (x *addrRange) contains(a *packet.Addr) bool {
	h, l := binary.BigEndian.Uint64(a[0:8]), binary.BigEndian.Uint64(a[8:16])
	if h < x.lo[0] || h == x.lo[0] && l < x.lo[1] {
		return false
	}
	return h < x.hi[0] || h == x.hi[0] && l <= x.hi[1]
}

// pkttype values (xt_pkttype's names).
const (
	pktUnicast uint8 = iota
	pktBroadcast
	pktMulticast
)

var pktTypeNames = [...]string{"unicast", "broadcast", "multicast"}

// ttl comparison modes of -m ttl / -m hl.
const (
	ttlEq uint8 = iota
	ttlLt
	ttlGt
)

// xmatch holds the values of the matches of this file, in the source rule
// and, unchanged, in the compiled one.
type xmatch struct {
	srcRange, dstRange [2]netip.Addr // source form, for Save
	srcR, dstR         addrRange
	mac                [6]byte
	lenLo, lenHi       uint16
	pktType            uint8
	tosVal, tosMask    uint8
	dscp               uint8
	ttlMode, ttlVal    uint8
	hl                 bool // written as -m hl (ip6tables)
	ctxArgs                 // the matches and targets of match_*.go
}

// extMatch tests the per-packet matches of this file; r.has&extPerPacket
// is not zero.
func (r *crule) extMatch(p *packet.Packet) bool {
	h, neg := r.has, r.neg
	if h&mLength != 0 {
		n := p.IPLen
		if (n >= uint32(r.x.lenLo) && n <= uint32(r.x.lenHi)) == (neg&mLength != 0) {
			return false
		}
	}
	if h&mTTL != 0 {
		var t bool
		switch r.x.ttlMode {
		case ttlEq:
			t = p.TTL == r.x.ttlVal
		case ttlLt:
			t = p.TTL < r.x.ttlVal
		default:
			t = p.TTL > r.x.ttlVal
		}
		if t == (neg&mTTL != 0) {
			return false
		}
	}
	if h&mTOS != 0 && (p.TOS&r.x.tosMask == r.x.tosVal) == (neg&mTOS != 0) {
		return false
	}
	if h&mDSCP != 0 && (p.TOS>>2 == r.x.dscp) == (neg&mDSCP != 0) {
		return false
	}
	if h&mMAC != 0 && ([6]byte(p.MAC[6:12]) == r.x.mac) == (neg&mMAC != 0) {
		return false
	}
	if h&mPktType != 0 {
		t := pktUnicast
		switch {
		case [6]byte(p.MAC[0:6]) == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}:
			t = pktBroadcast
		case p.MAC[0]&1 != 0:
			t = pktMulticast
		}
		if (t == r.x.pktType) == (neg&mPktType != 0) {
			return false
		}
	}
	return true
}

func makeAddrRange(lo, hi netip.Addr) addrRange {
	a, b := lo.As16(), hi.As16()
	return addrRange{
		lo: [2]uint64{binary.BigEndian.Uint64(a[0:8]), binary.BigEndian.Uint64(a[8:16])},
		hi: [2]uint64{binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint64(b[8:16])},
	}
}

// parseIPRange reads "A-B" (or a single address, as libxt_iprange takes).
func parseIPRange(v string) (lo, hi netip.Addr, ok bool) {
	a, b, found := strings.Cut(v, "-")
	if !found {
		b = a
	}
	lo, err1 := netip.ParseAddr(a)
	hi, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil || lo.Zone() != "" || hi.Zone() != "" || lo.Is4() != hi.Is4() || lo.Is4In6() || hi.Is4In6() || hi.Less(lo) {
		return lo, hi, false
	}
	return lo, hi, true
}

func parseMAC(v string) ([6]byte, bool) {
	var m [6]byte
	parts := strings.Split(v, ":")
	if len(parts) != 6 {
		return m, false
	}
	for i, s := range parts {
		if len(s) == 0 || len(s) > 2 {
			return m, false
		}
		n, err := strconv.ParseUint(s, 16, 8)
		if err != nil {
			return m, false
		}
		m[i] = byte(n)
	}
	return m, true
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// parseUint8 reads a decimal or 0x-hex number up to max.
func parseUintMax(s string, max uint64) (uint64, bool) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil || n > max {
		return 0, false
	}
	return n, true
}

// parseLength reads "a" or "a:b" (either side may be empty in libxt_length:
// ":b" is 0:b, "a:" is a:65535).
func parseLength(v string) (lo, hi uint16, ok bool) {
	a, b, found := strings.Cut(v, ":")
	if !found {
		n, ok := parseUintMax(a, 0xffff)
		return uint16(n), uint16(n), ok
	}
	l, h := uint64(0), uint64(0xffff)
	if a != "" {
		if l, ok = parseUintMax(a, 0xffff); !ok {
			return 0, 0, false
		}
	}
	if b != "" {
		if h, ok = parseUintMax(b, 0xffff); !ok {
			return 0, 0, false
		}
	}
	if l > h {
		return 0, 0, false
	}
	return uint16(l), uint16(h), true
}

// tosNames are libxt_tos's symbolic values (mask 0x3f).
var tosNames = map[string]uint8{
	"Minimize-Delay": 0x10, "Maximize-Throughput": 0x08, "Maximize-Reliability": 0x04,
	"Minimize-Cost": 0x02, "Normal-Service": 0x00,
}

// parseTOS reads "value[/mask]" (mask 0xff by default) or a symbolic name.
func parseTOS(v string) (val, mask uint8, ok bool) {
	if n, found := tosNames[v]; found {
		return n, 0x3f, true
	}
	a, b, found := strings.Cut(v, "/")
	x, ok := parseUintMax(a, 0xff)
	if !ok {
		return 0, 0, false
	}
	m := uint64(0xff)
	if found {
		if m, ok = parseUintMax(b, 0xff); !ok {
			return 0, 0, false
		}
	}
	return uint8(x), uint8(m), true // as xt_tos: (tos & mask) == value, value not masked
}

// dscpClasses are libxt_dscp's --dscp-class names.
var dscpClasses = map[string]uint8{
	"CS0": 0x00, "CS1": 0x08, "CS2": 0x10, "CS3": 0x18, "CS4": 0x20, "CS5": 0x28, "CS6": 0x30, "CS7": 0x38,
	"BE": 0x00, "AF11": 0x0a, "AF12": 0x0c, "AF13": 0x0e, "AF21": 0x12, "AF22": 0x14, "AF23": 0x16,
	"AF31": 0x1a, "AF32": 0x1c, "AF33": 0x1e, "AF41": 0x22, "AF42": 0x24, "AF43": 0x26, "EF": 0x2e,
}

func hex(n uint8) string { return "0x" + fmt.Sprintf("%02x", n) }

// extString appends the matches of this file in iptables-save's form.
func extString(r *rule, opt func(matchBits, string, string), w func(string)) {
	if r.has&(mSrcRange|mDstRange) != 0 {
		w(" -m iprange")
		opt(mSrcRange, "--src-range", r.x.srcRange[0].String()+"-"+r.x.srcRange[1].String())
		opt(mDstRange, "--dst-range", r.x.dstRange[0].String()+"-"+r.x.dstRange[1].String())
	}
	if r.has&mMAC != 0 {
		w(" -m mac")
		opt(mMAC, "--mac-source", macString(r.x.mac))
	}
	if r.has&mLength != 0 {
		w(" -m length")
		v := strconv.Itoa(int(r.x.lenLo))
		if r.x.lenHi != r.x.lenLo {
			v += ":" + strconv.Itoa(int(r.x.lenHi))
		}
		opt(mLength, "--length", v)
	}
	if r.has&mPktType != 0 {
		w(" -m pkttype")
		opt(mPktType, "--pkt-type", pktTypeNames[r.x.pktType])
	}
	if r.has&mTOS != 0 {
		w(" -m tos")
		opt(mTOS, "--tos", hex(r.x.tosVal)+"/"+hex(r.x.tosMask))
	}
	if r.has&mDSCP != 0 {
		w(" -m dscp")
		opt(mDSCP, "--dscp", hex(r.x.dscp))
	}
	if r.has&mTTL != 0 {
		name := "ttl"
		if r.x.hl {
			name = "hl"
		}
		w(" -m " + name)
		op := [...]string{"eq", "lt", "gt"}[r.x.ttlMode]
		opt(mTTL, "--"+name+"-"+op, strconv.Itoa(int(r.x.ttlVal)))
	}
}
