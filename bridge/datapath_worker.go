package bridge

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/sched"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/ring"
	"github.com/statewire/statewire/rules"
	"golang.org/x/sys/unix"
)

// dpQueue is one device queue of both ports: a UMEM shared by the AF_XDP
// socket of port A and the one of port B, so a received descriptor can be
// put on the other port's TX ring unchanged. It belongs to one worker.
type dpQueue struct {
	id   int
	idx  int // position in the worker's queue list (what hand-offs carry)
	umem *ring.UMEM
	sock [2]*ring.Socket
	mode ring.Mode
	ctr  [2]PortCounters // by ingress port; owner-only plain counters

	// next links the buffers of multi-buffer frames (nil without
	// multi-buffer): next[i] is the descriptor that follows buffer i
	// (Addr / FrameSize) in its frame, written when the chain is
	// received and read until its last buffer is sent or freed, so a
	// frame anywhere in the worker (batch, hand-off, TX) is its first
	// descriptor. A hand-off's owner reads it too: the SPSC push and pop
	// order its writes before those reads.
	next    []ring.Desc
	bufSize uint64
	// txk counts the descriptors handleReplies wrote to each port's TX
	// ring and has not submitted yet.
	txk [2]uint32
}

// nextBuf returns the descriptor after d in its frame (d.More()), or a
// zero Desc (no Contd: the walk ends) when d is not a UMEM buffer.
func (q *dpQueue) nextBuf(d ring.Desc) ring.Desc {
	if q.next == nil {
		return ring.Desc{}
	}
	if i := d.Addr / q.bufSize; i < uint64(len(q.next)) {
		return q.next[i]
	}
	return ring.Desc{}
}

// chainLen returns the number of buffers of the frame that starts at d.
func (q *dpQueue) chainLen(d ring.Desc) uint32 {
	n := uint32(1)
	for ; d.More() && n < ring.MaxChain; n++ {
		d = q.nextBuf(d)
	}
	return n
}

// freeFrame returns every buffer of the frame that starts at d to the
// free stack.
func (q *dpQueue) freeFrame(d ring.Desc) {
	for k := 0; k < ring.MaxChain; k++ {
		q.umem.Free(d.Addr)
		if !d.More() {
			return
		}
		d = q.nextBuf(d)
	}
}

// sendFrame puts the frame that starts at d, nb buffers, on tx from ring
// index t; the caller reserved the slots and submits them.
func (q *dpQueue) sendFrame(tx *ring.TXRing, t uint32, d ring.Desc, nb uint32) {
	for j := uint32(0); j < nb; j++ {
		if j == nb-1 {
			d.Options &^= ring.Contd // a corrupt chain still ends here
		}
		tx.Set(t+j, d)
		if d.More() {
			d = q.nextBuf(d)
		}
	}
}

// csumBack writes the checksum the pipeline completed in the gathered copy
// of a multi-buffer frame (Result.CsumAt; 0: none) back into the frame's
// first buffer, which is what leaves: the L4 header is in it (the parser
// and the XDP program read headers from the first buffer only).
func (q *dpQueue) csumBack(d ring.Desc, copyOf []byte, at uint16) {
	if at == 0 {
		return
	}
	b := q.umem.Frame(d.Addr, d.Len)
	if int(at)+2 <= len(b) && int(at)+2 <= len(copyOf) {
		copy(b[at:at+2], copyOf[at:at+2])
	}
}

// gather copies the frame that starts at d into dst and returns the copy,
// or nil when it does not fit or a buffer is outside the UMEM. The
// pipeline reads a multi-buffer frame as one slice (headers, helpers and
// the --checksum check see every byte); the buffers themselves are
// forwarded as they are.
func (q *dpQueue) gather(d ring.Desc, dst []byte) []byte {
	n := 0
	for k := 0; k < ring.MaxChain; k++ {
		b := q.umem.Frame(d.Addr, d.Len)
		if b == nil || n+len(b) > len(dst) {
			return nil
		}
		n += copy(dst[n:], b)
		if !d.More() {
			return dst[:n]
		}
		d = q.nextBuf(d)
	}
	return nil
}

