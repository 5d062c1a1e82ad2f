package bridge

import (
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// ruleState is what a pipeline keeps for the FORWARD rules beyond the rule
// set: the evaluation context (rules.Ctx: time, packet mark, connection)
// and the worker's own -m limit buckets (rules.Local: per worker, without
// locks; rules.Local says how that differs from the kernel's one bucket
// per rule). Owner only, like the pipeline.
type ruleState struct {
	ctx   rules.Ctx
	conn  rules.Conn
	local *rules.Local
	now   int64 // the time of the packet being processed (processParsed)
	// related names the connection an ICMP error being processed is
	// RELATED to (icmpError; hasRelated): the kernel hands that connection
	// to the rules with the error (ctinfo IP_CT_RELATED[_REPLY]). A
	// reference, not a pointer: keeping the looked-up *Entry in the
	// pipeline made the caller's lookup key escape to the heap.
	related    flowtable.EntryRef
	hasRelated bool
	cl         connCounts // -m connlimit (connlimit.go)
}

// relatedEntry returns the connection of the ICMP error being processed,
// or nil.
func (pl *Pipeline) relatedEntry() *flowtable.Entry {
	if !pl.rules.hasRelated {
		return nil
	}
	return pl.shard.Resolve(pl.rules.related)
}

// filterCtx evaluates the FORWARD chain for p with the full context, the
// LOG rules it matched going to pl.tg.logs (written by writeLogs). e is
// the packet's entry (for an ICMP error, the connection it is RELATED to),
// nil when it has none yet (create) or none at all; c is its connection
// state, e's when nil and e is not, the would-be connection's in create. A CONNMARK that changed the mark
// of e is written back; create writes the new entry's (saveConnMark).
func (pl *Pipeline) filterCtx(s *Settings, p *packet.Packet, in Port, e *flowtable.Entry, c *statemachine.Conn, r *Result) (rules.Verdict, bool) {
	rs := s.Rules
	rst := &pl.rules
	if rst.local == nil || rst.local.Generation() != rs.Generation() {
		// A new rule set: fresh buckets, as iptables-restore gives (one
		// allocation per reload, not per packet).
		rst.local = rs.NewLocal()
	}
	if c == nil && e != nil {
		c = &e.Conn
	}
	x := &rst.ctx
	*x = rules.Ctx{State: r.State, InPort: uint8(in), Dir: r.Dir, Now: rst.now, Local: rst.local, Logs: &pl.tg.logs}
	hasConn := c != nil && r.State != statemachine.StateInvalid && r.State != statemachine.StateUntracked
	if hasConn && rs.ReadsConn() {
		cn := &rst.conn
		var t flowtable.Tuple
		if e != nil {
			t = e.Tuple()
			*cn = rules.Conn{Mark: pl.shard.ConnMark(e), Confirmed: true, Expires: c.Expires}
		} else {
			t, _ = flowtable.TupleFromPacket(p)
			*cn = rules.Conn{}
		}
		cn.Status, cn.Proto = c.Status, c.Proto
		cn.Src, cn.Dst, cn.SrcPort, cn.DstPort = t.Src, t.Dst, t.SrcPort, t.DstPort
		cn.Closed = closedTCP(c)
		x.Conn = cn
	}
	x.Counts = pl.countsFor(rs, e, hasConn)
	old := rst.conn.Mark
	v, cacheable := rs.FilterCtx(p, x)
	if x.Conn != nil && e != nil && x.Conn.Mark != old {
		pl.shard.SetConnMark(e, x.Conn.Mark)
		if pl.ev.ring != nil {
			// The kernel's IPCT_MARK: listeners (conntrack -E, the state
			// sync, which sends the mark with the entry) hear of it.
			pl.emit(EventUpdate, e, false)
		}
	}
	return v, cacheable
}

// saveConnMark gives the entry create just inserted the mark its first
// packet's CONNMARK set (the kernel's unconfirmed ct carries it into the
// table).
func (pl *Pipeline) saveConnMark(e *flowtable.Entry) {
	if x := &pl.rules.ctx; x.Conn != nil && x.Conn.Mark != 0 {
		pl.shard.SetConnMark(e, x.Conn.Mark)
	}
}
