package bridge

import (
	"time"

	"github.com/statewire/statewire/ring"
)

// How a worker waits for work (DESIGN.md "Workers"). It polls its rings
// in a loop while frames come (busy polling: no system call between two
// batches), keeps polling for idleSpinTime after the last frame it moved
// (a frame a few microseconds behind the last one is taken without any
// wake-up), and then sleeps: it waits for its AF_XDP sockets to be
// readable or an eventfd (ring.Waiter: an epoll set, waited on through
// Go's poller), until a frame arrives, another goroutine wakes it, or its
// next timer is due.
//
// What must wake a sleeping worker, and how:
//
//   - a frame on one of its RX rings: epoll on the socket, which also
//     does the need_wakeup work of the fill ring (zero-copy drivers) and
//     of the TX ring (copy mode);
//   - a hand-off from another worker (requests, and the verdicts coming
//     back): the eventfd, written by the pusher (flushHandoffs,
//     serveRequests);
//   - a control request on its shard (conntrack -D, -F, the listings'
//     reads): the eventfd, written by the poster (flowtable's mailbox
//     notify hook, Table.SetNotify);
//   - new Settings (a rules reload takes the offered flows back from the
//     fast path: SyncFastPath): the eventfd, written by Control.Store;
//   - Stop: the eventfd;
//   - timers: the poll's timeout is the time to the next one (nextTimer):
//     the counters' publication, the expectations' expiry (worker 0) and
//     the table sweep (a larger budget after a sleep, idleExpireBudget).
//
// A real-time worker (DatapathConfig.RTPriority, datapath_sched.go) spins
// rtIdleSpin instead of idleSpinTime, and not at all once it has been
// awake rtAwakeMax of the current rtWindow (rtBudget: the kernel's
// real-time throttling would take 50 ms otherwise), and sleeps with its
// own thread blocked in the kernel (ring.NewThreadWaiter) rather than in
// Go's poller; what wakes it is the same.
//
// Asynchronous events use the eventfd rather than a short timeout because
// their latency matters (a hand-off is a frame waiting; conntrack -D
// waits for its answer) and a timeout short enough for them would cost
// the idle CPU the sleep saves. Timers use the timeout because the worker
// knows them itself: nobody else has to be told.
//
// A fast-path offer needs no timer: a pending offer moves on when a
// marked frame of its flow is judged (ActivateFastPath), i.e. after RX.
//
// The worker never sleeps with work of its own outstanding: frames on a
// TX ring the kernel has not taken (copy mode sends only inside a system
// call), frames of its own another worker is judging (their verdicts are
// due within one of that worker's loops), an activation due or held for
// the other workers' TX (activate, at most holdMax), or Stop under way (it
// then spins until it is drained, at most stopDrainTimeout).
const (
	// idleSweepInterval is the longest a sleeping worker goes without
	// sweeping its shard for expired entries: the counters' publication
	// interval, so an idle worker wakes 20 times a second.
	idleSweepInterval = publishInterval
	// idleExpireBudget is the slots swept after a sleep: 20480 per 50 ms
	// is 400 000 slots a second, about what a spinning idle worker swept
	// at 64 per loop.
	idleExpireBudget = 20480
)

// idle is called by run when the worker moved nothing at now and lastWork
// was the time of the last frame it moved: it keeps spinning (busy
// polling) for idleSpinTime, then sleeps until work or the next timer.
func (w *worker) idle(now, lastWork int64) {
	dp := w.dp
	if w.kernelBusy {
		// Kernel busy polling: the receive call runs the device's NAPI
		// poll here (its interrupts are deferred).
		for _, q := range w.queues {
			for _, s := range q.sock {
				s.PollRX()
			}
		}
	}
	spin := w.spin
	if dp.cfg.RTPriority > 0 {
		spin = w.rt.spin(now, spin)
	}
	if dp.cfg.BusyPoll || now-lastWork < spin || w.rxStopped || w.waiter == nil {
		return
	}
	wt := w.waiter
	wt.Prepare()
	if w.hasWork(now) {
		wt.Cancel()
		return
	}
	w.rt.sleep(now)
	wt.Wait(time.Duration(w.nextTimer(now) - now))
	w.rt.woke(dp.Now())
	w.sweep = idleExpireBudget
}

// hasWork is the worker's second look, after Prepare: anything it would
// act on at once, or that another goroutine handed it before the flag was
// up.
func (w *worker) hasWork(now int64) bool {
	dp := w.dp
	if dp.stop.Load() || dp.ctl.Load() != w.settings || w.shard.Posted() || w.pl.ActivationDue(now) || w.holdSince != 0 {
		return true
	}
	for _, q := range w.queues {
		for _, s := range q.sock {
			if s.RX().Ready() || s.TXPending() {
				return true
			}
		}
	}
	for i := range w.reqIn {
		// pending: frames of ours another worker is judging. Their
		// verdicts come within one of its loops, and its activations
		// wait (activate, holdMax) until we have sent them: keep polling
		// rather than pay a wake-up then.
		if w.reqIn[i] != nil && (w.reqIn[i].Len() != 0 || w.repIn[i].Len() != 0 || w.pending[i] != 0) {
			return true
		}
	}
	return false
}

// nextTimer returns the time of the worker's next timer: the counters'
// publication, the expectations' expiry (worker 0) and the sweep.
func (w *worker) nextTimer(now int64) int64 {
	next := min(w.lastPub+publishInterval, now+idleSweepInterval)
	if w.id == 0 {
		next = min(next, w.lastExpect+expectInterval)
	}
	return max(next, now)
}

// wakeAll wakes every sleeping worker (new Settings, Stop).
func (dp *Datapath) wakeAll() {
	for _, w := range dp.workers {
		w.waiter.Wake()
	}
}

// busyPollSet reports whether any kernel busy-poll option is set.
func busyPollSet(bp ring.BusyPoll) bool { return bp.Usecs > 0 || bp.Budget > 0 || bp.Prefer }

// setBusyPoll sets the kernel's busy-poll options on s, a socket of w's,
// when the configuration asks for them. A refusal is logged once and the
// datapath runs without them: they lower latency, nothing depends on them.
func (dp *Datapath) setBusyPoll(w *worker, s *ring.Socket) {
	bp := dp.cfg.SocketBusyPoll
	if !busyPollSet(bp) {
		return
	}
	if err := s.SetBusyPoll(bp); err != nil {
		if !dp.busyPollRefused {
			dp.logf("datapath: %v: running without the kernel's busy polling (it needs Linux 5.11 or later and CAP_NET_ADMIN; drop --busy-poll-usecs, --busy-poll-budget and --prefer-busy-poll to silence this)", err)
			dp.busyPollRefused = true
		}
		return
	}
	w.kernelBusy = true
}
