package bridge

import (
	"encoding/binary"
	"time"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
)

// REJECT: the FORWARD chain dropped the frame and asks for an answer
// (rules.Verdict.Reject). The answer is built as the kernel's bridge
// reject builds it (net/ipv4/netfilter/nf_reject_ipv4.c
// nf_reject_skb_v4_tcp_reset / nf_reject_skb_v4_unreach, and their IPv6
// twins in nf_reject_ipv6.c, sent by nft_reject_bridge.c): the frame's
// MAC addresses swapped, its VLAN tags kept, out of the port it came in
// on. The IP header is the kernel's nf_reject_iphdr_put: TOS 0, ID 0, DF,
// TTL 64 (sysctl_ip_default_ttl); IPv6 traffic class 0, flow label 0, hop
// limit 64 (the default hop_limit). Checksums are complete.
//
//   - tcp-reset: no answer to a RST, a non-first fragment or a segment
//     with a bad checksum (nf_reject_ip_tcphdr_get). A segment with ACK is
//     answered with RST, seq = its ack; one without ACK with RST+ACK,
//     seq 0, ack = its seq + SYN + FIN + payload length. Window 0.
//   - ICMP/ICMPv6 destination unreachable with the rule's code, quoting
//     the packet from its IP header: at most 536 bytes (IPv4: the answer
//     stays within 576) or 1220 (IPv6: within 1280, the minimum MTU).
//     No answer to a non-first fragment, a bad checksum, an ICMP or ICMPv6
//     error (or an unknown ICMP type, which icmp_send takes for one), a
//     packet to or from a broadcast or multicast address or sent to a
//     group MAC address (icmp_send, icmp6_send).
//
// ICMP answers are rate-limited as the kernel's icmp_send limits them:
// per destination host icmp_ratelimit (1000 ms, a burst of 6:
// XRLIM_BURST_FACTOR) and overall icmp_msgs_per_sec (1000/s, burst
// icmp_msgs_burst 50). Each worker limits its own answers (the kernel's
// global bucket is per namespace). RSTs are not limited, as in the kernel.

// Sizes and limits of the answers.
const (
	rejectQuote4   = 536  // nf_reject_skb_v4_unreach: min(536, len)
	rejectQuote6   = 1220 // nf_reject_skb_v6_unreach: min(1220, len)
	rejectTTL      = 64   // sysctl_ip_default_ttl, IPv6 hop_limit
	maxRejectFrame = 14 + 4*packet.MaxVLANTags + 40 + 8 + rejectQuote6

	icmpPeerTimeout  = int64(time.Second) // icmp_ratelimit, 1000 ms
	icmpPeerBurst    = 6                  // XRLIM_BURST_FACTOR
	icmpMsgsPerSec   = 1000               // icmp_msgs_per_sec
	icmpMsgsBurst    = 50                 // icmp_msgs_burst
	icmpPeerSlots    = 256
	icmpGlobalPerMsg = int64(time.Second) / icmpMsgsPerSec
)

// rejectOutcome says what became of a REJECT's answer.
type rejectOutcome uint8

const (
	rejectBuilt   rejectOutcome = iota
	rejectNone                  // the kernel sends nothing for this packet (see above)
	rejectLimited               // an ICMP answer over the rate limit
)

// TargetStats count what REJECT and LOG did. Owner-only, as Stats.
type TargetStats struct {
	Rejects       [rules.NumRejectWith]uint64 // answers put on the ingress port's TX ring, by kind
	RejectLimited uint64                      // ICMP answers not sent: over the rate limit
	RejectNone    uint64                      // rejected frames the kernel would not answer (a RST, an ICMP error, broadcast, bad checksum, later fragment)
	RejectNoTX    uint64                      // answers not sent: no room on the ingress port's TX ring or in the buffer
	LogLines      uint64                      // LOG lines written
	LogSuppressed uint64                      // LOG lines over the rate limit, not written
}