// handoff is a frame handed to the worker owning its flow (request), and
// the same item coming back with the verdict (reply). The frame stays in
// the sender's UMEM and is only read by the owner: the sender alone moves it
// to a TX ring or frees it, so each UMEM keeps a single owner.
type handoff struct {
	addr    uint64
	len     uint32
	opts    uint32 // the first descriptor's Options: Contd for a multi-buffer frame
	wire    uint32 // the whole frame's length
	qi      uint16 // index of the queue in the sender's list
	in      Port
	mark    offload.Mark // read in front of the frame by the receiving worker
	slot    uint32       // the frame's parse: the sender's parsedOut[owner].slots[slot]
	verdict Verdict
	drop    DropReason
	reject  rules.RejectWith // the answer when drop is DropReject
}

// handoffRing holds the parses of the frames one worker hands to another,
// one slot per frame, taken in turn: the sender writes a slot before it
// pushes the hand-off naming it, the owner reads it between its pop and
// its push of the verdict, and the sender reuses it only after that
// verdict came back. The ring has as many slots as the SPSC ring and a
// sender never has more frames out with one owner than that (handOff), so
// a slot in use is never written; the SPSC push and pop order the writes
// before the reads, as for the frame's bytes in the sender's UMEM.
type handoffRing struct {
	slots []parsed
	next  uint32 // the next slot, free running
}

// worker is one pinned goroutine: it serves its queues of both ports, owns
// flow-table shard id through its Pipeline, and all of its fields. Only
// pub is shared (under its mutex); the SPSC rings have one producer and one
// consumer each.
type worker struct {
	id     int
	dp     *Datapath
	pl     *Pipeline
	shard  *flowtable.Shard
	table  *flowtable.Table
	queues []*dpQueue
	batch  uint32
	maxLen uint32

	// Cross-shard hand-off (nil with one worker). reqOut[o] carries our
	// frames to worker o, reqIn[o] brings o's frames to us; repOut/repIn
	// carry the verdicts back. pending[o] counts our frames o holds.
	reqOut, reqIn, repOut, repIn []*ring.SPSC[handoff]
	pending                      []int
	// Activation behind hand-offs (activate): repSent[f] counts the
	// verdicts we pushed back to worker f; repHandled[o] the verdicts of o
	// we finished; repSentOut[o], written by us and read by o, is
	// repHandled[o] as of the last time our TX rings were empty, i.e.
	// every frame o judged for us up to that count has left.
	repSent, repHandled []uint64
	repSentOut          []atomic.Uint64
	// holdSince is when activate began waiting for the other workers to
	// send the hand-offs we judged (0: not waiting); meanwhile we serve
	// no new requests, so what we wait for stops growing.
	holdSince int64
	outBuf    [][]handoff
	popBuf    []handoff
	// parsedOut[o] holds the parses of our frames handed to worker o
	// (handoffRing); o reads them, we write them.
	parsedOut []handoffRing
	// Test counters (owner only): batches of hand-offs judged and their
	// frames (serveRequests).
	servedBatches, servedFrames int

	free [maxBatch]uint64 // frames to free after the RX release
	// touch keeps rxBatch's early loads of the frames alive (see there).
	touch byte

	// Frames of the current RX batch that this worker's shard owns, and
	// the pipeline's results for them.
	local   [maxBatch]ring.Desc // a frame's first descriptor
	nbuf    [maxBatch]uint32    // and its number of buffers
	wire    [maxBatch]uint32    // and its length (all buffers)
	frames  [maxBatch][]byte
	results [maxBatch]Result
	marks   [maxBatch]offload.Mark // with the fast path (two-phase offers)

	// With multi-buffer frames: scratch holds the batch's gathered
	// frames, maxLen bytes each (slot i for frame i of an RX batch, or of
	// a batch of hand-offs being judged); one the frame of a REJECT
	// answer to a hand-off (answerHandedOff).
	scratch, one []byte

	rxStopped                     bool
	deadline, lastPub, lastExpect int64
	pub                           published

	// Idle (datapath_idle.go): the waiter it sleeps in (Wake from any
	// goroutine), the slots the next sweep visits, the Settings its last
	// step saw, and whether its sockets busy poll in the kernel.
	waiter     *ring.Waiter
	sweep      int
	settings   *Settings
	kernelBusy bool
	tid        atomic.Int32 // the OS thread run is locked to (tests read its CPU time)
	spin       int64        // how long idle polls after the last frame (idleSpinFor)
	rt         rtBudget     // a real-time worker's time awake (datapath_sched.go)
}

