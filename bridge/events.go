package bridge

import (
	"sync"
	"sync/atomic"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/ring"
)

// EventKind is the kind of a conntrack event, as ctnetlink reports them.
type EventKind uint8

const (
	// EventNew: the pipeline created (confirmed) an entry (IPCT_NEW).
	EventNew EventKind = 1 + iota
	// EventUpdate: a packet changed the entry's TCP state (IPCT_PROTOINFO)
	// or status bits (IPCT_REPLY, IPCT_ASSURED); one event per packet, as
	// the kernel delivers the bits a packet cached in one message.
	EventUpdate
	// EventDestroy: the entry was removed: expiry, early drop, conntrack
	// -D or -F, a tracker kill or a reopening SYN (IPCT_DESTROY).
	EventDestroy
)

var eventKindNames = [...]string{"", "NEW", "UPDATE", "DESTROY"}

// String returns "NEW", "UPDATE" or "DESTROY".
func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && k != 0 {
		return eventKindNames[k]
	}
	return "UNKNOWN"
}

// Event is one conntrack event: a fixed-size record the owning worker
// writes into its ring without allocating.
type Event struct {
	Entry flowtable.EntrySnapshot // the entry after the change (before removal for DESTROY)
	Now   int64                   // datapath time of the event, for the timeout left
	Kind  EventKind
	// ProtoInfo: the TCP state is part of the event (it changed, or the
	// entry is new or destroyed); the kernel dumps the protocol info of an
	// update only when IPCT_PROTOINFO is set.
	ProtoInfo bool
}

// EventRingSize is the number of events each worker's ring holds. A burst
// beyond what the reader drains in time is dropped and counted (Lost), as
// the kernel's netlink socket drops on ENOBUFS.
const EventRingSize = 4096

// Events connects the pipelines, which produce conntrack events, to one
// reader (the control server), through one SPSC ring per shard.
//
// Producers: the pipeline owning shard i is the only writer of ring i.
// While Listeners is zero no pipeline writes anything: each checks the
// count once per batch (one atomic load). Consumer: Drain, called by any
// goroutine, serialised by a mutex, so each ring has one reader at a time.
// Subscribe and Unsubscribe may be called from any goroutine.
type Events struct {
	listeners atomic.Int32
	mu        sync.Mutex                   // Subscribe's ring creation
	rings     atomic.Pointer[[]*eventRing] // by shard; grows, never shrinks
	drainMu   sync.Mutex                   // one consumer at a time
	readers   []*eventReader               // AddReader's; under drainMu
}

// eventReader is one AddReader registration.
type eventReader struct{ fn func([]Event) }

// eventRing is one shard's ring and its count of events lost to a full
// ring (written by the producer, read by anyone).
type eventRing struct {
	r    *ring.SPSC[Event]
	lost atomic.Uint64
}

// Subscribe makes sure rings exist for shards shards and turns event
// production on until the matching Unsubscribe.
func (ev *Events) Subscribe(shards int) {
	ev.mu.Lock()
	if old := ev.rings.Load(); old == nil || len(*old) < shards {
		rs := make([]*eventRing, shards)
		if old != nil {
			copy(rs, *old)
		}
		for i := range rs {
			if rs[i] == nil {
				r, _ := ring.NewSPSC[Event](EventRingSize) // a power of two: no error
				rs[i] = &eventRing{r: r}
			}
		}
		ev.rings.Store(&rs)
	}
	ev.mu.Unlock()
	ev.listeners.Add(1)
}

// Unsubscribe undoes one Subscribe. With no listener left the pipelines
// stop writing events at their next batch.
func (ev *Events) Unsubscribe() { ev.listeners.Add(-1) }

// Listening reports whether anyone subscribed.
func (ev *Events) Listening() bool { return ev.listeners.Load() > 0 }

// ring returns shard i's ring, or nil before a Subscribe for that many
// shards.
func (ev *Events) ring(i int) *eventRing {
	rs := ev.rings.Load()
	if rs == nil || i >= len(*rs) {
		return nil
	}
	return (*rs)[i]
}

// AddReader registers fn to see every batch any Drain pops from now on,
// before Drain's own fn: the rings have one consumer, so two readers of the
// same events (conntrack -E clients and the state sync) share the drains
// instead of stealing events from each other. fn runs under the drain
// lock and must not block (copy, or hand over without waiting, and count
// what it drops). remove undoes it; it waits for a drain in progress.
func (ev *Events) AddReader(fn func([]Event)) (remove func()) {
	r := &eventReader{fn: fn}
	ev.drainMu.Lock()
	ev.readers = append(ev.readers, r)
	ev.drainMu.Unlock()
	return func() {
		ev.drainMu.Lock()
		defer ev.drainMu.Unlock()
		for i, x := range ev.readers {
			if x == r {
				ev.readers = append(ev.readers[:i:i], ev.readers[i+1:]...)
				return
			}
		}
	}
}

