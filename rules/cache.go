package rules

import "github.com/statewire/statewire/statemachine"

// A verdict may be cached in a flow entry and reused for later packets of
// the same flow only where the FORWARD chain cannot decide otherwise. What
// one evaluation read, and so what a cached verdict depends on:
//
//   - the flow and its direction: addresses, protocol, ports, the ICMP
//     type and code of a query (fixed for a direction: the key holds the
//     request type and code, and a reply type marks the reply direction),
//     the VLAN (part of the key);
//   - the conntrack state the packet was judged in;
//   - the ingress port. A direction does not fix it: a host on port B can
//     send a frame carrying the tuple of a flow that port A opened (spoofed,
//     or a misplaced cable), and rules such as --physdev-in A -m conntrack
//     --ctstate NEW decide differently for it;
//   - the rule set, through its Generation (kept beside the cached bytes in
//     the entry). The ipsets that -m set reads are part of the rule set:
//     loading new sets compiles a new RuleSet with a new Generation.
//
// Everything else a rule can read changes from packet to packet (TCP flags,
// fragment offset, an ICMP error's own type and addresses, and the matches
// of ext.go but -m iprange: IP length, TTL/hop limit, TOS/DSCP, the source
// MAC and the destination MAC's packet type), and so does what the matches
// and targets of match_*.go keep between packets (-m limit buckets, -m
// recent lists, the connection's mark, status and expiry; match_ctx.go
// lists which of them keep a verdict cacheable and why): Filter and
// FilterCtx report such an evaluation as not cacheable, and it is never
// stored. Neither is a verdict given by REJECT (a drop with an answer per
// packet: a cached DROP would lose the answer) or one reached through a
// matching LOG rule (a line per packet).
//
// CachedVerdict holds the verdict with the state and port it was computed
// for, so a lookup hits only when both match. The XDP fast path compares
// the same byte (package offload), so its layout is fixed:
//
//	bit 0      1 = ACCEPT, 0 = DROP
//	bits 1..5  the statemachine.CtState (one bit set)
//	bit 6      the ingress port (0 = A, 1 = B)
//	bit 7      the raw table left this (direction, port) alone
//	           (RawResult.Passive): the fast path may take it
//
// The zero value means nothing is cached: every valid CachedVerdict has a
// state bit set.
type CachedVerdict uint8

// cachedPortShift is where the ingress port sits in a CachedVerdict.
const cachedPortShift = 6

// cachedRawPassive marks a verdict whose packets the raw table leaves
// alone. It is not part of what Lookup matches: the raw table runs on
// every packet the pipeline sees anyway.
const cachedRawPassive CachedVerdict = 1 << 7

// allStates are the CtState bits a CachedVerdict can carry.
const allStates = statemachine.StateInvalid | statemachine.StateNew | statemachine.StateEstablished |
	statemachine.StateRelated | statemachine.StateUntracked

// CacheVerdict returns the cached form of action a for a packet judged in
// state st that arrived on port inPort (0 or 1).
func CacheVerdict(a Action, st statemachine.CtState, inPort uint8) CachedVerdict {
	c := CachedVerdict(st&allStates)<<1 | CachedVerdict(inPort&1)<<cachedPortShift
	if a == Accept {
		c |= 1
	}
	return c
}

// WithRawPassive returns c marked as computed for a packet the raw table
// left alone (RawResult.Passive).
func (c CachedVerdict) WithRawPassive() CachedVerdict { return c | cachedRawPassive }

// FastPath returns the byte the XDP fast path compares with its own
// (accept, state, port) for a packet (package offload), or 0 when packets
// of this verdict must not be taken there: a DROP (the slow path counts
// it), or a verdict whose packets the raw table may act on.
func (c CachedVerdict) FastPath() uint8 {
	if c&1 == 0 || c&cachedRawPassive == 0 {
		return 0
	}
	return uint8(c &^ cachedRawPassive)
}

// Lookup returns the cached action for a packet in state st that arrived
// on port inPort, and whether c holds one for exactly that state and port.
func (c CachedVerdict) Lookup(st statemachine.CtState, inPort uint8) (Action, bool) {
	if c == 0 || c&^(1|cachedRawPassive) != CacheVerdict(Drop, st, inPort) {
		return Drop, false
	}
	if c&1 != 0 {
		return Accept, true
	}
	return Drop, true
}
