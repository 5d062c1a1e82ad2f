package flowtable

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Entry flag bits (Entry.flags).
const (
	flagUsed      uint8 = 1 << iota // the slot holds a live entry
	flagSwapped                     // the original direction runs from (B, PortB) to (A, PortA)
	flagOffloaded                   // the entry is offered to the XDP fast path (package offload)
)

// Entry is one tracked connection. Entries live in a shard's preallocated
// slot array and are reused after deletion; a *Entry is valid only until the
// owner deletes it or a later Lookup/Insert/Expire on the same shard may
// have removed it (lazy expiry, early drop). Only the shard's owner goroutine
// may read or write an Entry.
//
// The layout keeps the chain link, the key and Conn.Expires in the first 64
// bytes so a chain walk and the expiry check touch as few cache lines as
// possible. The original tuple is not stored: it is the key plus one bit.
type Entry struct {
	next uint32 // index+1 of the next entry in the bucket chain (or free list); 0 ends it
	gen  uint32 // incremented at each allocation of the slot; makes EntryRef detect reuse
	key  Key

	// Conn is the protocol state, read and written by the state machines.
	// Insert zeroes it except Proto and Created; the caller sets Expires.
	Conn statemachine.Conn

	// VerdictGen is the rule-set generation the cached verdicts were
	// computed under; Verdict[d] is the cached verdict for packets of
	// direction d, 0 meaning none. The values are rules.CachedVerdict
	// bytes: they carry the state and the ingress port they were computed
	// for, and the offload map copies them. Use CachedVerdict and
	// CacheVerdict.
	VerdictGen uint32
	Verdict    [2]uint8

	// Helper is the id of the conntrack helper attached to the connection,
	// 0 for none. Deleting an entry with a helper removes the expectations
	// it is master of.
	Helper uint8

	flags uint8
}

// Key returns the canonical key of the entry.
func (e *Entry) Key() Key { return e.key }

// Tuple returns the tuple of the original direction (the direction of the
// packet that created the entry; for ICMP the request).
func (e *Entry) Tuple() Tuple {
	k := &e.key
	t := Tuple{Proto: k.Proto, L3: k.L3, VLAN: k.VLAN}
	if e.flags&flagSwapped != 0 {
		t.Src, t.Dst, t.SrcPort, t.DstPort = k.B, k.A, k.PortB, k.PortA
	} else {
		t.Src, t.Dst, t.SrcPort, t.DstPort = k.A, k.B, k.PortA, k.PortB
	}
	return t
}

// DirOf returns the direction of p, a packet whose key is the entry's key.
// For ICMP/ICMPv6 a request is Original and a reply is Reply.
func (e *Entry) DirOf(p *packet.Packet) statemachine.Dir {
	k := &e.key
	if k.IsICMP() {
		if packet.ICMPClass(k.L3, p.ICMP.Type) == packet.ICMPReply {
			return statemachine.Reply
		}
		return statemachine.Original
	}
	// The packet runs A→B unless its source is B's endpoint (generic
	// protocols have zero ports in the key: compare addresses only).
	fromA := p.Src == k.A && (!hasPorts(k.Proto) || p.SrcPort == k.PortA)
	return e.dir(fromA)
}

// InnerDir returns the direction of an ICMP/ICMPv6 error p whose quoted
// packet belongs to the entry (KeyOf gave the entry's key): the
// direction opposite to the quoted packet, which is the direction in which
// the kernel finds the inverted inner tuple. RELATED_REPLY when Reply.
func (e *Entry) InnerDir(p *packet.Packet) statemachine.Dir {
	k, in := &e.key, &p.Inner
	var quoted statemachine.Dir
	if k.IsICMP() {
		quoted = statemachine.Original
		if packet.ICMPClass(k.L3, in.ICMP.Type) == packet.ICMPReply {
			quoted = statemachine.Reply
		}
	} else {
		fromA := in.Src == k.A && (!hasPorts(k.Proto) || in.SrcPort == k.PortA)
		quoted = e.dir(fromA)
	}
	return quoted ^ 1
}

// dir turns "the packet runs from A" into a direction, given which way the
// original direction runs. When both endpoints are equal every packet is
// Original.
func (e *Entry) dir(fromA bool) statemachine.Dir {
	swapped := e.flags&flagSwapped != 0
	if fromA != swapped {
		return statemachine.Original
	}
	return statemachine.Reply
}

// Offloaded reports whether the entry is offered to the XDP fast path:
// its window state, Expires and counters live in the fast-path map until
// the owner takes it back (SetOffloaded(false)). Owner only.
func (e *Entry) Offloaded() bool { return e.flags&flagOffloaded != 0 }

// SetOffloaded marks the entry offered to the fast path (on) or taken back
// (off). Owner only; Insert clears the mark.
func (e *Entry) SetOffloaded(on bool) {
	if on {
		e.flags |= flagOffloaded
	} else {
		e.flags &^= flagOffloaded
	}
}

// CachedVerdict returns the verdict cached for direction d under rule-set
// generation gen, and whether there is one.
func (e *Entry) CachedVerdict(d statemachine.Dir, gen uint32) (uint8, bool) {
	if e.VerdictGen != gen {
		return 0, false
	}
	v := e.Verdict[d&1]
	return v, v != 0
}

// CacheVerdict stores v (non-zero) as the verdict for direction d under
// generation gen; a new generation invalidates the other direction's verdict.
func (e *Entry) CacheVerdict(d statemachine.Dir, gen uint32, v uint8) {
	if e.VerdictGen != gen {
		e.VerdictGen = gen
		e.Verdict = [2]uint8{}
	}
	e.Verdict[d&1] = v
}

// EntryRef names an entry from outside its shard (an expectation's master):
// shard, slot and the slot's generation, so a slot reused by another
// connection no longer resolves.
type EntryRef struct {
	Index uint32
	Gen   uint32
	Shard uint16
}

// canEarlyDrop reports whether e may be evicted under memory pressure by the
// sweep (kernel gc_worker_can_early_drop): not ASSURED, or TCP in a closing
// state (tcp_can_early_drop).
func canEarlyDrop(e *Entry) bool {
	if e.Conn.Status&statemachine.StatusAssured == 0 {
		return true
	}
	if e.key.Proto != packet.ProtoTCP {
		return false
	}
	switch e.Conn.State {
	case statemachine.TCPFinWait, statemachine.TCPCloseWait, statemachine.TCPLastAck,
		statemachine.TCPTimeWait, statemachine.TCPClose:
		return true
	}
	return false
}