func newWorker(dp *Datapath, id int) *worker {
	return &worker{
		id:     id,
		dp:     dp,
		pl:     NewPipeline(dp.table, id, dp.ctl, dp.frags),
		shard:  dp.table.Shard(id),
		table:  dp.table,
		batch:  uint32(dp.cfg.Batch),
		maxLen: uint32(dp.cfg.maxFrameLen()),
		popBuf: make([]handoff, maxBatch),
		sweep:  expireBudget,
	}
}

const (
	expireBudget    = 64   // slots swept per loop
	readBudget      = 4096 // slots copied per loop for Snapshot readers
	publishInterval = int64(50 * time.Millisecond)
	expectInterval  = int64(100 * time.Millisecond)
	// An idle worker keeps spinning for idleSpinTime after the last frame
	// it moved, then sleeps until a frame, a wake-up or a timer (datapath_idle.go). Spinning by
	// time rather than by a count of empty loops matters: a wake-up costs
	// tens of microseconds on a VM, so a worker that slept between two
	// frames of a 100 kpps stream would add that to their latency
	// (perf/RESULTS.md). Under any steady load the worker never sleeps.
	idleSpinTime = int64(time.Millisecond)
)

// run is the worker loop: iterations of step until the datapath stops and
// the frames in flight are done, spinning or sleeping briefly when idle.
func (w *worker) run() {
	runtime.LockOSThread()
	defer w.dp.wg.Done()
	w.tid.Store(int32(unix.Gettid()))
	// A pinned or real-time thread must not go back to the scheduler's
	// pool, where any goroutine could run on it with its affinity or its
	// priority: exiting locked makes the runtime end the thread.
	changed := false
	if cpus := w.dp.cfg.CPUs; len(cpus) > w.id {
		if err := sched.Pin(cpus[w.id]); err != nil {
			w.dp.logf("datapath: worker %d (--cpus): %v (running unpinned)", w.id, err)
		} else {
			changed = true
		}
	}
	if prio := w.dp.cfg.RTPriority; prio > 0 {
		if err := sched.FIFO(prio); err != nil {
			w.dp.logf("datapath: worker %d: %v; running under the normal policy", w.id, err)
		} else {
			changed = true
		}
	}
	if !changed {
		defer runtime.UnlockOSThread()
	}
	w.spin = w.idleSpinFor()
	var lastWork int64
	for {
		now := w.dp.Now()
		moved, done := w.step(now)
		if done {
			return
		}
		if moved > 0 {
			lastWork = now
			// A busy worker's sockets leave the epoll set it sleeps on
			// (their wake-ups cost it; ring.Waiter); after this batch,
			// so the frame that woke it did not wait for it.
			w.waiter.Disarm()
			continue
		}
		// No runtime.Gosched while spinning: on a locked thread it hands the
		// P to another thread and costs two futex calls. Async preemption
		// still stops a spinning worker for the GC.
		w.idle(now, lastWork)
	}
}

// step is one iteration of the worker loop at time now (the clock is read
// once per iteration, by the caller): RX batches of every queue and port,
// the hand-offs, the socket housekeeping, expiry, snapshot reads, control
// requests (delete, flush) and a periodic publication of the counters. It returns the frames it moved and
// whether the worker is done (stopped and drained, or out of time).
func (w *worker) step(now int64) (moved int, done bool) {
	dp := w.dp
	if !w.rxStopped && dp.stop.Load() {
		w.rxStopped = true
		dp.rxStopped.Add(1)
		w.deadline = now + int64(stopDrainTimeout)
	}
	// Once per iteration, not only per batch: expiry and -D/-F below
	// produce [DESTROY] events on an idle link too.
	w.pl.WatchEvents(now)
	// A rules reload or sysctl change takes the offered flows back even
	// when none of their packets comes up the slow path.
	w.settings = dp.ctl.Load()
	w.pl.SyncFastPath()
	if !w.rxStopped {
		for _, q := range w.queues {
			moved += w.rxBatch(q, PortA, now)
			moved += w.rxBatch(q, PortB, now)
		}
	}
	if w.reqIn != nil {
		moved += w.serveRequests(now)
		moved += w.handleReplies(now)
	}
	w.housekeep()
	if w.reqIn != nil {
		w.publishSent()
		if w.holdSince != 0 {
			w.activate(now)
		}
	}
	w.shard.Expire(now, w.sweep)
	w.sweep = expireBudget
	w.shard.ServeRequests(readBudget) // snapshots, conntrack -D / -F for our shard
	if w.id == 0 && now-w.lastExpect >= expectInterval {
		w.table.Expect.Expire(now)
		w.lastExpect = now
	}
	// The periodic publication never waits for a reader holding the
	// lock: it is skipped and retried next loop. The final one (below)
	// runs when forwarding has stopped and may wait.
	if now-w.lastPub >= publishInterval && w.pub.mu.TryLock() {
		w.publishLocked(now)
		w.pub.mu.Unlock()
		w.lastPub = now
	}
	if w.rxStopped {
		drained := dp.rxStopped.Load() == int32(len(dp.workers)) && dp.inflight.Load() == 0 && w.txDrained()
		if drained || now > w.deadline {
			w.publish(now)
			return moved, true
		}
	}
	return moved, false
}

