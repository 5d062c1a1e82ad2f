package rulegen

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// Address pools. Side 0 is the host behind port A, side 1 the host behind
// port B. The host numbers sit on both sides of the prefix edges the rules
// draw (/28 at 16, /27 at 32, ...), so a prefix built around one of them
// has pool addresses just inside and just outside it.
var (
	hostNums   = []int{1, 15, 16, 17, 31, 32, 100, 254}
	net4       = [2]string{"198.19.1.", "198.19.2."}
	net6       = [2]string{"2001:2:0:a1::", "2001:2:0:b2::"}
	mcast4     = []string{"224.0.0.251", "239.1.2.3", "255.255.255.255"}
	mcast6     = []string{"ff02::1", "ff05::2"}
	portPool   = []uint16{22, 53, 80, 443, 1023, 1024, 1025, 4999, 5000, 5001, 8080, 65535}
	ttlPool    = []uint8{1, 2, 9, 10, 11, 63, 65, 128, 254, 255}
	tosPool    = []uint8{0x02, 0x08, 0x10, 0x11, 0x20, 0x28, 0xb8, 0xb9, 0xc0}
	sizePool   = []int{0, 1, 12, 20, 32, 33, 72, 100, 172, 300}
	altMACs    = [][6]byte{{0x02, 0x73, 0x70, 0, 0, 0x0a}, {0x02, 0x73, 0x70, 0, 0, 0x0b}}
	bcastMAC   = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcastMAC4  = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}
	mcastMAC6  = [6]byte{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	tcpWindow  = uint16(65535)
	protoNames = map[uint8]string{6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 136: "udplite"}
)

func hostAddr(v6 bool, side, num int) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("%s%x", net6[side], num))
	}
	return netip.MustParseAddr(fmt.Sprintf("%s%d", net4[side], num))
}

// flow is one conversation's original-direction tuple.
type flow struct {
	id           int
	v6           bool
	proto        uint8
	side         int // the opener's side
	src, dst     netip.Addr
	sport, dport uint16 // ICMP queries: sport is the id
}

// pkt is one frame of the traffic, described before it is built.
type pkt struct {
	f            *flow
	n            int  // its place in the conversation, from 1
	reply        bool // sent by the responder
	from         int  // the side it is injected at (the sender's, or the other if spoofed)
	proto        uint8
	src, dst     netip.Addr
	sport, dport uint16
	flags        uint8
	seq, ack     uint32
	typ, code    uint8  // ICMP
	rest         uint32 // ICMP: the 4 bytes after the checksum
	quote        *pkt   // ICMP error: the packet quoted
	quoteLen     int    // bytes of the quoted IP packet, 0: all
	payload      int
	ttl, tos     uint8
	smac, dmac   [6]byte
	guess        string // the ctstate it probably has (rules' examples only)
	bytes        []byte
}

func (p *pkt) v6() bool { return p.f.v6 }

// sender is the side whose host sends p (before any spoofing).
func (p *pkt) sender() int {
	if p.reply {
		return 1 - p.f.side
	}
	return p.f.side
}

// newPkt is the next frame of f in the given direction, with the
// conversation's addresses and ports and default per-frame fields.
func (g *gen) newPkt(f *flow, reply bool, guess string) *pkt {
	p := &pkt{f: f, reply: reply, proto: f.proto, src: f.src, dst: f.dst, sport: f.sport, dport: f.dport, ttl: 64, guess: guess}
	if reply {
		p.src, p.dst, p.sport, p.dport = f.dst, f.src, f.dport, f.sport
	}
	return p
}

