package bridge

import (
	"time"

	"golang.org/x/sys/unix"
)

// Real-time workers (DatapathConfig.RTPriority, statewire run
// --rt-priority).
//
// Under the normal policy a worker with frames waiting is taken off its
// CPU whenever the scheduler picks another task there, for that task's
// whole slice: on the shared 2-CPU lab machine (HZ=250) `perf sched
// timehist` of the device CPU showed the worker runnable but waiting
// 1.1-3.4 ms, six times in one second of a 50% NDR trial, while compile,
// e2e.test and hostile.test ran (perf/RESULTS.md, "Tail latency"); nice
// -20 does not prevent it. That, not the frames' processing, was the
// millisecond tail. Under SCHED_FIFO the worker preempts every normal task
// as soon as it is runnable and none preempts it.
//
// The price is that a real-time thread which never sleeps starves its CPU
// of every normal task (the kernel keeps 5% for them: sched_rt_runtime_us
// or the fair server, in stalls of up to 50 ms once a second, which would
// be the new tail). So a real-time worker spins only rtIdleSpin after its
// last frame, not idleSpinTime, and sleeps with its thread blocked in the
// kernel (ring.NewThreadWaiter): a frame's wake-up then goes straight to
// the worker's thread, which preempts whatever runs. Through Go's poller
// it went to the poller's thread first, a normal thread that waits for the
// CPU like any other (sched delays of 0.3-10 ms measured). Under a load
// that keeps it busy all the time the worker still never sleeps, as
// before; that is overload, where frames are lost anyway.

// rtIdleSpin is how long a real-time worker keeps polling after its last
// frame before it sleeps: long enough to take the next frames of a burst
// without a wake-up, short enough to leave the CPU to other tasks between
// bursts (a real-time wake-up costs tens of microseconds here, not
// milliseconds).
const rtIdleSpin = int64(50 * time.Microsecond)

// setRealtime puts the calling thread (the worker's, locked) under
// SCHED_FIFO at prio.
func setRealtime(prio int) error {
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	return unix.SchedSetAttr(0, &attr, 0)
}

// idleSpinFor returns how long w spins after its last frame.
func (w *worker) idleSpinFor() int64 {
	if w.dp.cfg.RTPriority > 0 {
		return rtIdleSpin
	}
	return idleSpinTime
}