// rxBatch moves one batch from port in of q to the other port: accepted
// descriptors go to the other port's TX ring unchanged (shared UMEM, no
// copy), dropped frames and those that do not fit the TX ring go back to the
// free stack, frames of flows owned by another shard are handed to their
// owner with their parse. It returns the frames taken.
func (w *worker) rxBatch(q *dpQueue, in Port, now int64) int {
	rx := q.sock[in].RX()
	want := w.batch
	if q.next != nil && want < ring.MaxChain {
		want = ring.MaxChain // room for one whole frame
	}
	n, s := rx.Peek(want)
	if n == 0 {
		return 0
	}
	if q.next != nil {
		// The kernel publishes a frame's buffers together, but a batch
		// may end inside one: leave that frame for the next batch.
		m := n
		for m > 0 && rx.Desc(s+m-1).More() {
			m--
		}
		if m == 0 && n < ring.MaxChain {
			return 0
		}
		if m > 0 {
			n = m
		} // else a chain longer than the kernel makes: dropped below
	}
	out := q.sock[in.Other()]
	tx := out.TX()
	got, t := tx.Reserve(n)
	var k uint32
	var touch byte
	nfree, ncand := 0, 0
	c := &q.ctr[in]
	for i := uint32(0); i < n; i++ {
		d := rx.Desc(s + i)
		first, nb, wire := d, uint32(1), d.Len
		for d.More() && i+1 < n {
			// Link the chain (see dpQueue.next); its last buffer has
			// no Contd, or the batch ended: the check below drops it.
			i++
			nd := rx.Desc(s + i)
			if q.next != nil {
				if j := d.Addr / q.bufSize; j < uint64(len(q.next)) {
					q.next[j] = nd
				}
			}
			d = nd
			nb++
			wire += d.Len
		}
		c.RX++
		c.RXBytes += uint64(wire)
		frame := q.umem.Frame(first.Addr, first.Len)
		var mark offload.Mark
		if w.dp.fastOn {
			mark = readMark(q.umem, first.Addr)
		}
		if frame == nil || wire > w.maxLen || d.More() || nb > ring.MaxChain {
			c.Drops[DropOversize]++
			for j := uint32(0); j < nb; j++ {
				w.free[nfree] = rx.Desc(s + i + 1 - nb + j).Addr
				nfree++
			}
			continue
		}
		if nb > 1 {
			// The pipeline reads the frame as one slice: headers of
			// any length, checksums and helper payloads over every
			// buffer. Each candidate has its own slot.
			slot := w.scratch[ncand*int(w.maxLen) : (ncand+1)*int(w.maxLen)]
			frame = q.gather(first, slot)
		}
		// The kernel copied the frame into the UMEM on the CPU that
		// received it: its first read here is a cache miss (most of
		// packet.Parse's time in the profiles). Loading a byte of every
		// frame of the batch now, before any is parsed, lets those misses
		// overlap instead of paying them one after the other.
		if len(frame) > 0 {
			touch ^= frame[0]
		}
		w.local[ncand], w.nbuf[ncand], w.frames[ncand], w.marks[ncand], w.wire[ncand] = first, nb, frame, mark, wire
		ncand++
	}
	w.touch = touch
	// Parse each frame once (prepare), hand those of flows another
	// worker owns to it with their parse, and run the pipeline on the
	// rest in batches, so the flow-table cache misses of a batch overlap
	// (runPrepared). The frames kept move down to index nlocal.
	opt := w.pl.parseOptions()
	nlocal := 0
	for base := 0; base < ncand; base += MaxBatch {
		end := min(base+MaxBatch, ncand)
		kept := nlocal
		for i := base; i < end; i++ {
			j := nlocal - kept // the frame's pipeline batch slot
			w.pl.prepare(j, w.frames[i], opt)
			if w.reqOut != nil {
				if o, steered := w.steer(j, now); o != w.id {
					w.handOff(q, in, o, j, i, steered)
					continue
				}
			}
			if nlocal != i {
				w.local[nlocal], w.nbuf[nlocal], w.frames[nlocal], w.marks[nlocal] = w.local[i], w.nbuf[i], w.frames[i], w.marks[i]
			}
			nlocal++
		}
		if nlocal > kept {
			w.pl.runPrepared(w.frames[kept:nlocal], w.marks[kept:nlocal], in, now, w.results[kept:nlocal])
		}
	}
	for i := range nlocal {
		d, nb, r := w.local[i], w.nbuf[i], &w.results[i]
		if r.Verdict == Accept {
			if k+nb <= got {
				if nb == 1 {
					tx.Set(t+k, d)
				} else {
					q.csumBack(d, w.frames[i], r.CsumAt)
					q.sendFrame(tx, t+k, d, nb)
				}
				k += nb
				c.Forwarded++
				c.FwdBytes += uint64(len(w.frames[i]))
				continue
			}
			c.Drops[DropNoTXSpace]++
		} else {
			c.Drops[r.Drop]++
			if r.Drop == DropReject && w.answer(q, in, d, nb, w.frames[i], r.Reject, now) {
				continue // the buffer carries the answer
			}
		}
		if nb == 1 {
			w.free[nfree] = d.Addr
			nfree++
		} else {
			q.freeFrame(d) // after the release is as good: the UMEM is ours
		}
	}
	rx.Release(n) // frames: fill -> application
	tx.Submit(k)  // accepted frames: application -> TX
	for _, a := range w.free[:nfree] {
		q.umem.Free(a)
	}
	if k > 0 {
		out.KickTX()
	}
	if w.reqOut != nil {
		w.flushHandoffs()
	}
	// The batch is out: activating a pending offer now lets no frame of
	// the flow the program takes overtake one of it still in this batch.
	w.activate(now)
	return int(n)
}