// decorate draws the per-frame fields the matches read: TTL, TOS,
// payload size, MACs, and now and then the other ingress port (a frame of
// the flow spoofed into the wrong side).
func (g *gen) decorate(p *pkt) {
	s := p.sender()
	p.from = s
	if g.r.IntN(20) == 0 {
		p.from = 1 - s
	}
	if g.r.IntN(4) == 0 {
		p.ttl = pick(g, ttlPool)
	}
	if g.r.IntN(4) == 0 {
		p.tos = pick(g, tosPool)
	}
	p.smac = g.o.HostMAC[s]
	if g.r.IntN(10) == 0 {
		p.smac = pick(g, altMACs)
	}
	p.dmac = g.o.DstMAC
	switch g.r.IntN(20) {
	case 0:
		p.dmac = bcastMAC
	case 1:
		p.dmac = mcastMAC4
		if p.v6() {
			p.dmac = mcastMAC6
		}
	}
	if p.dst.IsMulticast() || p.dst == netip.MustParseAddr("255.255.255.255") {
		p.dmac = bcastMAC
		if p.dst.IsMulticast() {
			p.dmac = mcastMAC4
			if p.v6() {
				p.dmac = mcastMAC6
			}
		}
	}
}

func pick[T any](g *gen, s []T) T { return s[g.r.IntN(len(s))] }

// newFlow draws a conversation's tuple.
func (g *gen) newFlow(v6 bool, proto uint8) *flow {
	g.flows++
	f := &flow{id: g.flows, v6: v6, proto: proto, side: g.r.IntN(2)}
	f.src = hostAddr(v6, f.side, pick(g, hostNums))
	f.dst = hostAddr(v6, 1-f.side, pick(g, hostNums))
	f.sport = pick(g, portPool)
	if g.r.IntN(3) != 0 {
		f.sport = uint16(40000 + g.flows)
	}
	f.dport = pick(g, portPool)
	return f
}

// conversation draws one conversation of the given family and returns its
// frames in order.
func (g *gen) conversation(v6 bool) []*pkt {
	icmp := uint8(packet.ProtoICMP)
	if v6 {
		icmp = packet.ProtoICMPv6
	}
	var ps []*pkt
	switch k := g.r.IntN(20); {
	case k < 6:
		ps = g.tcpConv(g.newFlow(v6, packet.ProtoTCP))
	case k < 8:
		ps = g.tcpOdd(g.newFlow(v6, packet.ProtoTCP))
	case k < 12:
		ps = g.udpConv(g.newFlow(v6, packet.ProtoUDP))
	case k < 13 && !v6:
		// UDP-Lite (IPv4 only: the frames are built by hand, as in
		// e2e/ctxmatches_test.go).
		ps = g.udpConv(g.newFlow(v6, packet.ProtoUDPLite))
	case k < 13:
		// To a multicast group: one way, NEW every time.
		f := g.newFlow(v6, packet.ProtoUDP)
		f.dst = netip.MustParseAddr(pick(g, mcast6))
		ps = []*pkt{g.newPkt(f, false, "NEW")}
	case k < 14 && !v6:
		f := g.newFlow(v6, packet.ProtoUDP)
		f.dst = netip.MustParseAddr(pick(g, mcast4))
		ps = []*pkt{g.newPkt(f, false, "NEW")}
	case k < 17:
		ps = g.icmpQuery(g.newFlow(v6, icmp))
	default:
		ps = g.icmpError(v6, g.r.IntN(4) != 0)
	}
	for i, p := range ps {
		p.n = i + 1
		g.decorate(p)
		if i < len(ps)-1 && p.dmac != g.o.DstMAC && !p.dst.IsMulticast() && p.dst != netip.MustParseAddr("255.255.255.255") {
			// A group-addressed frame only ends a conversation: the kernel
			// bridge hands its own stack a copy of every such frame, which
			// confirms the connection even when FORWARD drops the frame,
			// and statewire (no stack of its own) does not; a deliberate
			// difference (CONFORMANCE.md, "Rule sets") that later frames
			// of the conversation would show.
			p.dmac = g.o.DstMAC
		}
		if p.payload == 0 && p.proto != packet.ProtoTCP && p.quote == nil {
			p.payload = pick(g, sizePool)
			if p.proto == packet.ProtoUDPLite {
				// Kept under 240 bytes: the kernel takes no UDP-Lite sum
				// for longer datagrams (see udpLite4).
				p.payload = min(p.payload, 172)
			}
		}
	}
	return ps
}

