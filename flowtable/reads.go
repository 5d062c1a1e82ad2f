package flowtable

import (
	"context"

	"github.com/statewire/statewire/statemachine"
)

// EntrySnapshot is a copy of one entry, handed to readers on other
// goroutines (dumps, conntrack -L, metrics).
type EntrySnapshot struct {
	Orig   Tuple             // original direction
	Conn   statemachine.Conn // protocol state at the time of the copy
	Helper uint8
	Ref    EntryRef
	// Children is how many live entries were created from this entry's
	// expectations (its data connections), as Table.Snapshot counted them
	// before the first entry of its walk: each holds a reference on its
	// master in the kernel's use=. Shard.Snapshot leaves it 0; owners of
	// the whole table use Table.ChildCounts.
	Children uint32
	// Offloaded: the entry was offered to the XDP fast path when copied
	// (Entry.Offloaded). Its Conn.Expires is then the fast path's live
	// value when the shard has a snapshot hook (SetSnapshotHook), and
	// listings show the kernel's [OFFLOAD] (package ctlist).
	Offloaded bool
	// Mark is the connection mark (Shard.ConnMark).
	Mark uint32
}

// Reply returns the tuple of the reply direction.
func (es *EntrySnapshot) Reply() Tuple { return es.Orig.Reverse() }

func (e *Entry) snapshot(shard uint16, idx uint32, out *EntrySnapshot) {
	out.Orig = e.Tuple()
	out.Conn = e.Conn
	out.Helper = e.Helper
	out.Ref = EntryRef{Shard: shard, Index: idx, Gen: e.gen}
	out.Children = 0
	out.Offloaded = false
	out.Mark = 0
}

// readRequest is a reader's request to a shard's owner: copy live entries
// from slot cursor on into buf. Between posting (Shard.req) and the signal
// on ready, every field belongs to the owner; after the signal, to the
// reader. The channel send/receive orders the two (Go memory model), so no
// field needs to be atomic.
//
// A request with masters set asks for the shard's child links instead
// (use.go): the master of every live child, into masters.
type readRequest struct {
	buf     []EntrySnapshot
	masters []EntryRef // links request: masters of live children
	n       int        // entries (or masters) filled
	cursor  uint32     // next slot (or link) to visit
	done    bool       // cursor reached the end of the used slots (or links)
	epoch   uint64     // links request: the links' epoch it started under
	restart bool       // links request: the links moved; it started over
	ready   chan struct{}
}

// Indices into Shard.pub: the counters published for other goroutines.
const (
	pubFound = iota
	pubInsert
	pubInsertFailed
	pubDrop
	pubEarlyDrop
	pubDelete
	pubExpired
	pubCount
	numPub
)

// publish copies the counters that changed since the last call into the
// atomics other goroutines read. Comparing with the owner's plain copy
// first keeps the atomic stores (an XCHG each on amd64) to the counters
// that moved.
func (s *Shard) publish() {
	st := s.Stats()
	lp := &s.lastPub
	if st == *lp {
		return
	}
	if s.meta != nil {
		// The state file's copy, for the next process (store.go).
		s.meta.Stats = st
	}
	set := func(i int, v uint64, last *uint64) {
		if v != *last {
			s.pub[i].Store(v)
			*last = v
		}
	}
	set(pubFound, st.Found, &lp.Found)
	set(pubInsert, st.Insert, &lp.Insert)
	set(pubInsertFailed, st.InsertFailed, &lp.InsertFailed)
	set(pubDrop, st.Drop, &lp.Drop)
	set(pubEarlyDrop, st.EarlyDrop, &lp.EarlyDrop)
	set(pubDelete, st.Delete, &lp.Delete)
	set(pubExpired, st.Expired, &lp.Expired)
	set(pubCount, st.Count, &lp.Count)
}

// PublishedStats returns the counters as of the owner's last
// ServeRequests.
// Safe from any goroutine.
func (s *Shard) PublishedStats() Stats {
	return Stats{
		Found:        s.pub[pubFound].Load(),
		Insert:       s.pub[pubInsert].Load(),
		InsertFailed: s.pub[pubInsertFailed].Load(),
		Drop:         s.pub[pubDrop].Load(),
		EarlyDrop:    s.pub[pubEarlyDrop].Load(),
		Delete:       s.pub[pubDelete].Load(),
		Expired:      s.pub[pubExpired].Load(),
		Count:        s.pub[pubCount].Load(),
	}
}