// handOff queues candidate i of the RX batch of q (port in), parsed in
// pipeline slot j, for worker o, the owner of its flow: the frame stays
// in our UMEM, its parse goes to o's slot of our parse ring (handoffRing).
// When o already holds a ring's worth of our frames the frame is dropped
// (HandoffFull) and freed after the RX release.
func (w *worker) handOff(q *dpQueue, in Port, o, j, i int, steered bool) {
	c := &q.ctr[in]
	d := w.local[i]
	if w.pending[o]+len(w.outBuf[o]) >= w.dp.cfg.Handoff {
		c.HandoffFull++
		q.freeFrame(d)
		return
	}
	r := &w.parsedOut[o]
	slot := r.next & uint32(len(r.slots)-1)
	r.next++
	w.pl.saveParsed(j, &r.slots[slot])
	w.outBuf[o] = append(w.outBuf[o], handoff{addr: d.Addr, len: d.Len, opts: d.Options, wire: w.wire[i],
		qi: uint16(q.idx), in: in, mark: w.marks[i], slot: slot})
	c.HandedOff++
	c.InFlight++
	if steered {
		w.dp.frags.steered.Add(1)
	}
}

// txFlushKicks bounds the kicks activate spends emptying the TX rings: a
// copy-mode sendto sends 32 frames, so 64 kicks send a full 2048-entry ring.
const txFlushKicks = 64

