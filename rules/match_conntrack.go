package rules

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// -m conntrack beyond --ctstate (xt_conntrack.c conntrack_mt, revision 3).
// --ctstate itself is mState (parse.go); these options need Ctx.Conn.
//
// As in the kernel, a packet with no connection (INVALID, UNTRACKED) makes
// the whole conntrack match equal to its --ctstate test: it matches when
// the rule has --ctstate (which then matched) and fails otherwise,
// whatever the other options and their negations say.

// conntrack option bits (ctArgs.has, ctArgs.neg).
const (
	ctoProto uint16 = 1 << iota
	ctoOrigSrc
	ctoOrigDst
	ctoReplSrc
	ctoReplDst
	ctoOrigSrcPort
	ctoOrigDstPort
	ctoReplSrcPort
	ctoReplDstPort
	ctoStatus
	ctoExpire
	ctoDir
)

// ctOptions in iptables-save's order (libxt_conntrack conntrack_dump).
var ctOptions = [...]struct {
	name string
	bit  uint16
}{
	{"--ctproto", ctoProto}, {"--ctorigsrc", ctoOrigSrc}, {"--ctorigdst", ctoOrigDst},
	{"--ctreplsrc", ctoReplSrc}, {"--ctrepldst", ctoReplDst},
	{"--ctorigsrcport", ctoOrigSrcPort}, {"--ctorigdstport", ctoOrigDstPort},
	{"--ctreplsrcport", ctoReplSrcPort}, {"--ctrepldstport", ctoReplDstPort},
	{"--ctstatus", ctoStatus}, {"--ctexpire", ctoExpire}, {"--ctdir", ctoDir},
}

// ctoPacket are the options whose answer changes within a flow direction.
const ctoPacket = ctoStatus | ctoExpire

// Kernel IPS_* bits --ctstatus names.
const (
	ipsExpected  = 1 << 0
	ipsSeenReply = 1 << 1
	ipsAssured   = 1 << 2
	ipsConfirmed = 1 << 3
)

var ctStatusNames = [...]struct {
	name string
	bit  uint16
}{{"EXPECTED", ipsExpected}, {"SEEN_REPLY", ipsSeenReply}, {"ASSURED", ipsAssured}, {"CONFIRMED", ipsConfirmed}}

type ctArgs struct {
	has, neg     uint16
	proto        uint8
	reply        bool      // --ctdir REPLY
	addr         [4]ctAddr // origsrc, origdst, replsrc, repldst
	port         [4]portRange
	status       uint16 // IPS_* bits
	expLo, expHi uint32
}

// kernelStatus is the IPS_* form of a connection's status.
func kernelStatus(cn *Conn) uint16 {
	var s uint16
	if cn.Status&statemachine.StatusExpected != 0 {
		s |= ipsExpected
	}
	if cn.Status&statemachine.StatusSeenReply != 0 {
		s |= ipsSeenReply
	}
	if cn.Status&statemachine.StatusAssured != 0 {
		s |= ipsAssured
	}
	if cn.Confirmed {
		s |= ipsConfirmed
	}
	return s
}

// noConn is conntrack_mt's answer for a packet without a connection.
func noConn(hasState bool) bool { return hasState }

// matchFlow tests the options fixed per flow direction.
func (a *ctArgs) matchFlow(c *Ctx, hasState bool) bool {
	cn := c.Conn
	if cn == nil {
		return noConn(hasState)
	}
	h, neg := a.has&^ctoPacket, a.neg
	if h&ctoDir != 0 && (c.Dir == statemachine.Reply) != a.reply {
		return false
	}
	// The reply tuple is the inverse of the original one (no NAT).
	addrs := [4]*packet.Addr{&cn.Src, &cn.Dst, &cn.Dst, &cn.Src}
	for i := range a.addr {
		bit := ctoOrigSrc << i
		if h&bit != 0 && a.addr[i].pfx.contains(addrs[i]) == (neg&bit != 0) {
			return false
		}
	}
	if h&ctoProto != 0 && (cn.Proto == a.proto) == (neg&ctoProto != 0) {
		return false
	}
	sport, dport := cn.SrcPort, cn.DstPort
	rsport, rdport := dport, sport
	if isICMPProto(cn.Proto) {
		// ICMP: the id is the "source port" both ways; the reply's
		// "destination port" carries the reply type.
		rsport, rdport = sport, uint16(icmpReplyType(cn.Proto, uint8(dport>>8)))<<8|dport&0xff
	}
	ports := [4]uint16{sport, dport, rsport, rdport}
	for i := range a.port {
		bit := ctoOrigSrcPort << i
		if h&bit != 0 && a.port[i].has(ports[i]) == (neg&bit != 0) {
			return false
		}
	}
	return true
}

// matchPacket tests --ctstatus and --ctexpire.
func (a *ctArgs) matchPacket(c *Ctx, hasState bool) bool {
	cn := c.Conn
	if cn == nil {
		return noConn(hasState)
	}
	if a.has&ctoStatus != 0 && (kernelStatus(cn)&a.status != 0) == (a.neg&ctoStatus != 0) {
		return false
	}
	if a.has&ctoExpire != 0 {
		var secs int64
		if cn.Confirmed && cn.Expires > c.Now {
			secs = (cn.Expires - c.Now) / 1e9
		}
		if (secs >= int64(a.expLo) && secs <= int64(a.expHi)) == (a.neg&ctoExpire != 0) {
			return false
		}
	}
	return true
}

func isICMPProto(p uint8) bool { return p == 1 || p == 58 }