// serveReads serves a pending read request, visiting at most budget
// slots; ServeRequests calls it. It returns the slots visited.
func (s *Shard) serveReads(budget int) int {
	r := s.req.Load()
	if r == nil {
		return 0
	}
	if r.masters != nil {
		return s.serveLinks(r, budget)
	}
	visited := 0
	for ; visited < budget && r.n < len(r.buf) && r.cursor < s.hwm; visited++ {
		idx := r.cursor
		r.cursor++
		if e := &s.entries[idx]; e.flags&flagUsed != 0 {
			if s.snapshotAt(e, idx, &r.buf[r.n]) {
				// The hook read the fast path (a system call):
				// it counts as hookCost slots of the budget.
				visited += hookCost - 1
			}
			r.n++
		}
	}
	r.done = r.cursor >= s.hwm
	if r.done || r.n == len(r.buf) {
		s.finishRead(r)
	}
	return visited
}

// finishRead takes r, served, out of the mailbox and signals the reader.
// CompareAndSwap, not Store: a reader that gave up (context done) may
// already have withdrawn r and posted a new request; only the side whose
// swap succeeds takes r's count out of s.posted. Owner only.
func (s *Shard) finishRead(r *readRequest) {
	if s.req.CompareAndSwap(r, nil) {
		s.posted.Add(-1)
	}
	r.ready <- struct{}{}
}

// hookCost is how many slots of a read's budget one call of the snapshot
// hook counts for: the hook reads the entry's fast-path map entry (one
// bpf system call, about a microsecond, where copying a slot costs a few
// nanoseconds), and the owner must not stall its packets for a whole
// budget of them. Reads of a table with nothing offloaded never pay it.
const hookCost = 16

// snapshotBuf is how many entries one read request carries.
const snapshotBuf = 512

// Snapshot calls fn with a copy of every live entry of every shard, shard
// by shard, from the calling goroutine. The owners copy the entries in
// ServeRequests, so Snapshot returns only while the workers run (or ctx ends:
// it then returns ctx.Err()). It is not an atomic picture of the table:
// like a kernel dump, an entry created or deleted during the walk may or
// may not appear. fn must not keep the pointer. Snapshots from several
// goroutines are serialised.
//
// Before the walk, when any shard has child links, Snapshot collects the
// masters of all live children (one round trip per such shard) and sets
// EntrySnapshot.Children of every entry it hands to fn.
func (t *Table) Snapshot(ctx context.Context, fn func(*EntrySnapshot)) error {
	t.readMu.Lock()
	defer t.readMu.Unlock()
	children, err := t.readChildCounts(ctx)
	if err != nil {
		return err
	}
	buf := make([]EntrySnapshot, snapshotBuf)
	for _, s := range t.shards {
		r := &readRequest{buf: buf, ready: make(chan struct{}, 1)}
		for {
			r.n, r.done = 0, false
			if err := t.exchange(ctx, s, r); err != nil {
				return err
			}
			for i := range r.n {
				es := &r.buf[i]
				if children != nil {
					es.Children = children[es.Ref]
				}
				fn(es)
			}
			if r.done {
				break
			}
		}
	}
	return nil
}

// exchange posts r to s's owner and waits until the owner has served it
// (ServeRequests) or ctx ends. On ctx's end the request is withdrawn, or, when
// the owner finished it concurrently, its signal is taken so the request is
// settled; a buffer the owner may still be filling is abandoned (the next
// Snapshot allocates its own).
func (t *Table) exchange(ctx context.Context, s *Shard, r *readRequest) error {
	s.postRead(r)
	select {
	case <-r.ready:
		return nil
	case <-ctx.Done():
		if s.req.CompareAndSwap(r, nil) {
			s.posted.Add(-1)
		} else {
			<-r.ready
		}
		return ctx.Err()
	}
}

// postRead puts r in s's read mailbox. The count goes up before the
// pointer is stored, so s.posted is never below the number of requests in
// the mailbox and an owner that finds it 0 has nothing to serve.
func (s *Shard) postRead(r *readRequest) {
	s.posted.Add(1)
	s.req.Store(r)
	s.wakeOwner()
}