// activate activates the pending offers the worker's frames made ready
// (Pipeline.ActivateFastPath) once every frame it put on a TX ring has
// left it. In copy mode a kick sends at most 32 frames and the rest wait
// for the next; a flow activated meanwhile had the frames the program took
// overtake those (measured: 20 of 586 000 frames out of order over 64
// flooding flows, TestFastPathOverload). When a ring does not empty (the
// device refuses: EBUSY, ENOBUFS; a port down) the activation waits for
// the next marked frame of each flow.
//
// With several workers the frames of a flow that arrive on another
// worker's queue are judged here and sent by that worker, from its own
// UMEM, after our verdict comes back: activating once we have judged them
// would let the program's frames overtake them there. So activation also
// waits until every worker has sent what we judged for it (repSentOut
// caught up with repSent); while it waits we serve no new hand-offs, so
// the target stays put. It waits at most holdMax: a worker that does not
// get the CPU (a starved machine) or whose TX ring does not empty would
// otherwise stop us serving hand-offs until their rings fill and frames
// are dropped. After holdMax the activation is given up, not made
// (Pipeline.HoldBack: postponed, counted in FastPathStats.HeldBack): the
// flow stays pending, we serve hand-offs again, and its next marked frame
// tries again, behind the frames the other worker still holds. Activating
// then instead, as this wait did at first, let the program's frames
// overtake every frame still in the other worker's reply ring or TX ring:
// under -race on 2 vCPUs that worker is off the CPU for milliseconds at a
// time, and a run had one episode of 142 datagrams out of order, 211
// behind, with no forced activation (TestDatapathReorderUDPTwoWorkers,
// 3 to 4 such timeouts in each failing run).
func (w *worker) activate(now int64) {
	if !w.pl.ActivationDue(now) {
		w.holdSince = 0
		return
	}
	for _, q := range w.queues {
		for _, s := range q.sock {
			for i := 0; s.TXPending() && i < txFlushKicks; i++ {
				s.KickTX()
			}
			if s.TXPending() {
				w.postpone()
				return
			}
		}
	}
	if w.behindUs() {
		if w.holdSince == 0 {
			w.holdSince = now
			return
		}
		if now-w.holdSince <= holdMax {
			return
		}
		w.holdSince = 0
		w.pl.HoldBack()
		// Nothing is ready now: this only ages the activations' cuts,
		// which ActivationDue may also have asked for.
		w.pl.ActivateFastPath(now)
		return
	}
	w.holdSince = 0
	w.pl.ActivateFastPath(now)
}

// behindUs reports whether another worker has yet to send frames we
// judged for it (its repSentOut behind our repSent).
func (w *worker) behindUs() bool {
	for f, sent := range w.repSent {
		if f != w.id && w.dp.workers[f].repSentOut[w.id].Load() < sent {
			return true
		}
	}
	return false
}

// holdMax bounds how long activate waits for the other workers to send
// the hand-offs judged here (they do it within one loop of theirs; 1 ms
// of hand-offs at 1 Mpps fits the default 1024-entry ring).
const holdMax = int64(time.Millisecond)

// postpone gives up activating for now (Pipeline.PostponeActivation: the
// next marked frame of each flow makes it ready again) and serves
// hand-offs again.
func (w *worker) postpone() {
	w.pl.PostponeActivation()
	w.holdSince = 0
}

// publishSent tells each owner how many of its verdicts have left our TX
// rings: all we handled, once no TX ring holds a frame (copy mode sends in
// sendto, 32 frames at a time; housekeep kicks the rest).
func (w *worker) publishSent() {
	behind := false
	for o, n := range w.repHandled {
		if o != w.id && w.repSentOut[o].Load() != n {
			behind = true
		}
	}
	if !behind {
		return
	}
	// An owner may be holding its activations for these: send them now
	// rather than 32 per loop.
	for _, q := range w.queues {
		for _, s := range q.sock {
			if s == nil {
				continue
			}
			for i := 0; s.TXPending() && i < txFlushKicks; i++ {
				s.KickTX()
			}
			if s.TXPending() {
				return
			}
		}
	}
	for o, n := range w.repHandled {
		if o != w.id && w.repSentOut[o].Load() != n {
			w.repSentOut[o].Store(n)
		}
	}
}

// readMark returns the offload.Mark in front of the frame at addr (and
// clears it), or the zero Mark.
func readMark(u *ring.UMEM, addr uint64) offload.Mark {
	buf := u.FrameBuf(addr)
	if buf == nil {
		return offload.Mark{}
	}
	off := int(addr & uint64(len(buf)-1))
	if off < offload.MarkLen {
		return offload.Mark{}
	}
	return offload.ReadMark(buf[off-offload.MarkLen : off])
}

