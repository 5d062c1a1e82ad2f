package flowtable

import (
	"context"

	"github.com/statewire/statewire/statemachine"
)

// Commit is one connection to insert into the table from outside the
// packet path: the state a peer synchronised to us, committed at a
// failover (statewire sync -c, as conntrackd -c creates its external
// cache's connections through ctnetlink).
type Commit struct {
	// Orig is the original direction's tuple.
	Orig Tuple
	// Conn is the protocol state, Expires absolute on the table's clock.
	Conn statemachine.Conn
	// Helper is the conntrack helper to attach (helpers.ID), 0 for none.
	// A committed connection with a helper is marked for pickup
	// (Entry.TakeHelperPickup): the helper has no record of where the
	// peer's last command line ended.
	Helper uint8
	// Mark is the connection mark (Shard.SetConnMark), as conntrackd -c
	// sets CTA_MARK from NTA_MARK.
	Mark uint32
	// Expects are the expectations of this connection (its helper's, the
	// peer's EXP_NEW): added on the owner once the entry is in the table,
	// or already was, with Master set to it and, when 0, HelperID to its
	// helper, as conntrackd -c creates the expectations it was sent
	// through ctnetlink with the master looked up by its tuple.
	Expects []Expect
}

// CommitResult counts what InsertEntries did, as conntrackd's commit
// statistics do: created, already there (left alone, as ctnetlink answers
// EEXIST), and failed (the shard was full, or the tuple has no key).
type CommitResult struct {
	Inserted, Exists, Failed int
	// Expectations added, and refused (the expectation table was full, or
	// another master expects the same connection: Expectations.Add).
	Expectations, ExpectFailed int
}

// flagHelperPickup marks an entry committed with a helper whose helper
// state is unknown (Entry.TakeHelperPickup).
const flagHelperPickup uint8 = 1 << 3

// TakeHelperPickup reports whether the entry was committed with a helper
// that must pick up the next segment of each direction, as the kernel's
// FTP helper does after a commit (nf_ct_ftp_from_nlattr sets
// NF_CT_FTP_SEQ_PICKUP), and clears the mark. Owner only.
func (e *Entry) TakeHelperPickup() bool {
	on := e.flags&flagHelperPickup != 0
	e.flags &^= flagHelperPickup
	return on
}

// InsertEntries inserts cs on their owners at time now (the table's clock)
// and returns what happened to each. An existing live entry with the same
// key is left alone. The entries carry no cached verdict: their first
// packets are judged by the rules, and an entry the fast path may take is
// offered the usual way afterwards. Like DeleteEntries it waits for the
// owners (ServeRequests) or ctx; callers are serialised with it.
func (t *Table) InsertEntries(ctx context.Context, cs []Commit, now int64) (CommitResult, error) {
	by := make([][]Commit, len(t.shards))
	var res CommitResult
	for _, c := range cs {
		k := c.Orig.Key()
		if k.L3 == 0 {
			res.Failed++
			continue
		}
		i := t.ShardFor(t.HashKey(&k))
		by[i] = append(by[i], c)
	}
	reqs := make([]*ctlRequest, len(by))
	for i, ins := range by {
		if len(ins) > 0 {
			reqs[i] = &ctlRequest{inserts: ins, now: now}
		}
	}
	n, err := t.postCtl(ctx, reqs)
	res.Inserted += n
	for _, r := range reqs {
		if r != nil {
			res.Exists += r.exists
			res.Failed += r.failed
			res.Expectations += r.expects
			res.ExpectFailed += r.expectFailed
		}
	}
	return res, err
}

// serveInserts runs an insert request on the owner and returns how many
// entries it created; r.exists and r.failed get the rest (read by the
// poster after the answer on r.done).
func (s *Shard) serveInserts(r *ctlRequest) int {
	n := 0
	for i := range r.inserts {
		c := &r.inserts[i]
		k := c.Orig.Key()
		e, res := s.Insert(&k, hashKey(s.seed, &k), &c.Orig, r.now)
		switch res {
		case InsertExists:
			r.exists++
			s.commitExpects(r, e, c.Expects)
			continue
		case TableFull:
			r.failed++
			continue
		}
		proto := e.Conn.Proto
		e.Conn = c.Conn
		e.Conn.Proto = proto
		e.Helper = c.Helper
		s.SetConnMark(e, c.Mark)
		if c.Helper != 0 {
			e.flags |= flagHelperPickup
		}
		s.commitExpects(r, e, c.Expects)
		n++
	}
	return n
}

// commitExpects adds xs as expectations of e (owner only: the entry's
// reference is taken here). The per-master limit is not applied: the peer's
// helper applied it when it made them.
func (s *Shard) commitExpects(r *ctlRequest, e *Entry, xs []Expect) {
	ref := s.Ref(e)
	for _, x := range xs {
		x.Master = ref
		if x.HelperID == 0 {
			x.HelperID = e.Helper
		}
		if err := s.exp.Add(x, 0); err != nil {
			r.expectFailed++
			continue
		}
		r.expects++
	}
}