// tcpConv is a handshake, data both ways and a teardown, cut short at a
// random point, sometimes ended by a RST or carrying a segment outside the
// window.
func (g *gen) tcpConv(f *flow) []*pkt {
	iss := [2]uint32{g.r.Uint32(), g.r.Uint32()} // [0] opener, [1] responder
	nxt := [2]uint32{iss[0] + 1, iss[1] + 1}
	seg := func(reply bool, flags uint8, guess string) *pkt {
		p := g.newPkt(f, reply, guess)
		d := 0
		if reply {
			d = 1
		}
		p.flags, p.seq, p.ack = flags, nxt[d], nxt[1-d]
		return p
	}
	syn := g.newPkt(f, false, "NEW")
	syn.flags, syn.seq = packet.TCPSyn, iss[0]
	synack := g.newPkt(f, true, "ESTABLISHED")
	synack.flags, synack.seq, synack.ack = packet.TCPSyn|packet.TCPAck, iss[1], iss[0]+1
	ps := []*pkt{syn, synack, seg(false, packet.TCPAck, "ESTABLISHED")}
	data := func(reply bool) {
		p := seg(reply, packet.TCPAck|packet.TCPPsh, "ESTABLISHED")
		p.payload = 1 + pick(g, sizePool)
		d := 0
		if reply {
			d = 1
		}
		nxt[d] += uint32(p.payload)
		ps = append(ps, p)
	}
	data(false)
	data(true)
	if g.r.IntN(6) == 0 {
		// Far outside the window: INVALID.
		p := seg(g.r.IntN(2) == 0, packet.TCPAck|packet.TCPPsh, "INVALID")
		p.seq += 1 << 30
		p.payload = 10
		ps = append(ps, p)
	}
	if g.r.IntN(5) == 0 {
		p := seg(g.r.IntN(2) == 0, packet.TCPRst|packet.TCPAck, "ESTABLISHED")
		ps = append(ps, p)
	} else {
		ps = append(ps, seg(false, packet.TCPFin|packet.TCPAck, "ESTABLISHED"))
		nxt[0]++
		ps = append(ps, seg(true, packet.TCPFin|packet.TCPAck, "ESTABLISHED"))
		nxt[1]++
		ps = append(ps, seg(false, packet.TCPAck, "ESTABLISHED"))
	}
	return ps[:1+g.r.IntN(len(ps))]
}

// oddFlags are lone segments with flag combinations the tracker treats
// apart: invalid combinations, a mid-stream pick-up (loose), a lone RST.
var oddFlags = []uint8{
	packet.TCPSyn | packet.TCPFin,
	packet.TCPSyn | packet.TCPRst,
	packet.TCPFin,
	packet.TCPAck,
	packet.TCPAck | packet.TCPPsh,
	packet.TCPRst,
	packet.TCPFin | packet.TCPPsh | packet.TCPUrg,
	0,
	packet.TCPSyn | packet.TCPAck,
	packet.TCPSyn | packet.TCPEce | packet.TCPCwr,
	packet.TCPFin | packet.TCPAck,
}

func (g *gen) tcpOdd(f *flow) []*pkt {
	p := g.newPkt(f, false, "INVALID")
	p.flags, p.seq, p.ack = pick(g, oddFlags), g.r.Uint32(), g.r.Uint32()
	if p.flags&packet.TCPAck != 0 && p.flags&(packet.TCPSyn|packet.TCPRst) == 0 {
		p.guess = "NEW"
	}
	ps := []*pkt{p}
	if g.r.IntN(2) == 0 {
		// Its answer, if any.
		q := g.newPkt(f, true, "ESTABLISHED")
		q.flags, q.seq, q.ack = packet.TCPAck, g.r.Uint32(), p.seq+1
		ps = append(ps, q)
	}
	return ps
}

func (g *gen) udpConv(f *flow) []*pkt {
	ps := []*pkt{g.newPkt(f, false, "NEW")}
	for range g.r.IntN(4) {
		reply := g.r.IntN(3) != 0
		ps = append(ps, g.newPkt(f, reply, "ESTABLISHED"))
	}
	return ps
}

