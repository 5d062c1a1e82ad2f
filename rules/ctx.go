package rules

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Ctx is what one evaluation of the FORWARD chain reads and writes beyond
// the packet: the state and ingress port (as Filter's arguments), the time,
// the packet mark, the packet's connection and the worker's rate-limit
// state. The caller owns it; FilterCtx writes Mark and Conn.Mark.
//
// The packet mark (skb->mark in the kernel) lives only here: statewire has
// no skb, so the mark starts at 0 for every packet (as a frame received on a
// bridge port carries none), MARK and CONNMARK --restore-mark set it during
// the walk, -m mark and CONNMARK --save-mark read it, and it is gone when
// the verdict is given (no qdisc or routing after us reads it).
type Ctx struct {
	State  statemachine.CtState
	InPort uint8
	// Dir is the packet's direction in Conn (Conn != nil only).
	Dir statemachine.Dir
	// Now is monotonic nanoseconds: the clock of -m limit.
	Now  int64
	Mark uint32
	// Conn is the packet's connection, nil when it has none: INVALID and
	// UNTRACKED packets (the kernel's nf_ct_get returns NULL for them). An
	// ICMP error RELATED to a connection carries that connection, Dir the
	// direction opposite to the packet it quotes, as the kernel's ctinfo
	// IP_CT_RELATED[_REPLY] does.
	Conn *Conn
	// Local is the calling worker's state of the stateful matches (-m
	// limit); nil: every -m limit test fails, as with no credit.
	Local *Local
	// Logs, when not nil, receives the LOG rules the packet matched on its
	// way (FilterCtx resets it first); the caller writes the lines.
	Logs *LogHits
	// Counts is the -m connlimit counts Conn is in (match_connlimit.go),
	// kept by the caller per connection (for a connection not yet in the
	// table, one the caller keeps for it if it is created, or releases);
	// nil: -m connlimit counts the packet without remembering it.
	Counts *ConnCounts

	rs      *RuleSet // the rule set being walked (FilterCtx)
	hotdrop bool     // a match asked for the packet to be dropped at once
	// climFull: the hotdrop was -m connlimit's table of counts having no
	// room for the packet's address (not a fragment without a tuple).
	climFull bool
}

// Conn is the view of a connection the rules read (-m connmark, -m
// conntrack beyond --ctstate) and write (CONNMARK). The caller fills it
// from the flow entry and copies Mark back after the evaluation.
type Conn struct {
	Mark uint32 // the connection mark (ct->mark)
	// Status holds statemachine.Status* bits; Confirmed says the entry is
	// in the table (false for the packet that creates it: the kernel
	// confirms after the FORWARD hook).
	Status    uint8
	Confirmed bool
	Proto     uint8
	// Expires is the absolute expiry (ns, the clock of Ctx.Now); 0 for an
	// unconfirmed entry, which --ctexpire sees as 0 seconds like the
	// kernel (an unconfirmed ct's timeout is relative, nf_ct_expires
	// clamps it to 0).
	Expires int64
	// Closed says the connection is TCP in TIME_WAIT or CLOSE: -m
	// connlimit no longer counts it (nf_conncount already_closed).
	Closed bool
	// The original tuple; the reply tuple is its inverse (statewire does
	// no NAT). For ICMP SrcPort is the identifier and DstPort type<<8|code,
	// as flowtable.Tuple keeps them and the kernel's src.u.all/dst.u.all.
	Src, Dst         packet.Addr
	SrcPort, DstPort uint16
}

// ReadsConn reports whether any rule reads or writes the connection (Ctx.Conn):
// callers fill Conn only then.
func (rs *RuleSet) ReadsConn() bool { return rs.readsConn }

// FilterCtx is Filter with the full context: the rules that need time, the
// packet mark, the connection or per-worker state (-m limit, mark, connmark,
// conntrack --ctstatus/--ctdir/..., MARK, CONNMARK) read it from c, and the
// LOG rules the packet matched go to c.Logs. Filter and FilterLog are
// FilterCtx with a context holding only the state, port (and logs). A
// REJECT verdict names its answer in Verdict.Reject.
//
// Cacheable is false, beyond Filter's cases, when the walk reached -m limit,
// -m connlimit, -m connmark or -m conntrack --ctstatus/--ctexpire, or ran a CONNMARK
// target (ctx.go's cache notes say why), and when the verdict is a REJECT's
// or was reached through a matching LOG rule (both act on every packet).
// FilterCtx does not allocate.
func (rs *RuleSet) FilterCtx(p *packet.Packet, c *Ctx) (v Verdict, cacheable bool) {
	if c.Logs != nil {
		c.Logs.N, c.Logs.Over = 0, 0
	}
	c.rs, c.hotdrop, c.climFull = rs, false, false
	var t *ctable
	switch p.IPVersion {
	case 4:
		t = &rs.filter[0]
	case 6:
		t = &rs.filter[1]
	default:
		return Verdict{Action: Accept, Rule: PolicyRule}, true
	}
	act, rule, cacheable := rs.walk(t, p, c, nil)
	if (p.Fragment && p.FragOffset != 0) || p.IsICMPError() {
		cacheable = false
	}
	v = Verdict{Action: act, Rule: rule}
	if rule >= 0 && int(rule) < len(rs.rules) {
		if rs.rules[rule].target == tReject {
			v.Reject = rs.rules[rule].reject
		}
		// A hotdrop by the rule's -m hashlimit or -m connlimit (a
		// rule has one of them at most).
		v.HashlimitFull = c.hotdrop && rs.rules[rule].has&mHashlimit != 0
		v.ConnlimitFull = c.hotdrop && c.climFull && rs.rules[rule].has&mConnlimit != 0
	}
	return v, cacheable
}

// Local is one worker's state of the stateful matches of one rule set: a
// token bucket per -m limit rule and a table of per-key buckets per -m
// hashlimit name (match_hashlimit.go). Each worker keeps its own (lock-free,
// no shared cache line): with W workers a limit admits up to W times its
// rate and burst in total, a hashlimit up to W times per key, where the
// kernel shares one bucket (one table) among all CPUs. A
// flow's packets all go to one worker (RSS), so one flow sees the kernel's
// exact behaviour. This is deliberate: a shared bucket would put an atomic
// read-modify-write on every limited packet of every worker.
//
// A Local belongs to one rule set (Generation) and one goroutine.
type Local struct {
	gen    uint32
	limits []limitState
	hl     []hlTable // -m hashlimit tables (match_hashlimit.go), by slot
}

// NewLocal returns fresh per-worker state for rs: every bucket full, as
// the kernel's buckets are when the rules are loaded, and every -m
// hashlimit table empty, its entries allocated here (match_hashlimit.go
// says how many).
func (rs *RuleSet) NewLocal() *Local {
	l := &Local{gen: rs.gen, limits: make([]limitState, rs.nlimit), hl: make([]hlTable, len(rs.hlCfg))}
	for i, c := range rs.hlCfg {
		l.hl[i] = newHlTable(c)
	}
	return l
}

// Generation returns the generation of the rule set l was made for: a
// worker makes a new Local when the rule set's differs.
func (l *Local) Generation() uint32 { return l.gen }