// icmpReplyType is the kernel's invert_tuple for ICMP query types.
func icmpReplyType(proto, t uint8) uint8 {
	if proto == 1 {
		switch t {
		case 8:
			return 0
		case 13:
			return 14
		case 15:
			return 16
		case 17:
			return 18
		}
		return t
	}
	switch t {
	case 128:
		return 129
	case 139:
		return 140
	}
	return t
}

// parseCtOpt reads one conntrack option other than --ctstate; handled is
// false for any other option.
func (p *parser) parseCtOpt(r *rule, opt, word string, neg bool, value func() (string, error)) (handled bool, err error) {
	var bit uint16
	for _, o := range ctOptions {
		if o.name == opt {
			bit = o.bit
		}
	}
	if bit == 0 {
		return false, nil
	}
	a := &r.x.ct
	if a.has&bit != 0 {
		return true, p.errf(ErrSyntax, "option %q given twice", word)
	}
	if neg && bit == ctoDir {
		return true, p.errf(ErrSyntax, "conntrack: option %q cannot be inverted", word)
	}
	v, err := value()
	if err != nil {
		return true, err
	}
	a.has |= bit
	if neg {
		a.neg |= bit
	}
	switch {
	case bit == ctoProto:
		pr, ok := parseProto(v)
		if !ok {
			return true, p.errf(ErrUnknown, "unknown protocol %q", v)
		}
		if pr == 0 && neg {
			return true, p.errf(ErrSyntax, "conntrack: rule would never match protocol")
		}
		a.proto = pr
	case bit >= ctoOrigSrc && bit <= ctoReplDst:
		i := 0
		for ctoOrigSrc<<i != bit {
			i++
		}
		pfx, perr := p.parseAddr(v, r)
		if perr != nil {
			return true, perr
		}
		ad, _, _ := strings.Cut(v, "/")
		addr, _ := netip.ParseAddr(ad)
		a.addr[i] = ctAddr{addr: addr.Unmap(), bits: pfx.Bits(), pfx: makePrefix(pfx)}
	case bit >= ctoOrigSrcPort && bit <= ctoReplDstPort:
		i := 0
		for ctoOrigSrcPort<<i != bit {
			i++
		}
		pr, ok := parsePortRange(v)
		if !ok || strings.HasPrefix(v, ":") || strings.HasSuffix(v, ":") {
			return true, p.errf(ErrSyntax, "bad port or range %q", v)
		}
		a.port[i] = pr
	case bit == ctoStatus:
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(f, "NONE") {
				continue
			}
			found := false
			for _, n := range ctStatusNames {
				if strings.EqualFold(f, n.name) {
					a.status |= n.bit
					found = true
				}
			}
			if !found {
				return true, p.errf(ErrUnknown, "bad ctstatus %q (NONE, EXPECTED, SEEN_REPLY, ASSURED, CONFIRMED)", f)
			}
		}
	case bit == ctoExpire:
		lo, hi, found := strings.Cut(v, ":")
		l, err1 := strconv.ParseUint(lo, 10, 32)
		h := l
		var err2 error
		if found {
			h, err2 = strconv.ParseUint(hi, 10, 32)
		}
		if err1 != nil || err2 != nil {
			return true, p.errf(ErrSyntax, "bad expire time %q (seconds or a range a:b)", v)
		}
		a.expLo, a.expHi = uint32(l), uint32(h)
	case bit == ctoDir:
		switch strings.ToUpper(v) {
		case "ORIGINAL":
		case "REPLY":
			a.reply = true
		default:
			return true, p.errf(ErrSyntax, "bad --ctdir %q (ORIGINAL or REPLY)", v)
		}
	}
	if bit&ctoPacket != 0 {
		r.has |= mCtPacket
	} else {
		r.has |= mCtFlow
	}
	return true, nil
}

// ctString appends the conntrack options after --ctstate, in
// iptables-save's order and form.
func ctString(r *rule, w func(string)) {
	a := &r.x.ct
	for _, o := range ctOptions {
		if a.has&o.bit == 0 {
			continue
		}
		if a.neg&o.bit != 0 {
			w(" !")
		}
		w(" " + o.name + " ")
		switch {
		case o.bit == ctoProto:
			w(strconv.Itoa(int(a.proto)))
		case o.bit >= ctoOrigSrc && o.bit <= ctoReplDst:
			i := 0
			for ctoOrigSrc<<i != o.bit {
				i++
			}
			ad := a.addr[i]
			s := ad.addr.String()
			if ad.bits != ad.addr.BitLen() {
				s += "/" + strconv.Itoa(ad.bits)
			}
			w(s)
		case o.bit >= ctoOrigSrcPort && o.bit <= ctoReplDstPort:
			i := 0
			for ctoOrigSrcPort<<i != o.bit {
				i++
			}
			w(portString(a.port[i]))
		case o.bit == ctoStatus:
			var parts []string
			for _, n := range ctStatusNames {
				if a.status&n.bit != 0 {
					parts = append(parts, n.name)
				}
			}
			if len(parts) == 0 {
				parts = []string{"NONE"}
			}
			w(strings.Join(parts, ","))
		case o.bit == ctoExpire:
			s := strconv.FormatUint(uint64(a.expLo), 10)
			if a.expHi != a.expLo {
				s += ":" + strconv.FormatUint(uint64(a.expHi), 10)
			}
			w(s)
		case o.bit == ctoDir:
			if a.reply {
				w("REPLY")
			} else {
				w("ORIGINAL")
			}
		}
	}
}