// icmpQuery is a query (echo, or for IPv4 timestamp, information, address
// mask; or a type conntrack does not track) and its answer.
func (g *gen) icmpQuery(f *flow) []*pkt {
	type q struct{ req, rep uint8 }
	qs := []q{{8, 0}, {8, 0}, {8, 0}, {13, 14}, {15, 16}, {17, 18}, {10, 9}, {42, 0}}
	if f.v6 {
		qs = []q{{128, 129}, {128, 129}, {128, 129}, {135, 136}, {133, 134}, {200, 201}}
	}
	k := pick(g, qs)
	req := g.newPkt(f, false, "NEW")
	req.typ, req.rest = k.req, uint32(f.sport)<<16|1
	req.sport, req.dport = 0, 0
	ps := []*pkt{req}
	if g.r.IntN(4) != 0 {
		rep := g.newPkt(f, true, "ESTABLISHED")
		rep.typ, rep.rest = k.rep, req.rest
		rep.sport, rep.dport = 0, 0
		ps = append(ps, rep)
	}
	return ps
}

// icmpError is a UDP or TCP packet and an ICMP error about it from the
// far side (RELATED), or (related false) an error quoting a packet that
// was never sent (INVALID).
func (g *gen) icmpError(v6 bool, related bool) []*pkt {
	proto := uint8(packet.ProtoUDP)
	if g.r.IntN(3) == 0 {
		proto = packet.ProtoTCP
	}
	f := g.newFlow(v6, proto)
	orig := g.newPkt(f, false, "NEW")
	if proto == packet.ProtoTCP {
		orig.flags, orig.seq = packet.TCPSyn, g.r.Uint32()
	}
	orig.payload = 8
	icmp := uint8(packet.ProtoICMP)
	if v6 {
		icmp = packet.ProtoICMPv6
	}
	ef := &flow{id: f.id, v6: v6, proto: icmp, side: 1 - f.side, src: f.dst, dst: f.src}
	e := g.newPkt(ef, false, "RELATED")
	e.quote = orig
	if g.r.IntN(2) == 0 {
		e.quoteLen = 28
		if v6 {
			e.quoteLen = 48
		}
	}
	type tc struct {
		typ, code uint8
		rest      uint32
	}
	kinds := []tc{{3, 3, 0}, {3, 1, 0}, {3, 0, 0}, {3, 10, 0}, {3, 13, 0}, {3, 4, 1400}, {11, 0, 0}, {12, 0, 0x14000000}, {4, 0, 0}}
	if v6 {
		kinds = []tc{{1, 4, 0}, {1, 1, 0}, {1, 3, 0}, {1, 0, 0}, {2, 0, 1280}, {3, 0, 0}, {4, 0, 8}}
	}
	k := pick(g, kinds)
	e.typ, e.code, e.rest = k.typ, k.code, k.rest
	if !related {
		e.guess = "INVALID"
		return []*pkt{e}
	}
	return []*pkt{orig, e}
}

// build makes p's frame; uniq makes it unique (the IPv4 ID, the IPv6 flow
// label), as the far side's catcher tells frames apart by their bytes.
func (g *gen) build(p *pkt, uniq uint32) []byte {
	s, d := p.src.String(), p.dst.String()
	pay := make([]byte, p.payload)
	copy(pay, fmt.Sprintf("rd%05x", uniq))
	var fr []byte
	switch p.proto {
	case packet.ProtoTCP:
		tf := pt.TCPFields{Flags: p.flags, Seq: p.seq, Ack: p.ack, Window: tcpWindow, Payload: pay}
		if p.v6() {
			fr = pt.TCP6(s, d, p.sport, p.dport, tf)
		} else {
			fr = pt.TCP4(s, d, p.sport, p.dport, tf)
		}
	case packet.ProtoUDP, packet.ProtoUDPLite:
		if p.v6() {
			fr = pt.UDP6(s, d, p.sport, p.dport, pay)
		} else {
			fr = pt.UDP4(s, d, p.sport, p.dport, pay)
		}
	case packet.ProtoICMP, packet.ProtoICMPv6:
		body := pay
		if p.quote != nil {
			if p.quote.bytes == nil {
				g.uniq++
				p.quote.bytes = g.build(p.quote, g.uniq)
			}
			body = pt.Quote(p.quote.bytes, p.quoteLen)
		}
		if p.v6() {
			fr = pt.ICMP6(s, d, p.typ, p.code, p.rest, body)
		} else {
			fr = pt.ICMP4(s, d, p.typ, p.code, p.rest, body)
		}
	}
	if p.v6() {
		fr[14], fr[15] = 0x60|p.tos>>4, p.tos<<4|byte(uniq>>16)&0x0f
		fr[16], fr[17] = byte(uniq>>8), byte(uniq)
		fr[21] = p.ttl
	} else {
		fr[15], fr[22] = p.tos, p.ttl
		binary.BigEndian.PutUint16(fr[18:20], uint16(uniq))
	}
	copy(fr[0:6], p.dmac[:])
	copy(fr[6:12], p.smac[:])
	fr = pt.FixChecksums(fr)
	if p.proto == packet.ProtoUDPLite {
		udpLite4(fr)
	}
	return fr
}