// steer returns the worker that must judge the frame parsed in pipeline
// slot j, received at time now: the owner of its flow's shard (of the
// quoted connection for an ICMP error), except for later fragments. Frames
// without a key (non-IP, broken, later fragments) stay with the receiving
// worker: they create no entry.
//
// A later fragment has no ports, so no flow, and used to be judged at once
// where it arrived; when its datagram's first fragment had been handed to
// another worker, it overtook it and found no verdict ("first fragment not
// seen": INVALID). So a first fragment handed off is recorded in the
// FragCache (Steer), and a later fragment of that datagram goes to the same
// worker (steered is then true): over the same SPSC ring, behind its first
// fragment, so the owner judges it once the verdict is recorded, and its
// verdict comes back behind the first one's (the wire keeps the order).
// Other later fragments stay here, as before.
func (w *worker) steer(j int, now int64) (o int, steered bool) {
	p, ok, hash, hasFlow := w.pl.prepared(j)
	o = w.id
	if hasFlow {
		o = w.table.ShardFor(hash)
	}
	if !ok || !p.Fragment {
		return o, false
	}
	switch {
	case p.FragOffset != 0:
		if k := w.dp.frags.SteeredTo(p, now); k >= 0 && k != w.id {
			return k, true
		}
	case p.MoreFrags && o != w.id:
		w.dp.frags.Steer(p, now, o)
	}
	return o, false
}

// flushHandoffs pushes the batch's hand-offs to their owners.
func (w *worker) flushHandoffs() {
	for o, buf := range w.outBuf {
		if len(buf) == 0 {
			continue
		}
		pushed := w.reqOut[o].Push(buf)
		w.pending[o] += pushed
		w.dp.inflight.Add(int64(pushed))
		w.dp.workers[o].waiter.Wake()
		// Push cannot come up short (we counted pending against the ring
		// size), but a frame must never leak if it did.
		for _, h := range buf[pushed:] {
			q := w.queues[h.qi]
			q.ctr[h.in].InFlight--
			q.ctr[h.in].HandedOff--
			q.ctr[h.in].HandoffFull++
			q.freeFrame(ring.Desc{Addr: h.addr, Len: h.len, Options: h.opts})
		}
		w.outBuf[o] = buf[:0]
	}
}

// serveRequests judges the frames other workers handed us (our shard owns
// their flows), in batches on the parses their senders made, and sends the
// verdicts back.
func (w *worker) serveRequests(now int64) int {
	if w.holdSince != 0 {
		return 0 // activate is waiting for the verdicts already sent to be sent on
	}
	total := 0
	for f, in := range w.reqIn {
		if in == nil {
			continue
		}
		n := in.Pop(w.popBuf)
		if n == 0 {
			continue
		}
		src := w.dp.workers[f]
		for reqs := w.popBuf[:n]; len(reqs) > 0; {
			reqs = reqs[w.judgeHandoffs(src, reqs, now):]
		}
		// The reply ring is as large as the request ring and the sender
		// never has more than that outstanding, so this always fits.
		rest := w.popBuf[:n]
		for len(rest) > 0 {
			rest = rest[w.repOut[f].Push(rest):]
		}
		src.waiter.Wake()
		w.repSent[f] += uint64(n)
		w.activate(now)
		total += n
	}
	return total
}

// judgeHandoffs judges a leading run of reqs, frames src received on one
// port, as one pipeline batch (at most MaxBatch, and with multi-buffer
// frames at most as many as w.scratch holds) on the parses src made
// (handoffRing), writes the verdicts into reqs and returns how many it
// judged.
func (w *worker) judgeHandoffs(src *worker, reqs []handoff, now int64) int {
	in := reqs[0].in
	limit := MaxBatch
	if w.scratch != nil {
		limit = min(limit, len(w.scratch)/int(w.maxLen))
	}
	parses := src.parsedOut[w.id].slots
	var opt packet.Options
	m := 0
	for ; m < len(reqs) && m < limit && reqs[m].in == in; m++ {
		h := &reqs[m]
		sq := src.queues[h.qi]
		var frame []byte
		if h.opts&ring.Contd == 0 {
			frame = sq.umem.Frame(h.addr, h.len)
		} else {
			frame = sq.gather(ring.Desc{Addr: h.addr, Len: h.len, Options: h.opts}, w.scratch[m*int(w.maxLen):(m+1)*int(w.maxLen)])
		}
		w.frames[m], w.marks[m] = frame, h.mark
		if frame != nil {
			w.pl.loadParsed(m, &parses[h.slot])
		} else {
			// Cannot happen (src read the frame); never judge a
			// parse without its bytes: this one says malformed.
			w.pl.prepare(m, nil, opt)
		}
	}
	w.pl.runPrepared(w.frames[:m], w.marks[:m], in, now, w.results[:m])
	for i := range m {
		h, r := &reqs[i], &w.results[i]
		h.verdict, h.drop, h.reject = r.Verdict, r.Drop, r.Reject
		if h.opts&ring.Contd != 0 {
			src.queues[h.qi].csumBack(ring.Desc{Addr: h.addr, Len: h.len, Options: h.opts}, w.frames[i], r.CsumAt)
		}
	}
	w.servedBatches++
	w.servedFrames += m
	return m
}