func (s *TargetStats) add(o *TargetStats) {
	for i := range s.Rejects {
		s.Rejects[i] += o.Rejects[i]
	}
	s.RejectLimited += o.RejectLimited
	s.RejectNone += o.RejectNone
	s.RejectNoTX += o.RejectNoTX
	s.LogLines += o.LogLines
	s.LogSuppressed += o.LogSuppressed
}

// RejectsSent returns the answers sent, of every kind.
func (s *TargetStats) RejectsSent() uint64 {
	var n uint64
	for _, v := range s.Rejects {
		n += v
	}
	return n
}

// bucket is a token bucket in nanoseconds of credit, as inet_peer's
// rate_tokens are jiffies of credit.
type bucket struct {
	tokens, last int64
	used         bool
}

// take refills b up to max at now and takes cost if it has it.
func (b *bucket) take(now, cost, max int64, commit bool) bool {
	t := b.tokens
	if !b.used {
		t = max // a new peer starts with the full burst (rate_last = jiffies - 60*HZ)
	} else if now > b.last {
		t += now - b.last
	}
	if t > max {
		t = max
	}
	ok := t >= cost
	if commit {
		b.used, b.last = true, now
		if ok {
			t -= cost
		}
		b.tokens = t
	}
	return ok
}

// icmpLimit is a worker's ICMP answer limiter: one bucket per destination
// host (hashed into a fixed table; a colliding host takes the slot over)
// and one for all. Owner only; allocates nothing.
type icmpLimit struct {
	global bucket
	peers  [icmpPeerSlots]struct {
		addr packet.Addr
		b    bucket
	}
}

func (l *icmpLimit) allow(dst *packet.Addr, now int64) bool {
	h := uint32(2166136261)
	for _, c := range dst {
		h = (h ^ uint32(c)) * 16777619
	}
	p := &l.peers[h%icmpPeerSlots]
	if p.addr != *dst {
		p.addr, p.b = *dst, bucket{}
	}
	gmax := icmpMsgsBurst * icmpGlobalPerMsg
	if !p.b.take(now, icmpPeerTimeout, icmpPeerBurst*icmpPeerTimeout, false) || !l.global.take(now, icmpGlobalPerMsg, gmax, false) {
		// Refill without taking, so the clock of each bucket moves on.
		p.b.take(now, 1<<62, icmpPeerBurst*icmpPeerTimeout, true)
		l.global.take(now, 1<<62, gmax, true)
		return false
	}
	p.b.take(now, icmpPeerTimeout, icmpPeerBurst*icmpPeerTimeout, true)
	l.global.take(now, icmpGlobalPerMsg, gmax, true)
	return true
}

// targetState is a pipeline's REJECT and LOG state: the LOG rules the
// current packet matched, the answer scratch, the limiters and counters.
// Owner only.
type targetState struct {
	logs   rules.LogHits
	pkt    packet.Packet
	icmp   icmpLimit
	logLim tokenBucket
	line   []byte // LOG line scratch, grown once
	ans    [maxRejectFrame]byte
}

// RejectAnswer returns the answer of kind k (a Result.Reject) to frame,
// which the pipeline rejected, in the pipeline's scratch (valid until the
// next call): empty when the kernel would send nothing or the ICMP limit
// refuses (both counted). The caller sends it and calls NoteRejectSent.
// Owner only; allocates nothing.
func (pl *Pipeline) RejectAnswer(frame []byte, k rules.RejectWith, now int64) []byte {
	st := &pl.stats.Targets
	if k == rules.RejectNone {
		return nil
	}
	n, out := buildReject(pl.tg.ans[:], frame, k, &pl.tg.pkt, &pl.tg.icmp, now)
	switch out {
	case rejectNone:
		st.RejectNone++
	case rejectLimited:
		st.RejectLimited++
	}
	return pl.tg.ans[:n]
}

