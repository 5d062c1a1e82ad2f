package perf

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Real-time scheduling for the latency trials (Options.RTPriority).
//
// On a shared machine the tail of every device's latency was set by the
// scheduler, not by the devices: a thread under the normal policy that
// has work (statewire's worker, the generator, ksoftirqd when softirq work
// overflows into it) is taken off its CPU whenever another tenant's task
// is picked, for that task's whole slice, up to the 4 ms tick of this
// kernel (HZ=250): `perf sched timehist` of the device CPU during a 50%
// NDR trial showed statewire's worker waiting 1.1-3.4 ms, six times in
// one second, while compile, e2e.test and hostile.test ran their slices
// (perf/RESULTS.md, "Tail latency"). Nice -20 does not prevent it: the
// slice is a time, not a share. SCHED_FIFO does: a runnable real-time
// thread preempts every normal one and is not preempted by them.
//
// So with RTPriority the harness runs statewire with --rt-priority (its
// workers under SCHED_FIFO, sleeping in the kernel when idle: package
// bridge, datapath_sched.go) and, during the latency trials only,
// ksoftirqd of the generator and device CPUs under SCHED_FIFO: the kernel
// devices' softirq work that overflows into it then runs at once, as
// statewire's worker does, instead of waiting for a slice (restored after
// the trials). The generator keeps the normal policy (nice -20, spinning
// between calls): a real-time generator whose calls cost more than its
// interval never sleeps, and then starves the kworker that releases the
// calls' page pools on its CPU, which makes every later call slower still
// (measured: 0.6-1 ms a call, the offered rate 23% under target).

// DefaultRTPriority is the SCHED_FIFO priority of the latency trials'
// threads: above the kernel's threaded interrupts' default 50, so no
// interrupt thread of another device delays them, below the watchdogs'
// 99.
const DefaultRTPriority = 51

// DefaultLatencyInterval is the shortest time between the stamped
// generator's calls in a latency trial (Options.LatencyInterval). Each
// call sends the frames due since the last back to back, so a device at
// rate R sees bursts of R x interval frames and the last of a burst waits
// for all before it: at 50% of an NDR of 400 000 frames/s, the throughput
// trials' 200 µs (minInterval) makes bursts of 40 frames, and a device
// that forwards one frame at a time at its NDR adds up to 100 µs to the
// tail of a stream that was evenly spaced in the wire's terms: a property
// of the generator, not of the device. 100 µs halves that. Fewer is not
// free: every call registers a page pool, and each release walks all the
// registered ones (RESULTS.md, "A harness artefact"), so calls cost more
// as they become more frequent, machine-wide.
const DefaultLatencyInterval = 100 * time.Microsecond

// LatencyPaced (Options.LatencyGenerator, the default) sends a latency
// trial's frames evenly spaced, as a wire at that rate would deliver them,
// whenever the generator can: with the packet generator (an AF_PACKET
// send per call, no page pool), at least one frame a call and calls
// PacedInterval apart, when the trial's rate is at most pacedShare of that
// generator's measured ceiling; faster trials (XDP_REDIRECT's 50% of NDR
// is several Mpps) use the live generator in bursts of rate x
// LatencyInterval. Each latency point says which (Latency.Generator,
// Burst). The bursts matter for a device that forwards a frame in more
// than a few hundred nanoseconds: at 50% of a 0.5 Mpps NDR the live
// generator's 100 µs calls are bursts of 25 frames sent in a few
// microseconds, and the last of them waits for the 24 before it (measured
// 2026-12-03: statewire p50 75-92 µs with bursts, 16-21 µs paced, same
// machine and minute). The packet generator stamps a frame just before the
// system call that sends it, so the call's own time counts against the
// device: the paced figures are if anything pessimistic.
const LatencyPaced = "paced"

// PacedInterval is the shortest time between the paced generator's calls
// (LatencyPaced).
const PacedInterval = 10 * time.Microsecond

// pacedShare is the highest share of the packet generator's ceiling a
// paced latency trial asks of it: close to the ceiling its calls fall
// behind and the schedule bunches frames again.
const pacedShare = 0.7

// realtimeKsoftirqd puts ksoftirqd of each cpu under SCHED_FIFO at prio
// and returns a function that restores the normal policy and nice value
// each had.
func realtimeKsoftirqd(cpus []int, prio int) (restore func(), err error) {
	type old struct {
		pid  int
		attr *unix.SchedAttr
	}
	var olds []old
	restore = func() {
		for _, o := range olds {
			_ = unix.SchedSetAttr(o.pid, o.attr, 0)
		}
	}
	pids, err := ksoftirqds(cpus)
	if err != nil {
		return restore, err
	}
	for _, pid := range pids {
		a, err := unix.SchedGetAttr(pid, 0)
		if err != nil {
			return restore, fmt.Errorf("perf: read the scheduling policy of ksoftirqd (pid %d): %w", pid, err)
		}
		rt := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
		if err := unix.SchedSetAttr(pid, &rt, 0); err != nil {
			return restore, fmt.Errorf("perf: ksoftirqd (pid %d) under SCHED_FIFO %d: %w (run as root, or --rt-priority 0)", pid, prio, err)
		}
		olds = append(olds, old{pid, a})
	}
	return restore, nil
}