// handleReplies finishes our handed-off frames with the owners' verdicts:
// the accepted ones go on their TX rings, each ring published (Submit)
// and kicked once for all of them.
func (w *worker) handleReplies(now int64) int {
	total := 0
	for o, in := range w.repIn {
		if in == nil {
			continue
		}
		n := in.Pop(w.popBuf)
		if n == 0 {
			continue
		}
		for i := range w.popBuf[:n] {
			h := &w.popBuf[i]
			q := w.queues[h.qi]
			c := &q.ctr[h.in]
			c.InFlight--
			d := ring.Desc{Addr: h.addr, Len: h.len, Options: h.opts}
			if h.verdict == Accept {
				out := h.in.Other()
				tx := q.sock[out].TX()
				nb := uint32(1)
				if d.More() {
					nb = q.chainLen(d)
				}
				// Reserve does not move the ring: asking for what
				// this loop wrote so far plus this frame keeps t the
				// first slot of the batch.
				k := q.txk[out]
				if got, t := tx.Reserve(k + nb); got == k+nb {
					q.sendFrame(tx, t+k, d, nb)
					q.txk[out] = k + nb
					c.Forwarded++
					c.FwdBytes += uint64(h.wire)
					continue
				}
				c.Drops[DropNoTXSpace]++
			} else {
				c.Drops[h.drop]++
				if h.drop == DropReject {
					// The answer goes out of port h.in with a Reserve
					// of its own: publish what this loop put there.
					q.submitTX(h.in)
					if w.answerHandedOff(q, h, d, now) {
						continue // the buffer carries the answer
					}
				}
			}
			q.freeFrame(d)
		}
		w.pending[o] -= n
		w.repHandled[o] += uint64(n)
		w.dp.inflight.Add(-int64(n))
		total += n
	}
	if total > 0 {
		for _, q := range w.queues {
			q.submitTX(PortA)
			q.submitTX(PortB)
		}
	}
	return total
}

// submitTX publishes the descriptors handleReplies wrote to port p's TX
// ring (txk) and kicks it.
func (q *dpQueue) submitTX(p Port) {
	if k := q.txk[p]; k > 0 {
		q.sock[p].TX().Submit(k)
		q.sock[p].KickTX()
		q.txk[p] = 0
	}
}

// housekeep reaps completions, keeps copy-mode TX moving (it sends only
// inside sendto, 32 frames at a time), refills the fill rings and wakes
// zero-copy drivers that ran dry.
func (w *worker) housekeep() {
	for _, q := range w.queues {
		for _, s := range q.sock {
			s.Complete(uint32(w.dp.cfg.CompletionSize))
			if s.TXPending() {
				s.KickTX()
			}
			s.Refill(uint32(w.dp.cfg.FillSize))
			s.WakeFill()
		}
	}
}

// txDrained reports whether every frame this worker sent has completed.
func (w *worker) txDrained() bool {
	for _, q := range w.queues {
		if q.umem.Counts().TX != 0 {
			return false
		}
	}
	return true
}

// publish copies the counters for other goroutines.
func (w *worker) publish(now int64) {
	w.pub.mu.Lock()
	defer w.pub.mu.Unlock()
	w.publishLocked(now)
}

// publishLocked is publish with w.pub.mu held.
func (w *worker) publishLocked(now int64) {
	if w.pub.queues == nil {
		w.pub.queues = make([]QueueStats, len(w.queues))
	}
	for i, q := range w.queues {
		qs := &w.pub.queues[i]
		qs.Queue, qs.Worker, qs.Mode, qs.Port = q.id, w.id, q.mode, q.ctr
		for p, s := range q.sock {
			if s == nil {
				continue
			}
			if st, err := s.Stats(); err == nil {
				qs.Socket[p] = st
			}
		}
	}
	w.pub.pl = *w.pl.Stats()
	w.pub.now = now
}