// udpLite4 turns a built IPv4 UDP frame into UDP-Lite: protocol 136, the
// length field read as the checksum coverage (the whole datagram), and
// the checksum over the same bytes with 17 in the pseudo-header, not
// RFC 3828's 136: the kernel's conntrack checks UDP-Lite sums with UDP's
// protocol number (udplite_error, nf_conntrack_checksum=1), so an RFC
// sum is INVALID to it, while statewire does not check UDP-Lite sums; and
// on Linux 6.18 a datagram of 256 payload bytes or more is INVALID to it
// with either sum. That deliberate difference (CONFORMANCE.md, "Other IP
// protocols") is left out of the random traffic: this sum, on datagrams of
// at most 172 payload bytes, is valid to both.
func udpLite4(fr []byte) {
	fr[23] = packet.ProtoUDPLite
	pt.FixChecksums(fr) // the IPv4 header checksum
	fr[40], fr[41] = 0, 0
	sum := uint32(0)
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(fr[26:34])
	sum += uint32(packet.ProtoUDP) + uint32(len(fr)-34)
	add(fr[34:])
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(fr[40:42], c)
}

// describe is a frame's line in the test's log.
func (p *pkt) describe() string {
	var what string
	switch p.proto {
	case packet.ProtoTCP:
		what = fmt.Sprintf("tcp %s:%d>%s:%d [%s] seq %d ack %d", p.src, p.sport, p.dst, p.dport, flagNames(p.flags), p.seq, p.ack)
	case packet.ProtoUDP, packet.ProtoUDPLite:
		what = fmt.Sprintf("%s %s:%d>%s:%d", protoNames[p.proto], p.src, p.sport, p.dst, p.dport)
	default:
		what = fmt.Sprintf("%s %s>%s type %d code %d", protoNames[p.proto], p.src, p.dst, p.typ, p.code)
		if p.quote != nil {
			what += fmt.Sprintf(" quoting %s:%d>%s:%d/%s", p.quote.src, p.quote.sport, p.quote.dst, p.quote.dport, protoNames[p.quote.proto])
		}
	}
	ipLen := len(p.bytes) - 14
	return fmt.Sprintf("%s from %c len %d ttl %d tos %#02x smac %x dmac %x (conv %d #%d, likely %s)",
		what, "AB"[p.from], ipLen, p.ttl, p.tos, p.smac[3:], p.dmac, p.f.id, p.n, p.guess)
}

var flagOrder = []struct {
	bit  uint8
	name string
}{{packet.TCPSyn, "SYN"}, {packet.TCPAck, "ACK"}, {packet.TCPFin, "FIN"}, {packet.TCPRst, "RST"},
	{packet.TCPPsh, "PSH"}, {packet.TCPUrg, "URG"}, {packet.TCPEce, "ECE"}, {packet.TCPCwr, "CWR"}}

// flagNames is an iptables --tcp-flags list ("SYN,ACK"; "NONE" for none).
func flagNames(f uint8) string {
	s := ""
	for _, x := range flagOrder {
		if f&x.bit != 0 {
			if s != "" {
				s += ","
			}
			s += x.name
		}
	}
	if s == "" {
		return "NONE"
	}
	return s
}
