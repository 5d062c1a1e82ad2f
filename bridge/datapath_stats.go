package bridge

import (
	"fmt"
	"strings"
	"sync"

	"github.com/statewire/statewire/ring"
)

// PortCounters count the frames received on one port of one queue and what
// became of them. Every received frame ends in exactly one of Forwarded or a
// drop (Drops by reason, HandoffFull), or is still InFlight (handed to
// another worker, verdict not back yet): that is the conservation law
// CheckConservation verifies. Workers count in their own copy (plain
// integers, owner only) and publish snapshots; what callers get is theirs.
type PortCounters struct {
	RX, RXBytes uint64                 // frames (and bytes) taken from the RX ring
	Forwarded   uint64                 // accepted and put on the other port's TX ring
	FwdBytes    uint64                 // bytes of the forwarded frames
	Drops       [NumDropReasons]uint64 // dropped, by reason
	HandoffFull uint64                 // dropped: the SPSC ring to the owning worker was full
	HandedOff   uint64                 // of RX, processed by another worker's shard
	InFlight    uint64                 // handed off, verdict not back yet
	// Answers counts REJECT answers to frames received on this port,
	// sent back out of it (in the rejected frame's buffer, reject_tx.go):
	// the port's TX ring carries them beside the frames forwarded to it.
	Answers uint64
}

// Dropped returns every counted drop.
func (c *PortCounters) Dropped() uint64 {
	n := c.HandoffFull
	for _, d := range c.Drops {
		n += d
	}
	return n
}

// DropList names the non-zero drop counters, "reason=n" separated by
// spaces (hand-off ring full as handoff-full), for logs and summaries.
func (c *PortCounters) DropList() string {
	var b []string
	for i, n := range c.Drops {
		if n > 0 {
			b = append(b, fmt.Sprintf("%s=%d", DropReason(i), n))
		}
	}
	if c.HandoffFull > 0 {
		b = append(b, fmt.Sprintf("handoff-full=%d", c.HandoffFull))
	}
	return strings.Join(b, " ")
}

func (c *PortCounters) add(o *PortCounters) {
	c.RX += o.RX
	c.RXBytes += o.RXBytes
	c.Forwarded += o.Forwarded
	c.FwdBytes += o.FwdBytes
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
	c.HandoffFull += o.HandoffFull
	c.HandedOff += o.HandedOff
	c.Answers += o.Answers
	c.InFlight += o.InFlight
}

// QueueStats are the counters of one queue of both ports: Port[p] counts the
// frames received on port p; Socket[p] is port p's AF_XDP socket (kernel
// XDP_STATISTICS and ring counters: Socket[p].TX counts frames sent out of
// port p).
type QueueStats struct {
	Queue, Worker int
	Mode          ring.Mode
	Port          [2]PortCounters
	Socket        [2]ring.Stats
	// Unsent[p] counts, in the final totals only, the buffers (frames,
	// but for multi-buffer frames) still on port
	// p's TX ring (or in the kernel) when Stop gave up draining: they were
	// counted forwarded but never left (for example port p was down).
	Unsent [2]uint64
}

// DatapathStats is a copy of every counter, published by the workers (about
// every 50 ms and when they stop) for other goroutines. Datapath.Stats
// returns a fresh value each call, owned by the caller.
type DatapathStats struct {
	Now      int64        // datapath clock of the newest publication
	Queues   []QueueStats // by queue id
	Pipeline Stats        // the pipelines' counters summed over workers
	Workers  []Stats      // each worker's pipeline counters, by worker (= shard) id
	Kicks    uint64       // TX sendto calls
	Frags    FragStats    // what became of later fragments, over all workers
	Final    bool         // the totals Stop returned: nothing can be in flight
	// Fast counts the frames the XDP fast path forwarded in the kernel:
	// they never reach the sockets, so they are in none of the counters
	// above, and CheckConservation's sums leave them out.
	Fast FastStats
}

// FragStats count what the fragment cache did: later fragments given their
// first fragment's verdict, or INVALID because it was not seen; those
// handed to the worker that judged their first fragment; and the cache's
// evictions, duplicate and overlapping fragments.
type FragStats struct {
	Cached     uint64 // later fragments given their first fragment's verdict
	Unknown    uint64 // later fragments whose first fragment was not seen (INVALID)
	Steered    uint64 // later fragments handed to their first fragment's worker
	Evictions  uint64 // datagrams whose record was taken by another before it completed
	Duplicates uint64 // fragments already seen
	Overlaps   uint64 // fragments overlapping another of the datagram (dropped)
}

