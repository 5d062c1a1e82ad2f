package flowtable

import (
	"context"
	"sync/atomic"
)

// The kernel's use= is a reference count: the table holds one, and every
// live connection created from an expectation (a helper's data connection,
// a "child") holds one on its master (ct->master, put when the child is
// destroyed). Counting children is a listing-time job here: the pipeline
// records each child's master once, when it creates the child (LinkChild),
// and a listing gathers the live links of every shard before it prints
// the first entry (a master and its children may sit on different shards).
// Nothing runs per packet; a table without children lists at the old cost.

// childLink records that slot child of the shard, at generation gen, holds
// an entry created from an expectation of master. The link is dead once
// the slot is freed or reused (generation differs); dead links are dropped
// by compaction, never looked up.
type childLink struct {
	master EntryRef
	child  uint32
	gen    uint32
}

// childLinks is one shard's list of links. list and epoch belong to the
// shard's owner; n is published for other goroutines (a listing skips the
// shards whose n is zero without a round trip to their owner).
type childLinks struct {
	list  []childLink
	epoch uint64       // incremented by each compaction that removed a link
	n     atomic.Int64 // len(list) as last set by the owner
}

// minLinks is the first capacity of a shard's link list.
const minLinks = 16

// LinkChild records that e, an entry of this shard just created from an
// expectation (StatusExpected), is a child of master (the Expect's Master),
// so listings count it in the master's use=. Owner only. It allocates only
// when the list of links is full of live children (the capacity doubles):
// amortised O(1), and only on the first packet of a RELATED connection. A
// pointer that is not a live entry of this shard is ignored.
func (s *Shard) LinkChild(e *Entry, master EntryRef) {
	idx := entryIndex(s.entries, e)
	if idx < 0 || e.flags&flagUsed == 0 {
		return
	}
	l := &s.links
	if len(l.list) == cap(l.list) {
		s.compactLinks(l)
		if len(l.list) >= cap(l.list)/2 {
			grown := make([]childLink, len(l.list), max(minLinks, 2*cap(l.list)))
			copy(grown, l.list)
			l.list = grown
		}
	}
	l.list = append(l.list, childLink{master: master, child: uint32(idx), gen: e.gen})
	l.n.Store(int64(len(l.list)))
}

// linkLive reports whether c still names a live entry of s.
func (s *Shard) linkLive(c *childLink) bool {
	if c.child >= s.hwm {
		return false
	}
	e := &s.entries[c.child]
	return e.flags&flagUsed != 0 && e.gen == c.gen
}

// compactLinks drops the links of children that are gone. Owner only.
func (s *Shard) compactLinks(l *childLinks) {
	w := 0
	for i := range l.list {
		if s.linkLive(&l.list[i]) {
			l.list[w] = l.list[i]
			w++
		}
	}
	if w == len(l.list) {
		return
	}
	l.list = l.list[:w]
	l.epoch++ // a links read in progress restarts (serveLinks)
	l.n.Store(int64(w))
}

// ChildCounts returns how many live children each master has (the part
// of the kernel's use= beyond the table's own reference), nil when no
// entry has one. It reads every shard directly: only a goroutine that owns
// all of them may call it (replay, tests, a stopped table). While workers
// run, Table.Snapshot fills EntrySnapshot.Children instead.
func (t *Table) ChildCounts() map[EntryRef]uint32 {
	var counts map[EntryRef]uint32
	for _, s := range t.shards {
		l := &s.links
		for i := range l.list {
			if c := &l.list[i]; s.linkLive(c) {
				if counts == nil {
					counts = make(map[EntryRef]uint32)
				}
				counts[c.master]++
			}
		}
	}
	return counts
}

// serveLinks serves a links request (r.masters set): it copies the master
// of every live child from r.cursor on, visiting at most budget links, and
// signals when r.masters is full or the list is done. A compaction between
// two calls moves links below the cursor; the request then starts over
// and says so (r.restart), and the reader drops what it took of this
// shard. Owner only.
func (s *Shard) serveLinks(r *readRequest, budget int) int {
	visited := 0
	l := &s.links
	switch {
	case r.cursor == 0:
		r.epoch = l.epoch
	case r.epoch != l.epoch:
		r.cursor, r.n, r.epoch, r.restart = 0, 0, l.epoch, true
	}
	end := uint32(len(l.list))
	for ; visited < budget && r.n < len(r.masters) && r.cursor < end; visited++ {
		c := &l.list[r.cursor]
		r.cursor++
		if s.linkLive(c) {
			r.masters[r.n] = c.master
			r.n++
		}
	}
	r.done = r.cursor >= end
	if r.done || r.n == len(r.masters) {
		s.finishRead(r)
	}
	return visited
}

// readChildCounts gathers, through the owners, how many live children each
// master has; nil (and no round trip) when no shard has published a link.
// Memory: one EntryRef per live child. Caller holds t.readMu.
func (t *Table) readChildCounts(ctx context.Context) (map[EntryRef]uint32, error) {
	var counts map[EntryRef]uint32
	var masters, got []EntryRef
	for _, s := range t.shards {
		if s.links.n.Load() == 0 {
			continue
		}
		if masters == nil {
			masters = make([]EntryRef, snapshotBuf)
		}
		r := &readRequest{masters: masters, ready: make(chan struct{}, 1)}
		got = got[:0]
		for {
			r.n, r.done, r.restart = 0, false, false
			if err := t.exchange(ctx, s, r); err != nil {
				return nil, err
			}
			if r.restart {
				got = got[:0]
			}
			got = append(got, r.masters[:r.n]...)
			if r.done {
				break
			}
		}
		for _, m := range got {
			if counts == nil {
				counts = make(map[EntryRef]uint32)
			}
			counts[m]++
		}
	}
	return counts, nil
}
