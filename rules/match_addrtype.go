package rules

import (
	"strings"

	"github.com/statewire/statewire/packet"
)

// -m addrtype (xt_addrtype.c, IPv4). The kernel asks the bridge host's
// routing tables what an address is (inet_addr_type_dev_table). statewire
// stands for a bridge host with no address of its own, whose answers depend
// on the address alone:
//
//   - BROADCAST: 255.255.255.255 and 0.0.0.0/8 (ipv4_is_lbcast,
//     ipv4_is_zeronet), and 127.255.255.255 (the broadcast route of lo);
//   - MULTICAST: 224.0.0.0/4;
//   - LOCAL: 127.0.0.0/8 (lo's local route), which is why that range is
//     not UNICAST; LOCAL itself is refused in rules, see below;
//   - UNICAST: every other address (no route found: RTN_UNICAST).
//
// The other types (LOCAL, ANYCAST, BLACKHOLE, UNREACHABLE, PROHIBIT,
// THROW, NAT, XRESOLVE, UNSPEC) name routes or addresses of the host, which
// statewire does not have: a rule naming one is refused, as are
// --limit-iface-in/out (the bridge device's routes) and IPv6 (ip6t's
// addrtype asks the IPv6 routing table for the same types).

// addrtype type numbers (RTN_*), bit i of a mask.
var addrTypeNames = [...]string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST",
	"BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

const (
	rtnUnicast   = 1
	rtnLocal     = 2
	rtnBroadcast = 3
	rtnMulticast = 5
	// addrTypeOK are the types statewire can decide.
	addrTypeOK uint16 = 1<<rtnUnicast | 1<<rtnBroadcast | 1<<rtnMulticast
)

type addrTypeArgs struct {
	src, dst       uint16 // masks of 1<<RTN_*
	hasSrc, hasDst bool
	negSrc, negDst bool
}

// addrType classifies an IPv4 address as described above.
func addrType(a *packet.Addr) int {
	b0, b1, b2, b3 := a[12], a[13], a[14], a[15]
	switch {
	case b0 == 0, b0 == 255 && b1 == 255 && b2 == 255 && b3 == 255, b0 == 127 && b1 == 255 && b2 == 255 && b3 == 255:
		return rtnBroadcast
	case b0&0xf0 == 0xe0:
		return rtnMulticast
	case b0 == 127:
		return rtnLocal
	}
	return rtnUnicast
}

func (a *addrTypeArgs) match(p *packet.Packet) bool {
	if a.hasSrc && (a.src&(1<<addrType(&p.Src)) != 0) == a.negSrc {
		return false
	}
	if a.hasDst && (a.dst&(1<<addrType(&p.Dst)) != 0) == a.negDst {
		return false
	}
	return true
}

// parseAddrTypeOpt reads --src-type/--dst-type and refuses
// --limit-iface-in/out; handled is false for other options.
func (p *parser) parseAddrTypeOpt(r *rule, opt, word string, neg bool, value func() (string, error)) (handled bool, err error) {
	switch opt {
	case "--src-type", "--dst-type":
	case "--limit-iface-in", "--limit-iface-out":
		return true, p.errf(ErrUnsupported, "addrtype option %q is not supported (statewire has no bridge device with routes)", word)
	default:
		return false, nil
	}
	if p.fam&FamilyIPv4 == 0 || r.fam&FamilyIPv4 == 0 {
		return true, p.errf(ErrUnsupported, "-m addrtype is supported for IPv4 only (the IPv6 types come from the host's IPv6 routes)")
	}
	r.fam &= FamilyIPv4
	v, err := value()
	if err != nil {
		return true, err
	}
	var mask uint16
	for _, f := range strings.Split(v, ",") {
		t := -1
		for i, n := range addrTypeNames {
			if strings.EqualFold(f, n) {
				t = i
			}
		}
		if t < 0 {
			return true, p.errf(ErrUnknown, "unknown address type %q", f)
		}
		if addrTypeOK&(1<<t) == 0 {
			return true, p.errf(ErrUnsupported, "address type %q is not supported: on a bridge with no address of its own only UNICAST, BROADCAST and MULTICAST have a meaning", addrTypeNames[t])
		}
		mask |= 1 << t
	}
	a := &r.x.at
	if opt == "--src-type" {
		if a.hasSrc {
			return true, p.errf(ErrSyntax, "option %q given twice", word)
		}
		a.hasSrc, a.negSrc, a.src = true, neg, mask
	} else {
		if a.hasDst {
			return true, p.errf(ErrSyntax, "option %q given twice", word)
		}
		a.hasDst, a.negDst, a.dst = true, neg, mask
	}
	r.has |= mAddrType
	return true, nil
}

func addrTypeMaskString(m uint16) string {
	var parts []string
	for i, n := range addrTypeNames {
		if m&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, ",")
}

func addrTypeString(r *rule, w func(string)) {
	a := &r.x.at
	w(" -m addrtype")
	if a.hasSrc {
		if a.negSrc {
			w(" !")
		}
		w(" --src-type " + addrTypeMaskString(a.src))
	}
	if a.hasDst {
		if a.negDst {
			w(" !")
		}
		w(" --dst-type " + addrTypeMaskString(a.dst))
	}
}