// NoteRejectSent counts an answer RejectAnswer built: sent (on the TX
// ring) or not.
func (pl *Pipeline) NoteRejectSent(k rules.RejectWith, sent bool) {
	st := &pl.stats.Targets
	if !sent {
		st.RejectNoTX++
	} else if int(k) < len(st.Rejects) {
		st.Rejects[k]++
	}
}

// MaxRejectFrame is the longest answer RejectAnswer builds.
const MaxRejectFrame = maxRejectFrame

// buildReject is RejectAnswer's pure part: it parses frame into p (with
// checksum verification, as the kernel verifies before answering) and
// writes the answer of kind k into dst. lim, when not nil, limits ICMP
// answers.
func buildReject(dst, frame []byte, k rules.RejectWith, p *packet.Packet, lim *icmpLimit, now int64) (int, rejectOutcome) {
	if packet.Parse(frame, 0, packet.Options{VerifyChecksum: true}, p) != packet.ReasonOK {
		return 0, rejectNone
	}
	if p.IPVersion != 4 && p.IPVersion != 6 || p.Fragment && p.FragOffset != 0 || p.Truncated {
		return 0, rejectNone
	}
	l3, l4 := int(p.L3Off), int(p.L4Off)
	if l3 < 14 || l4 <= l3 || l4 > len(frame) || len(dst) < maxRejectFrame {
		return 0, rejectNone
	}
	v6 := p.IPVersion == 6
	if k == rules.RejectTCPReset {
		if p.Proto != packet.ProtoTCP || p.TCP.Flags&packet.TCPRst != 0 || !unicastPair(p) {
			return 0, rejectNone
		}
		return buildRST(dst, frame, p, v6), rejectBuilt
	}
	if k.IPv6() != v6 || frame[0]&1 != 0 || !unicastPair(p) {
		return 0, rejectNone
	}
	if packet.IsICMP(p.IPVersion, p.Proto) && !icmpQuery(p) {
		return 0, rejectNone
	}
	if lim != nil && !lim.allow(&p.Src, now) {
		return 0, rejectLimited
	}
	return buildUnreach(dst, frame, p, k, v6), rejectBuilt
}

// icmpQuery reports whether an ICMP/ICMPv6 packet may be answered with an
// error: a query or reply, not an error. icmp_send treats an unknown ICMP
// type as an error; ICMPv6 errors are the types below 128.
func icmpQuery(p *packet.Packet) bool {
	if p.IPVersion == 6 {
		return p.ICMP.Type >= 128
	}
	switch p.ICMP.Type {
	case 0, 8, 13, 14, 15, 16, 17, 18:
		return true
	}
	return false
}

// unicastPair reports whether both addresses are unicast: nf_send_reset
// and icmp_send answer nothing sent to or from a broadcast or multicast
// address (the limited broadcast, 224/4; ff00::/8 and :: for IPv6).
func unicastPair(p *packet.Packet) bool {
	for _, a := range [2]*packet.Addr{&p.Src, &p.Dst} {
		if p.IPVersion == 6 {
			if a[0] == 0xff || *a == (packet.Addr{}) {
				return false
			}
			continue
		}
		v4 := a[12:16]
		if v4[0]&0xf0 == 0xe0 || v4[0] == 0xff && v4[1] == 0xff && v4[2] == 0xff && v4[3] == 0xff ||
			v4[0] == 0 && v4[1] == 0 && v4[2] == 0 && v4[3] == 0 {
			return false
		}
	}
	return true
}

// putL2 writes the frame's Ethernet header and tags with the addresses
// swapped and returns its length.
func putL2(dst, frame []byte, l3 int) {
	copy(dst[:l3], frame[:l3])
	copy(dst[0:6], frame[6:12])
	copy(dst[6:12], frame[0:6])
}

