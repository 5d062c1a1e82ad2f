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
}

// Reply returns the tuple of the reply direction.
func (es *EntrySnapshot) Reply() Tuple { return es.Orig.Reverse() }

func (e *Entry) snapshot(shard uint16, idx uint32, out *EntrySnapshot) {
	out.Orig = e.Tuple()
	out.Conn = e.Conn
	out.Helper = e.Helper
	out.Ref = EntryRef{Shard: shard, Index: idx, Gen: e.gen}
}

// readRequest is a reader's request to a shard's owner: copy live entries
// from slot cursor on into buf. Between posting (Shard.req) and the signal
// on ready, every field belongs to the owner; after the signal, to the
// reader. The channel send/receive orders the two (Go memory model), so no
// field needs to be atomic.
type readRequest struct {
	buf    []EntrySnapshot
	n      int    // entries filled
	cursor uint32 // next slot to visit
	done   bool   // cursor reached the end of the used slots
	ready  chan struct{}
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

// PublishedStats returns the counters as of the owner's last ServeReads.
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

// ServeReads publishes the shard's counters and serves a pending read
// request, visiting at most budget slots. The owner calls it between
// batches; with no request pending it costs one atomic load (plus the
// stores of counters that changed). It never blocks: the reader's signal
// channel has room for the one send. It returns the slots visited.
func (s *Shard) ServeReads(budget int) int {
	s.publish()
	r := s.req.Load()
	if r == nil {
		return 0
	}
	visited := 0
	for ; visited < budget && r.n < len(r.buf) && r.cursor < s.hwm; visited++ {
		idx := r.cursor
		r.cursor++
		if e := &s.entries[idx]; e.flags&flagUsed != 0 {
			e.snapshot(s.id, idx, &r.buf[r.n])
			r.n++
		}
	}
	r.done = r.cursor >= s.hwm
	if r.done || r.n == len(r.buf) {
		// CompareAndSwap, not Store: a reader that gave up (context done)
		// may already have withdrawn r and posted a new request.
		s.req.CompareAndSwap(r, nil)
		r.ready <- struct{}{}
	}
	return visited
}

// snapshotBuf is how many entries one read request carries.
const snapshotBuf = 512

// Snapshot calls fn with a copy of every live entry of every shard, shard
// by shard, from the calling goroutine. The owners copy the entries in
// ServeReads, so Snapshot returns only while the workers run (or ctx ends:
// it then returns ctx.Err()). It is not an atomic picture of the table:
// like a kernel dump, an entry created or deleted during the walk may or
// may not appear. fn must not keep the pointer. Snapshots from several
// goroutines are serialised.
func (t *Table) Snapshot(ctx context.Context, fn func(*EntrySnapshot)) error {
	t.readMu.Lock()
	defer t.readMu.Unlock()
	buf := make([]EntrySnapshot, snapshotBuf)
	for _, s := range t.shards {
		r := &readRequest{buf: buf, ready: make(chan struct{}, 1)}
		for {
			r.n, r.done = 0, false
			s.req.Store(r)
			select {
			case <-r.ready:
			case <-ctx.Done():
				if !s.req.CompareAndSwap(r, nil) {
					// The owner finished r concurrently: take its signal so
					// the request is settled, then stop.
					<-r.ready
				}
				// Otherwise the owner may still be filling buf: abandon it
				// (a later Snapshot allocates its own).
				return ctx.Err()
			}
			for i := range r.n {
				fn(&r.buf[i])
			}
			if r.done {
				break
			}
		}
	}
	return nil
}
