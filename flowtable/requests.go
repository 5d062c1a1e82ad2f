package flowtable

import "context"

// The shard's mailbox. Other goroutines never touch a shard: they post a
// request in one of its two slots and wait, and the owner serves it between
// batches in ServeRequests, its one call per loop for everything that comes
// from outside:
//
//   - Shard.req: a read (Table.Snapshot's copies, the child links of
//     use.go), served budget slots at a time (reads.go);
//   - Shard.ctl: a delete or flush (Table.DeleteEntries, Table.FlushEntries:
//     `conntrack -D`, `-F`), served whole.
//
// Shard.posted counts the requests in both slots, so a shard with nothing
// posted costs its owner one atomic load. Whoever empties a slot (the owner
// when it has served the request, a poster that withdraws it) does so with
// CompareAndSwap and, only when that succeeds, takes one off the count.

// ServeRequests publishes the shard's counters and serves what other
// goroutines posted: a pending delete or flush, in full, then a pending
// read, visiting at most budget slots. The owner calls it once per loop,
// between batches; with nothing posted it costs one atomic load (plus the
// stores of counters that changed). It never blocks: every answer goes into
// a channel with room for it. Entries it deletes go through the remove hook
// ([DESTROY] events) like any other removal. It returns the slots the read
// visited.
func (s *Shard) ServeRequests(budget int) int {
	if s.posted.Load() == 0 {
		s.publish()
		return 0
	}
	if r := s.ctl.Load(); r != nil && s.ctl.CompareAndSwap(r, nil) {
		s.posted.Add(-1)
		n := s.serveCtl(r)
		// Publish before answering: the poster reads Table.Stats after
		// its call returns and must see the deletes.
		s.publish()
		r.done <- n
	} else {
		s.publish()
	}
	return s.serveReads(budget)
}

// ctlRequest asks the owner of one shard to delete the entries named by
// refs, or all of its entries when all is set. Between posting (Shard.ctl)
// and the send on done, the request belongs to the owner; after it, to the
// poster. The channel orders the two.
type ctlRequest struct {
	refs []EntryRef
	all  bool
	// inserts, with now, make it an insert request (InsertEntries, commit.go);
	// exists and failed are the owner's answer beside the count.
	inserts        []Commit
	now            int64
	exists, failed int
	// expects, expectFailed: the expectations of the inserts added and
	// refused (Commit.Expects).
	expects, expectFailed int
	done                  chan int // deleted (inserted) count; room for the one send
}

// serveCtl runs r on the owner and returns how many entries it deleted. A
// flush stalls the owner for one pass over the shard's used slots: it is
// rare and operator-driven.
func (s *Shard) serveCtl(r *ctlRequest) int {
	if r.inserts != nil {
		return s.serveInserts(r)
	}
	n := 0
	if r.all {
		// remove frees a slot without moving any other, so the walk
		// can delete as it goes.
		for idx := uint32(0); idx < s.hwm; idx++ {
			if e := &s.entries[idx]; e.flags&flagUsed != 0 {
				s.remove(idx, uint32(hashKey(s.seed, &e.key))&s.mask)
				n++
			}
		}
		return n
	}
	for _, ref := range r.refs {
		// Resolve checks the slot generation: an entry that died and
		// whose slot was reused since the snapshot is left alone.
		if e := s.Resolve(ref); e != nil {
			s.Delete(e)
			n++
		}
	}
	return n
}

// DeleteEntries deletes the entries named by refs (from EntrySnapshot.Ref)
// on their owners and returns how many were deleted; entries already gone
// and refs naming no shard of t are skipped. It waits for the owners
// (ServeRequests), so it returns only while they run, or when ctx ends
// (with ctx.Err() and the count of what was deleted). Safe from any
// goroutine but the owners'; callers are serialised.
func (t *Table) DeleteEntries(ctx context.Context, refs []EntryRef) (int, error) {
	by := make([][]EntryRef, len(t.shards))
	for _, r := range refs {
		if int(r.Shard) < len(by) {
			by[r.Shard] = append(by[r.Shard], r)
		}
	}
	reqs := make([]*ctlRequest, len(by))
	for i, rs := range by {
		if len(rs) > 0 {
			reqs[i] = &ctlRequest{refs: rs}
		}
	}
	return t.postCtl(ctx, reqs)
}

// FlushEntries deletes every entry of t on the owners and returns how many
// were deleted (conntrack -F). Expectations of deleted masters go with
// them. Like DeleteEntries it waits for the owners or ctx.
func (t *Table) FlushEntries(ctx context.Context) (int, error) {
	reqs := make([]*ctlRequest, len(t.shards))
	for i := range reqs {
		reqs[i] = &ctlRequest{all: true}
	}
	return t.postCtl(ctx, reqs)
}

// postCtl hands reqs[i] to the owner of shard i and waits for every answer.
// On ctx's end, requests not yet taken are withdrawn; those taken are
// waited for (the owners answer without blocking).
func (t *Table) postCtl(ctx context.Context, reqs []*ctlRequest) (int, error) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	for i, r := range reqs {
		if r == nil {
			continue
		}
		r.done = make(chan int, 1)
		s := t.shards[i]
		s.posted.Add(1) // before the pointer: see postRead
		s.ctl.Store(r)
		s.wakeOwner()
	}
	total := 0
	for i, r := range reqs {
		if r == nil {
			continue
		}
		select {
		case n := <-r.done:
			total += n
		case <-ctx.Done():
			for j := i; j < len(reqs); j++ {
				rj := reqs[j]
				if rj == nil {
					continue
				}
				if s := t.shards[j]; s.ctl.CompareAndSwap(rj, nil) {
					s.posted.Add(-1)
					continue
				}
				total += <-rj.done
			}
			return total, ctx.Err()
		}
	}
	return total, nil
}

// SetNotify makes every poster call fn(i) once it has posted a request on
// shard i, so that an owner sleeping while idle wakes to serve it. Call it
// before the table is shared (before any owner or poster runs); fn is
// called from the posters' goroutines and must not block.
func (t *Table) SetNotify(fn func(shard int)) {
	for i, s := range t.shards {
		s.notify = func() { fn(i) }
	}
}

// wakeOwner calls the notify hook after a post.
func (s *Shard) wakeOwner() {
	if s.notify != nil {
		s.notify()
	}
}

// Posted reports whether a request waits in the shard's mailbox (one
// atomic load): an owner about to sleep looks once more. Owner only.
func (s *Shard) Posted() bool { return s.posted.Load() != 0 }
