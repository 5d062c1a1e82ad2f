package rules

import (
	"encoding/binary"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

func (x *prefix) contains(a *packet.Addr) bool {
	return binary.BigEndian.Uint64(a[0:8])&x.mask[0] == x.addr[0] &&
		binary.BigEndian.Uint64(a[8:16])&x.mask[1] == x.addr[1]
}

func (pr portRange) has(p uint16) bool { return p >= pr.lo && p <= pr.hi }

func (r *crule) multiMatch(p *packet.Packet) bool {
	n := int(r.nmulti)
	if n > len(r.multi) {
		n = len(r.multi)
	}
	for _, pr := range r.multi[:n] {
		switch {
		case r.has&mMultiSrc != 0:
			if pr.has(p.SrcPort) {
				return true
			}
		case r.has&mMultiDst != 0:
			if pr.has(p.DstPort) {
				return true
			}
		default:
			if pr.has(p.SrcPort) || pr.has(p.DstPort) {
				return true
			}
		}
	}
	return false
}

// match tests one rule. Flow-invariant matches come first; perPacket
// reports whether the result depended on a per-packet field (it did only if
// evaluation reached one). A match "fails" when its test equals its
// negation bit: (test == neg) is false-xor-not-negated or true-and-negated.
func (r *crule) match(p *packet.Packet, c *Ctx) (ok, perPacket bool) {
	if r.x.afterLimit != 0 {
		// -m limit written before other matches: the kernel spends a
		// token when the matches before it pass, whatever the ones after
		// it say. The limit is tested last among the first set.
		ok, perPacket = r.matchMask(p, c, r.has&^r.x.afterLimit, true)
		if !ok {
			return false, perPacket
		}
		ok, pp := r.matchMask(p, c, r.has&r.x.afterLimit, false)
		return ok, perPacket || pp
	}
	return r.matchMask(p, c, r.has, true)
}

// matchMask tests the matches of r in h (a subset of r.has), and its -m
// set matches when sets.
func (r *crule) matchMask(p *packet.Packet, c *Ctx, h matchBits, sets bool) (ok, perPacket bool) {
	neg := r.neg
	st, inPort := c.State, c.InPort
	if h == 0 && (!sets || len(r.sets) == 0) {
		return true, false
	}
	if h&mNever != 0 {
		return false, false
	}
	if h&mProto != 0 && (p.Proto == r.proto) == (neg&mProto != 0) {
		return false, false
	}
	if h&mSrc != 0 && r.src.contains(&p.Src) == (neg&mSrc != 0) {
		return false, false
	}
	if h&mDst != 0 && r.dst.contains(&p.Dst) == (neg&mDst != 0) {
		return false, false
	}
	if h&mSrcRange != 0 && r.x.srcR.contains(&p.Src) == (neg&mSrcRange != 0) {
		return false, false
	}
	if h&mDstRange != 0 && r.x.dstR.contains(&p.Dst) == (neg&mDstRange != 0) {
		return false, false
	}
	if h&mPorts != 0 && r.ports&(1<<inPort) == 0 {
		return false, false
	}
	if h&mState != 0 && (st&r.states != 0) == (neg&mState != 0) {
		return false, false
	}
	if sets && len(r.sets) != 0 && !r.setsMatch(p) {
		return false, false // -m set reads only flow-fixed fields (ipset.go)
	}
	if h&l4Bits != 0 {
		// No L4 header in a non-first fragment: the L4 matches fail
		// whatever their negation, as in the kernel.
		if p.Fragment && p.FragOffset != 0 {
			return false, false
		}
		if h&mSport != 0 && r.sport.has(p.SrcPort) == (neg&mSport != 0) {
			return false, false
		}
		if h&mDport != 0 && r.dport.has(p.DstPort) == (neg&mDport != 0) {
			return false, false
		}
		const multi = mMultiSrc | mMultiDst | mMultiAny
		if h&multi != 0 && r.multiMatch(p) == (neg&multi != 0) {
			return false, false
		}
		if h&mICMP != 0 {
			t := (r.icmpType == 0xff && p.IPVersion == 4) ||
				(p.ICMP.Type == r.icmpType && p.ICMP.Code >= r.icmpMin && p.ICMP.Code <= r.icmpMax)
			if t == (neg&mICMP != 0) {
				return false, false
			}
		}
	}
	pp := false
	if h&(mFrag|mTCPFlags|extPerPacket) != 0 {
		if h&mFrag != 0 && (p.Fragment && p.FragOffset != 0) == (neg&mFrag != 0) {
			return false, true
		}
		if h&mTCPFlags != 0 && (p.TCP.Flags&r.tcpMask == r.tcpComp) == (neg&mTCPFlags != 0) {
			return false, true
		}
		if h&extPerPacket != 0 && !r.extMatch(p) {
			return false, true
		}
		pp = true
	}
	if h&(ctxBits|mAddrType) != 0 {
		ok, pp2 := r.ctxMatch(p, c, h)
		return ok, pp || pp2
	}
	return true, pp
}

// frame is a return address on the chain call stack.
type frame struct{ chain, next int32 }

// walk runs a compiled table from its entry chain. For the raw table, res
// collects NOTRACK/CT results (the first one set wins, as xt_CT ignores a
// packet that already has a conntrack template, and traversal continues);
// for filter it is nil.
//
// c carries the state, ingress port and the rest of the context (ctx.go);
// c.Logs, when not nil, collects the LOG rules the packet matched (filter).
func (rs *RuleSet) walk(t *ctable, p *packet.Packet, c *Ctx, res *RawResult) (act Action, rule int32, cacheable bool) {
	chains := t.chains
	rules := rs.rules
	cacheable = true
	if len(chains) == 0 {
		return Accept, PolicyRule, true
	}
	var stack [maxDepth]frame
	sp := 0
	ci := int32(0)
	i, end := chains[0].start, chains[0].end
	for {
		if i >= end {
			// End of a chain: an implicit RETURN.
			if sp == 0 {
				return chains[0].policy, PolicyRule, cacheable
			}
			sp--
			ci, i = stack[sp].chain, stack[sp].next
			end = chains[ci].end
			continue
		}
		if i < 0 || int(i) >= len(rules) {
			return chains[0].policy, PolicyRule, cacheable // unreachable: compile keeps ranges in bounds
		}
		r := &rules[i]
		i++
		ok, pp := r.match(p, c)
		if pp {
			cacheable = false
		}
		if !ok {
			if c.hotdrop {
				// xt_connlimit's and xt_hashlimit's hotdrop: the
				// packet is dropped by the match itself, whatever
				// follows.
				return Drop, r.id, false
			}
			continue
		}
		switch r.target {
		case tAccept:
			return Accept, r.id, cacheable
		case tDrop:
			return Drop, r.id, cacheable
		case tReject:
			// A drop with an answer per packet: never cached, so a
			// cached DROP (or the fast path) cannot swallow the answer.
			return Drop, r.id, false
		case tLog:
			// A line per packet: the verdict of a packet that reached
			// a matching LOG rule is not cached.
			cacheable = false
			if c.Logs != nil {
				c.Logs.add(r.id)
			}
		case tReturn:
			if sp == 0 {
				return chains[0].policy, PolicyRule, cacheable
			}
			sp--
			ci, i = stack[sp].chain, stack[sp].next
			end = chains[ci].end
		case tJump, tGoto:
			if r.jump < 0 || int(r.jump) >= len(chains) {
				continue
			}
			if r.target == tJump {
				if sp >= len(stack) {
					continue // unreachable: the parser bounds nesting to maxDepth
				}
				stack[sp] = frame{ci, i}
				sp++
			}
			ci = r.jump
			i, end = chains[ci].start, chains[ci].end
		case tMark, tConnmark:
			if r.target == tConnmark && c.Conn != nil {
				// It writes the connection (or reads it into the
				// packet mark): a later packet must run it too.
				cacheable = false
			}
			r.x.runMarkTarget(c, r.target == tConnmark)
		case tNoTrack, tCTNoTrack, tCTHelper:
			if res != nil && !res.NoTrack && res.Helper == HelperNone {
				res.NoTrack = r.target != tCTHelper
				res.Helper = r.helper
				res.Rule = r.id
			}
		}
	}
}

// Filter evaluates the filter table's FORWARD chain for a packet in
// conntrack state st that arrived on port inPort (0: A, 1: B). It returns
// the verdict and whether it may be cached in the flow entry for the
// packet's direction, keyed by (st, inPort, Generation()) as
// CachedVerdict describes.
//
// Cacheable is false when any rule consulted on the way read a per-packet
// field (-f, --syn, --tcp-flags, -m length/ttl/hl/tos/dscp/mac/pkttype, and
// the matches of match_*.go listed in FilterCtx), and always for non-first fragments and
// ICMP/ICMPv6 error messages: an error is judged as RELATED to the
// connection it quotes but its own addresses and type belong to that one
// packet. Everything else a rule can read (addresses, protocol, ports, ICMP
// type and code of echo/info queries, which are fixed per flow direction)
// is fixed for a (flow, direction); the state and the ingress port are in
// the cache key.
//
// Non-IP frames never reach iptables on a Linux bridge (br_netfilter hands
// only IPv4/IPv6 to it): Filter accepts them with PolicyRule.
//
// Filter does not allocate and is safe for concurrent use.
func (rs *RuleSet) Filter(p *packet.Packet, st statemachine.CtState, inPort uint8) (v Verdict, cacheable bool) {
	return rs.FilterLog(p, st, inPort, nil)
}

// FilterLog is Filter that also reports, in logs when not nil, the LOG
// rules the packet matched on its way (logs is reset first). A verdict
// reached through a matching LOG rule, or given by a REJECT rule (whose
// Verdict.Reject names the answer), is not cacheable: both act on every
// packet. It is FilterCtx with a context holding only these.
func (rs *RuleSet) FilterLog(p *packet.Packet, st statemachine.CtState, inPort uint8, logs *LogHits) (v Verdict, cacheable bool) {
	c := Ctx{State: st, InPort: inPort, Logs: logs}
	return rs.FilterCtx(p, &c)
}

// Raw evaluates the raw table's PREROUTING chain, before conntrack, for a
// packet that arrived on port inPort. Conntrack state matches see INVALID
// there, as in the kernel (no conntrack entry is attached yet). A family
// with no raw rules costs one branch.
//
// Raw does not allocate and is safe for concurrent use.
func (rs *RuleSet) Raw(p *packet.Packet, inPort uint8) RawResult {
	var res RawResult
	rs.RawTo(p, inPort, &res)
	return res
}

// RawTo is Raw writing its result to res, for the per-packet path: a
// RawResult (five fields) returned by value is stored to the stack byte by
// byte and then copied with wider loads that the CPU cannot forward from
// those stores, a stall on every packet.
func (rs *RuleSet) RawTo(p *packet.Packet, inPort uint8, res *RawResult) {
	var fi int
	switch p.IPVersion {
	case 4:
		fi = 0
	case 6:
		fi = 1
	default:
		*res = RawResult{Rule: PolicyRule}
		return
	}
	*res = RawResult{Rule: PolicyRule, Passive: true}
	if rs.trivRaw[fi] {
		return
	}
	c := Ctx{State: statemachine.StateInvalid, InPort: inPort}
	act, rule, cacheable := rs.walk(&rs.raw[fi], p, &c, res)
	if act == Drop {
		res.Drop, res.Rule = true, rule
	}
	res.Passive = cacheable && !res.Drop && !res.NoTrack && res.Helper == HelperNone
}