// Total returns port p's counters summed over queues.
func (s *DatapathStats) Total(p Port) PortCounters {
	var t PortCounters
	for i := range s.Queues {
		t.add(&s.Queues[i].Port[p])
	}
	return t
}

// Unsent returns the frames left on port p's TX rings at Stop (see
// QueueStats.Unsent), over all queues.
func (s *DatapathStats) Unsent(p Port) uint64 {
	var n uint64
	for i := range s.Queues {
		n += s.Queues[i].Unsent[p]
	}
	return n
}

// Sent returns the frames submitted on port p's TX rings, over all queues.
func (s *DatapathStats) Sent(p Port) uint64 {
	var n uint64
	for i := range s.Queues {
		n += s.Queues[i].Socket[p].TX
	}
	return n
}

// KernelDrops returns the frames the kernel dropped before they reached
// port p's RX rings (RX ring full, no fill frame, other reasons).
func (s *DatapathStats) KernelDrops(p Port) uint64 {
	var n uint64
	for i := range s.Queues {
		st := &s.Queues[i].Socket[p]
		n += st.RxDropped + st.RxRingFull
	}
	return n
}

// CheckConservation verifies, for each direction, that every frame taken
// from port p's RX rings was forwarded, dropped with a counted reason or is
// in flight, and that the frames forwarded from p equal the frames submitted
// on the other port's TX rings. In the final totals it also checks that
// every submitted frame came back through the completion ring or is counted
// Unsent: a frame the kernel never sent is never reported as forwarded
// without a trace.
func (s *DatapathStats) CheckConservation() error {
	for _, p := range []Port{PortA, PortB} {
		t := s.Total(p)
		if out := t.Forwarded + t.Dropped() + t.InFlight; t.RX != out {
			return fmt.Errorf("direction %s->%s: %d frames in, %d out (forwarded %d + dropped %d + in flight %d)",
				p, p.Other(), t.RX, out, t.Forwarded, t.Dropped(), t.InFlight)
		}
		answers := s.Total(p.Other()).Answers
		if sent := s.Sent(p.Other()); sent != t.Forwarded+answers {
			return fmt.Errorf("direction %s->%s: %d frames forwarded but %d submitted on %s's TX rings (%d REJECT answers expected among them)",
				p, p.Other(), t.Forwarded, sent, p.Other(), answers)
		}
		if !s.Final {
			continue
		}
		// The completion ring returns buffers: a multi-buffer frame
		// comes back once per buffer.
		var done, sent uint64
		for i := range s.Queues {
			done += s.Queues[i].Socket[p.Other()].Completed
			sent += s.Queues[i].Socket[p.Other()].TXBuffers
		}
		if unsent := s.Unsent(p.Other()); sent != done+unsent {
			return fmt.Errorf("direction %s->%s: %d buffers submitted on %s's TX rings, %d completed + %d unsent at stop",
				p, p.Other(), sent, p.Other(), done, unsent)
		}
	}
	return nil
}

// published is a worker's last published copy of its counters: written by
// the worker, read by Datapath.Stats, both under mu. While forwarding, the
// worker only TryLocks mu, so a reader never makes it wait.
type published struct {
	mu     sync.Mutex
	now    int64
	queues []QueueStats
	pl     Stats
}

// Stats returns the counters as last published by the workers (a copy;
// safe from any goroutine). After Stop it returns the final totals.
func (dp *Datapath) Stats() DatapathStats {
	if f := dp.final.Load(); f != nil {
		return *f
	}
	out := DatapathStats{Queues: make([]QueueStats, dp.cfg.Queues), Workers: make([]Stats, len(dp.workers))}
	for i, w := range dp.workers {
		w.pub.mu.Lock()
		for _, q := range w.pub.queues {
			out.Queues[q.Queue] = q
			for p := range q.Socket {
				out.Kicks += q.Socket[p].Kicks
			}
		}
		out.Pipeline.Add(&w.pub.pl)
		out.Workers[i] = w.pub.pl
		out.Now = max(out.Now, w.pub.now)
		w.pub.mu.Unlock()
	}
	if fp := dp.failStats.Load(); fp != nil {
		if fo, err := fp.FailOpen(); err == nil {
			out.Fast.FailOpen = fo
		}
	}
	if fp := dp.fastStats.Load(); fp != nil {
		out.Fast.On = true
		if ps, err := fp.Stats(); err == nil {
			out.Fast.Ports = ps
		}
	}
	out.Frags = FragStats{Cached: out.Pipeline.FragCached, Unknown: out.Pipeline.FragUnknown, Steered: dp.frags.Steered()}
	out.Frags.Evictions, out.Frags.Duplicates, out.Frags.Overlaps = dp.frags.FragCounters()
	return out
}