// putIP writes the answer's IP header at dst[l3:] (swapped addresses) for
// an L4 part of l4len bytes and returns the offset of the L4 header.
func putIP(dst, frame []byte, l3 int, v6 bool, proto uint8, l4len int) int {
	h := dst[l3:]
	o := frame[l3:]
	if v6 {
		binary.BigEndian.PutUint32(h[0:4], 6<<28)
		binary.BigEndian.PutUint16(h[4:6], uint16(l4len))
		h[6], h[7] = proto, rejectTTL
		copy(h[8:24], o[24:40])
		copy(h[24:40], o[8:24])
		return l3 + 40
	}
	h[0], h[1] = 0x45, 0
	binary.BigEndian.PutUint16(h[2:4], uint16(20+l4len))
	binary.BigEndian.PutUint16(h[4:6], 0)      // id 0
	binary.BigEndian.PutUint16(h[6:8], 0x4000) // DF
	h[8], h[9] = rejectTTL, proto
	h[10], h[11] = 0, 0
	copy(h[12:16], o[16:20])
	copy(h[16:20], o[12:16])
	binary.BigEndian.PutUint16(h[10:12], ^fold16(sum16(h[:20], 0)))
	return l3 + 20
}

// buildRST writes the kernel's RST for a TCP segment.
func buildRST(dst, frame []byte, p *packet.Packet, v6 bool) int {
	l3 := int(p.L3Off)
	putL2(dst, frame, l3)
	t := putIP(dst, frame, l3, v6, packet.ProtoTCP, 20)
	th := dst[t : t+20]
	clear(th)
	binary.BigEndian.PutUint16(th[0:2], p.DstPort)
	binary.BigEndian.PutUint16(th[2:4], p.SrcPort)
	if p.TCP.Flags&packet.TCPAck != 0 {
		binary.BigEndian.PutUint32(th[4:8], p.TCP.Ack)
		th[13] = packet.TCPRst
	} else {
		// ack = seq + SYN + FIN + payload (oldskb->len - headers).
		pay := int64(p.IPLen) - int64(int(p.L4Off)-l3) - int64(p.TCP.DataOff)
		if pay < 0 {
			pay = 0
		}
		ack := p.TCP.Seq + uint32(pay)
		if p.TCP.Flags&packet.TCPSyn != 0 {
			ack++
		}
		if p.TCP.Flags&packet.TCPFin != 0 {
			ack++
		}
		binary.BigEndian.PutUint32(th[8:12], ack)
		th[13] = packet.TCPRst | packet.TCPAck
	}
	th[12] = 5 << 4
	binary.BigEndian.PutUint16(th[16:18], ^fold16(sum16(th, pseudo(dst[l3:], v6, packet.ProtoTCP, 20))))
	return t + 20
}

// buildUnreach writes the kernel's destination unreachable for a packet.
func buildUnreach(dst, frame []byte, p *packet.Packet, k rules.RejectWith, v6 bool) int {
	l3 := int(p.L3Off)
	q := int(p.IPLen)
	if have := len(frame) - l3; q > have {
		q = have
	}
	limit := rejectQuote4
	proto, typ := packet.ProtoICMP, uint8(3)
	if v6 {
		limit, proto, typ = rejectQuote6, packet.ProtoICMPv6, 1
	}
	q = min(q, limit)
	putL2(dst, frame, l3)
	t := putIP(dst, frame, l3, v6, proto, 8+q)
	ih := dst[t : t+8+q]
	ih[0], ih[1], ih[2], ih[3] = typ, k.ICMPCode(), 0, 0
	binary.BigEndian.PutUint32(ih[4:8], 0)
	copy(ih[8:], frame[l3:l3+q])
	var ps uint32
	if v6 {
		ps = pseudo(dst[l3:], true, proto, 8+q)
	}
	binary.BigEndian.PutUint16(ih[2:4], ^fold16(sum16(ih, ps)))
	return t + 8 + q
}

// pseudo returns the pseudo-header sum of the answer's IP header ip.
func pseudo(ip []byte, v6 bool, proto uint8, n int) uint32 {
	var s uint32
	if v6 {
		s = sum16(ip[8:40], 0)
	} else {
		s = sum16(ip[12:20], 0)
	}
	return s + uint32(proto) + uint32(n)
}

func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold16(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
