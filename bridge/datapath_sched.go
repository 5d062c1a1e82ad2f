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

// idleSpinFor returns how long w spins after its last frame.
func (w *worker) idleSpinFor() int64 {
	if s := w.dp.cfg.IdleSpin; s > 0 {
		return int64(s)
	}
	if w.dp.cfg.RTPriority > 0 {
		return rtIdleSpin
	}
	return idleSpinTime
}

// The real-time budget (rtBudget). The kernel lets real-time tasks run at
// most sched_rt_runtime_us (950 ms by default) of every
// sched_rt_period_us (1 s) on a CPU. A real-time worker under steady
// traffic whose gaps are shorter than rtIdleSpin never sleeps: it reaches
// that limit and is taken off its CPU for the rest of the period, 50 ms in
// which every frame waits (measured on the lab machine: a SCHED_FIFO
// thread spinning on the device CPU lost one 50 ms stretch a second; the
// latency trials whose p99 hit the histogram's end, 4 096 µs, were runs in
// which the worker never slept). So a real-time worker counts the time it
// is awake in windows of rtWindow and, once it has been awake rtAwakeMax
// of one, sleeps as soon as it is idle, without spinning, until the window
// ends. At most 85% of every 100 ms is at most 935 ms of any second,
// whatever the windows' alignment with the kernel's period. A worker busy
// for more than that cannot sleep and is throttled: that is overload,
// where frames are lost anyway.
const (
	rtWindow   = int64(100 * time.Millisecond)
	rtAwakeMax = rtWindow * 85 / 100
)

// rtBudget is a real-time worker's account of the CPU time it takes.
// Owned by the worker's goroutine (locked to its thread: the thread's CPU
// clock is the worker's). The kernel counts the thread's run time, which
// includes the wake-up path of every sleep (tens of microseconds each on a
// VM, thousands of sleeps a second once the budget is spent): so what was
// used before the last sleep is the thread's CPU clock (read once per sleep
// and once per window), and since the last wake-up the wall time, which is
// never less.
type rtBudget struct {
	cpu         func() int64 // the thread's CPU time (threadCPU; tests replace it)
	windowStart int64        // start of the current window
	used        int64        // CPU time used in the window up to the last sleep
	cpuAt       int64        // the CPU clock when used was last brought up to date
	from        int64        // since when the worker is awake (counting in this window)
	started     bool
}

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// roll starts a new window when now is past the current one.
func (b *rtBudget) roll(now int64) {
	if b.started && now-b.windowStart < rtWindow {
		return
	}
	if b.cpu == nil {
		b.cpu = threadCPU
	}
	b.started = true
	b.windowStart = now - (now-b.windowStart)%rtWindow
	b.from = max(b.from, b.windowStart)
	b.used, b.cpuAt = 0, b.cpu()
}

// spin returns how long the worker may spin after its last frame at now:
// spin, or 0 once the window's budget is spent.
func (b *rtBudget) spin(now, spin int64) int64 {
	b.roll(now)
	if b.used+now-b.from >= rtAwakeMax {
		return 0
	}
	return spin
}

// sleep records that the worker goes to sleep at now.
func (b *rtBudget) sleep(now int64) {
	b.roll(now)
	c := b.cpu()
	b.used += c - b.cpuAt
	b.cpuAt = c
}

// woke records that the worker woke at now.
func (b *rtBudget) woke(now int64) {
	b.roll(now)
	b.from = now
}
