package statemachine

import (
	"time"

	"github.com/statewire/statewire/packet"
)

// udpStreamAfter is how long after creation a replied UDP flow must still
// be active to count as a stream (kernel: stream_ts = jiffies + 2 s).
const udpStreamAfter = int64(2 * time.Second)

// Protocol numbers without a name in package packet.
const protoUDPLite uint8 = 136

// ctinfo returns the user-land state of an accepted packet (kernel ctinfo
// chosen at lookup): replies are ESTABLISHED; original packets are NEW (or
// RELATED for an expected connection) until a reply was seen.
func ctinfo(c *Conn, dir Dir) CtState {
	if dir != Original || c.Status&StatusSeenReply != 0 {
		return StateEstablished
	}
	if c.Status&StatusExpected != 0 {
		return StateRelated
	}
	return StateNew
}

func invalid(r InvalidReason) Result { return Result{State: StateInvalid, Reason: r} }

// New validates the first packet of a would-be connection and initialises
// c from it (kernel <proto>_new followed by the first packet): a TCP SYN
// gives SYN_SENT, an ACK-class packet ESTABLISHED with loose pickup, else
// INVALID; UDP and generic protocols always start; ICMP and ICMPv6 only
// from a request type. c is reset except for the StatusExpected bit the
// flow table may have set; c.Expires is now + timeout.
//
// The result is StateNew (StateRelated when c has StatusExpected), or
// StateInvalid with a reason, in which case the caller creates no entry.
func New(c *Conn, p *packet.Packet, now int64, cfg *Config) Result {
	*c = Conn{Proto: p.Proto, Status: c.Status & StatusExpected}
	if p.Proto == packet.ProtoUDP || p.Proto == packet.ProtoUDPLite {
		c.setUDPCreated(now)
	}
	switch p.Proto {
	case packet.ProtoTCP:
		if r := tcpError(&p.TCP); r != ReasonNone {
			return invalid(r)
		}
		if r := tcpNew(c, p, cfg); r != ReasonNone {
			return invalid(r)
		}
		switch v, r := tcpPacket(c, p, Original, now, cfg); v {
		case tcpInvalid:
			return invalid(r)
		case tcpKill:
			return Result{State: ctinfo(c, Original), Outcome: Outcome{Kill: true}}
		}
	case packet.ProtoUDP, protoUDPLite:
		c.Expires = now + int64(cfg.Timeouts.UDP)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if packet.ICMPClass(p.IPVersion, p.ICMP.Type) != packet.ICMPRequest {
			return invalid(ReasonICMPNotRequest)
		}
		c.Expires = now + int64(icmpTimeout(p.Proto, cfg))
	default:
		c.Expires = now + int64(cfg.Timeouts.Generic)
	}
	return Result{State: ctinfo(c, Original)}
}

// Update runs a packet of an existing connection in direction dir and
// returns its user-land state. Accepted reply packets set SEEN_REPLY after
// the protocol handler ran, as the kernel does, so the handler sees the
// first reply as "not replied".
func Update(c *Conn, p *packet.Packet, dir Dir, now int64, cfg *Config) Result {
	if p.Proto != c.Proto {
		return invalid(ReasonProto)
	}
	res := Result{State: ctinfo(c, dir)}
	switch c.Proto {
	case packet.ProtoTCP:
		if r := tcpError(&p.TCP); r != ReasonNone {
			return invalid(r)
		}
		switch v, r := tcpPacket(c, p, dir, now, cfg); v {
		case tcpInvalid:
			return invalid(r)
		case tcpIgnore:
			res.Ignored = true
		case tcpKill:
			res.Kill = true
		case tcpReopen:
			// The caller deletes this entry and creates a new one
			// from this packet; New decides its state.
			return Result{State: StateNew, Outcome: Outcome{Reopen: true}}
		}
	case packet.ProtoUDP, protoUDPLite:
		udpPacket(c, now, cfg)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		c.Expires = now + int64(icmpTimeout(c.Proto, cfg))
	default:
		c.Expires = now + int64(cfg.Timeouts.Generic)
	}
	if dir == Reply {
		c.Status |= StatusSeenReply
	}
	return res
}

// udpPacket refreshes a UDP flow (kernel nf_conntrack_udp_packet): 30 s
// until a reply was seen; after that 30 s within 2 s of creation, then the
// stream timeout and ASSURED.
func udpPacket(c *Conn, now int64, cfg *Config) {
	if c.Status&StatusSeenReply == 0 || now-c.udpCreated() <= udpStreamAfter {
		c.Expires = now + int64(cfg.Timeouts.UDP)
		return
	}
	c.Expires = now + int64(cfg.Timeouts.UDPStream)
	c.Status |= StatusAssured
}

func icmpTimeout(proto uint8, cfg *Config) time.Duration {
	if proto == packet.ProtoICMPv6 {
		return cfg.Timeouts.ICMPv6
	}
	return cfg.Timeouts.ICMP
}

// A UDP connection has no TCP state, so its creation time (for the 2 s
// stream rule) is kept in the TCP part, as the kernel keeps each
// protocol's data in one union (struct nf_conntrack ct->proto). This keeps
// Conn, and so a flow-table entry, at 128 bytes.
func (c *Conn) setUDPCreated(now int64) {
	c.TCP.LastSeq, c.TCP.LastAck = uint32(uint64(now)>>32), uint32(now)
}

func (c *Conn) udpCreated() int64 {
	return int64(uint64(c.TCP.LastSeq)<<32 | uint64(c.TCP.LastAck))
}
