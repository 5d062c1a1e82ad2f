package bridge

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/statewire/statewire/flowtable"
)

// Control requests: deleting or flushing entries from another goroutine
// (`statewire conntrack -D`, `-F`). A shard has a single writer, its worker,
// so other goroutines cannot delete entries themselves: they post a request
// for each shard and the owner serves it between batches, exactly like
// Table.Snapshot's reads.
//
// The worker loop calls ServeControl(table, shard) once per iteration, next
// to Shard.ServeReads. With no request pending anywhere in the process it
// costs one atomic load.

// ctlRequest asks the owner of one shard to delete the entries named by refs,
// or all of its entries when all is set. Between posting and the send on
// done, the request belongs to the owner; after it, to the poster.
type ctlRequest struct {
	refs []flowtable.EntryRef
	all  bool
	done chan int // deleted count; room for the one send
}

// ctlSlots are the per-shard request slots of one table.
type ctlSlots struct {
	mu    sync.Mutex // serialises posters (one request per shard at a time)
	slots []atomic.Pointer[ctlRequest]
}

var (
	// ctlPending counts posted, unserved requests over every table, so an
	// idle worker pays one atomic load per iteration and nothing else.
	ctlPending atomic.Int64
	// ctlTables maps *flowtable.Table to its *ctlSlots. The slots are found
	// through the table so that the datapath needs no new field.
	ctlTables sync.Map
)

func slotsFor(t *flowtable.Table) *ctlSlots {
	if v, ok := ctlTables.Load(t); ok {
		return v.(*ctlSlots)
	}
	v, _ := ctlTables.LoadOrStore(t, &ctlSlots{slots: make([]atomic.Pointer[ctlRequest], t.NumShards())})
	return v.(*ctlSlots)
}

// ServeControl serves a pending delete or flush request for shard s of t.
// Only the owner of s may call it, between batches. It never blocks.
func ServeControl(t *flowtable.Table, s *flowtable.Shard) {
	if ctlPending.Load() == 0 {
		return
	}
	v, ok := ctlTables.Load(t)
	if !ok {
		return
	}
	slot := &v.(*ctlSlots).slots[s.ID()]
	r := slot.Load()
	if r == nil {
		return
	}
	slot.Store(nil)
	ctlPending.Add(-1)
	r.done <- serveOne(s, r)
}

// serveOne runs one request on its shard's owner goroutine.
func serveOne(s *flowtable.Shard, r *ctlRequest) int {
	n := 0
	if r.all {
		// Range forbids deleting inside fn: collect first. A flush is
		// rare and operator-driven; it stalls this worker for the time of
		// one pass over the shard.
		var victims []*flowtable.Entry
		s.Range(func(e *flowtable.Entry) bool {
			victims = append(victims, e)
			return true
		})
		for _, e := range victims {
			s.Delete(e)
			n++
		}
		return n
	}
	for _, ref := range r.refs {
		// Resolve checks the slot generation: an entry that died and whose
		// slot was reused since the snapshot is left alone.
		if e := s.Resolve(ref); e != nil {
			s.Delete(e)
			n++
		}
	}
	return n
}

// DeleteEntries deletes the entries named by refs (from EntrySnapshot.Ref)
// on their owning workers and returns how many were deleted; entries already
// gone are skipped. It waits for the workers, so it returns only while they
// run, or when ctx ends.
func DeleteEntries(ctx context.Context, t *flowtable.Table, refs []flowtable.EntryRef) (int, error) {
	by := make([][]flowtable.EntryRef, t.NumShards())
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
	return post(ctx, t, reqs)
}

// FlushEntries deletes every entry of t on the owning workers and returns
// how many were deleted (conntrack -F). Expectations of deleted masters go
// with them.
func FlushEntries(ctx context.Context, t *flowtable.Table) (int, error) {
	reqs := make([]*ctlRequest, t.NumShards())
	for i := range reqs {
		reqs[i] = &ctlRequest{all: true}
	}
	return post(ctx, t, reqs)
}

// post hands reqs[i] to the owner of shard i and waits for every answer.
// On ctx's end, requests not yet taken are withdrawn.
func post(ctx context.Context, t *flowtable.Table, reqs []*ctlRequest) (int, error) {
	cs := slotsFor(t)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for i, r := range reqs {
		if r == nil {
			continue
		}
		r.done = make(chan int, 1)
		cs.slots[i].Store(r)
		ctlPending.Add(1)
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
			// Withdraw what the owners have not taken; wait for the ones
			// they have (they answer promptly, never block).
			for j := i; j < len(reqs); j++ {
				rj := reqs[j]
				if rj == nil {
					continue
				}
				if cs.slots[j].CompareAndSwap(rj, nil) {
					ctlPending.Add(-1)
					continue
				}
				total += <-rj.done
			}
			return total, ctx.Err()
		}
	}
	return total, nil
}