// Drain pops every event waiting in the rings into buf, a batch at a time,
// and calls the registered readers (AddReader), then fn, for each batch,
// shard by shard (events of one shard stay in order; shards are
// independent, as the kernel's per-CPU events are). It returns the number
// of events. One goroutine drains at a time.
func (ev *Events) Drain(buf []Event, fn func([]Event)) int {
	ev.drainMu.Lock()
	defer ev.drainMu.Unlock()
	rs := ev.rings.Load()
	if rs == nil || len(buf) == 0 {
		return 0
	}
	total := 0
	for _, r := range *rs {
		for {
			n := r.r.Pop(buf)
			if n == 0 {
				break
			}
			total += n
			for _, rd := range ev.readers {
				rd.fn(buf[:n])
			}
			fn(buf[:n])
		}
	}
	return total
}

// Lost returns the events dropped because a ring was full, over all shards.
func (ev *Events) Lost() uint64 {
	rs := ev.rings.Load()
	if rs == nil {
		return 0
	}
	var n uint64
	for _, r := range *rs {
		n += r.lost.Load()
	}
	return n
}

// eventState is a pipeline's producer side: its ring while someone
// listens, nil otherwise.
type eventState struct {
	ring *eventRing
	now  int64
	one  [1]Event
	hook func(s *flowtable.Shard, e *flowtable.Entry)
}

// WatchEvents checks, once, whether anyone listens for conntrack events
// and (un)hooks the pipeline accordingly; now stamps the events until the
// next call. Process and ProcessBatch call it; a loop that also expires or
// deletes entries outside them (the datapath worker) calls it once per
// iteration, so that [DESTROY] events of an idle bridge are seen. Owner
// only.
func (pl *Pipeline) WatchEvents(now int64) {
	es := &pl.ev
	es.now = now
	ev := pl.ctl.Events()
	if ev.listeners.Load() > 0 {
		if es.ring == nil {
			es.ring = ev.ring(pl.shard.ID())
			if es.ring != nil {
				pl.syncRemoveHook()
			}
		}
	} else if es.ring != nil {
		es.ring = nil
		pl.syncRemoveHook()
	}
}

// syncRemoveHook hooks the shard's removals while someone listens for
// events, a fast path holds offered entries or connections may be in -m
// connlimit counts (connlimit.go), and unhooks it otherwise.
func (pl *Pipeline) syncRemoveHook() {
	if pl.ev.ring != nil || pl.fast.fp != nil || pl.rules.cl.slots != nil {
		pl.shard.SetRemoveHook(pl.ev.hook)
	} else {
		pl.shard.SetRemoveHook(nil)
	}
}

// emit writes an event about e; a full ring drops it and counts it.
func (pl *Pipeline) emit(kind EventKind, e *flowtable.Entry, protoInfo bool) {
	pl.emitOffloaded(kind, e, protoInfo, false)
}

// emitOffloaded is emit with the copy marked offloaded when offloaded is
// set (an entry taken back just before).
func (pl *Pipeline) emitOffloaded(kind EventKind, e *flowtable.Entry, protoInfo, offloaded bool) {
	es := &pl.ev
	ev := &es.one[0]
	// Through own: the snapshot hook is a function value, and handing it
	// e itself would move every key e was looked up with to the heap.
	pl.shard.Snapshot(pl.own(e), &ev.Entry)
	ev.Entry.Offloaded = ev.Entry.Offloaded || offloaded
	ev.Now, ev.Kind, ev.ProtoInfo = es.now, kind, protoInfo
	if es.ring.r.Push(es.one[:]) == 0 {
		es.ring.lost.Add(1)
	}
}

// onRemove is the shard's remove hook while someone listens or a fast
// path is set: an offered entry is taken back first (its map entry goes,
// and the [DESTROY] event shows the state the fast path left). The event
// of an entry removed while offered still carries Offloaded ([OFFLOAD]),
// as the kernel's: `conntrack -D` of a flowtable-offloaded connection
// (ctnetlink_del_conntrack, net/netfilter/nf_conntrack_netlink.c, which
// since the removal of its -EBUSY check deletes offloaded entries too)
// calls nf_ct_delete, whose IPCT_DESTROY event carries the status with
// IPS_OFFLOAD still set; the flowtable's garbage collector clears the bit
// only afterwards, when it tears the flow of the dying entry down
// (flow_offload_teardown, net/netfilter/nf_flow_table_core.c).
func (pl *Pipeline) onRemove(_ *flowtable.Shard, e *flowtable.Entry) {
	was := e.Offloaded()
	if was {
		pl.takeBack(e, TakeBackRemove, 0)
	}
	if pl.ev.ring != nil {
		pl.emitOffloaded(EventDestroy, e, true, was)
	}
	pl.releaseCounts(e)
}
