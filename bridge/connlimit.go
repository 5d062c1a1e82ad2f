package bridge

import (
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// connCounts is what a pipeline keeps for -m connlimit (rules'
// match_connlimit.go): for each entry slot of its shard, the counts of the
// rule set the connection is in, and the counts a connection being created
// joined before it is in the table. The counts themselves are the rule
// set's, shared by all workers; which connections are in them is known
// only here, so only the owner of a connection takes it out: when it
// closes (TCP TIME_WAIT or CLOSE, after the tracker's update) or leaves the
// table (the remove hook: expiry, conntrack -D/-F, early drop, a reopening
// SYN, a tracker kill). Owner only, like the pipeline.
//
// The slots are allocated the first time a rule set with a connlimit rule
// is evaluated (20 bytes per entry slot), and kept: a connection's
// ConnCounts of an earlier rule set is emptied the next time it is seen.
// They live on the heap, not in the state file: after a restart the rule
// set is new and its counts start at 0 anyway.
type connCounts struct {
	slots   []rules.ConnCounts
	pending rules.ConnCounts // the connection create is judging
	rs      *rules.RuleSet   // the rule set of the last evaluation: whose counts slots hold
}

// countsFor returns what filterCtx hands the rules in Ctx.Counts: the
// entry's slot, the pending counts for a connection not yet in the table
// (e nil, hasConn), or nil.
func (pl *Pipeline) countsFor(rs *rules.RuleSet, e *flowtable.Entry, hasConn bool) *rules.ConnCounts {
	cc := &pl.rules.cl
	cc.rs = rs
	if !rs.HasConnlimit() || !hasConn {
		return nil
	}
	if cc.slots == nil {
		cc.slots = make([]rules.ConnCounts, pl.shard.Max())
		pl.syncRemoveHook()
	}
	if e == nil {
		cc.pending = rules.ConnCounts{}
		return &cc.pending
	}
	if ref := pl.shard.Ref(e); ref.Gen != 0 && int(ref.Index) < len(cc.slots) {
		return &cc.slots[ref.Index]
	}
	return nil
}

// keepCounts gives the entry create just inserted the counts its first
// packet joined.
func (pl *Pipeline) keepCounts(e *flowtable.Entry) {
	cc := &pl.rules.cl
	if cc.slots == nil || cc.pending.Empty() {
		return
	}
	if i := pl.shard.Ref(e).Index; int(i) < len(cc.slots) {
		cc.slots[i] = cc.pending
		cc.pending = rules.ConnCounts{}
	}
}

// dropPending takes a connection that create did not insert (its first
// packet dropped, or the table full) out of the counts it joined: the
// kernel's unconfirmed conntrack is gone, and its tuple with it.
func (pl *Pipeline) dropPending() {
	cc := &pl.rules.cl
	if cc.rs != nil && !cc.pending.Empty() {
		cc.rs.ReleaseConn(&cc.pending)
	}
}

// releaseCounts takes e out of every count it is in.
func (pl *Pipeline) releaseCounts(e *flowtable.Entry) {
	cc := &pl.rules.cl
	if cc.slots == nil {
		return
	}
	i := pl.shard.Ref(e).Index
	if int(i) >= len(cc.slots) || cc.slots[i].Empty() {
		return
	}
	if cc.rs != nil {
		cc.rs.ReleaseConn(&cc.slots[i])
	}
	cc.slots[i] = rules.ConnCounts{}
}

// closedTCP reports whether c is a TCP connection nf_conncount no longer
// counts (already_closed).
func closedTCP(c *statemachine.Conn) bool {
	return c.Proto == packet.ProtoTCP && (c.State == statemachine.TCPTimeWait || c.State == statemachine.TCPClose)
}

// countsAfterUpdate takes a connection the tracker just closed out of its
// counts. One nil check per packet while no connlimit rule was seen.
func (pl *Pipeline) countsAfterUpdate(e *flowtable.Entry) {
	if pl.rules.cl.slots != nil && closedTCP(&e.Conn) {
		pl.releaseCounts(e)
	}
}
