package perf

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/statewire/statewire/internal/sched"
	"golang.org/x/sys/unix"
)

// The machine's own latency floor (Report.Floor), measured in the same run
// as the devices' latency.
//
// A device that forwards in the generator's softirq (XDP_REDIRECT) never
// crosses CPUs: its frame is in flight only while the generator CPU runs
// it. statewire's worker runs on the device CPU, and between bursts it
// either sleeps (then the next frame waits for a cross-CPU wake-up of a
// thread blocked in epoll) or spins (then it waits out whatever takes the
// device CPU from a spinning thread: interrupts, the hypervisor, the
// kernel's real-time throttling). Both are properties of the machine, not
// of the device, and on a virtual machine they are large: a halted vCPU
// is woken through the host (tens of microseconds, and a tail set by the
// host's other tenants). The floor measures both with nothing else
// running, so a device's tail can be read against what the machine allows:
//
//   - Wake: a SCHED_FIFO thread on the device CPU blocked in epoll_wait on
//     an eventfd, written from a thread spinning on the generator CPU at
//     random intervals of wakeGapMin..wakeGapMax (the gaps a worker sleeps
//     through at 5-50% load); a sample is the time from just before the
//     write to just after epoll_wait returns.
//   - Spin: a SCHED_FIFO thread spinning on the device CPU for spinFor
//     (less than the 950 ms of a second real-time tasks get by default, so
//     the throttle does not fire), reading the clock in a loop; every gap
//     of gapMin or more between two reads is time the CPU was taken.

// Floor is the machine's latency floor on the device CPU.
type Floor struct {
	// Wake* are percentiles of the cross-CPU wake-up of a thread blocked
	// in epoll (µs) and WakeSamples their count.
	WakeSamples int     `json:"wake_samples"`
	WakeP50us   float64 `json:"wake_p50_us"`
	WakeP99us   float64 `json:"wake_p99_us"`
	WakeP999us  float64 `json:"wake_p99_9_us"`
	// SpinSeconds is the spinning thread's run; SpinGaps counts its gaps
	// per second by length: [20,50), [50,100), [100,200), [200,∞) µs;
	// SpinLostShare is the share of the run the gaps took and SpinMaxUs the
	// longest.
	SpinSeconds   float64    `json:"spin_seconds"`
	SpinGaps      [4]float64 `json:"spin_gaps_per_s"`
	SpinLostShare float64    `json:"spin_lost_share"`
	SpinMaxUs     float64    `json:"spin_max_us"`
	// RTPriority is the threads' SCHED_FIFO priority (0: normal policy).
	RTPriority int `json:"rt_priority"`
}

const (
	wakeGapMin = 20 * time.Microsecond
	wakeGapMax = 200 * time.Microsecond
	spinFor    = 500 * time.Millisecond
	gapMin     = 20 * time.Microsecond
)

// monoNow is CLOCK_MONOTONIC in nanoseconds, read the same way on both
// threads (time.Now's monotonic part is not exported).
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// pinThread locks the calling goroutine to its thread, pins the thread to
// cpu and, when prio > 0, puts it under SCHED_FIFO. The goroutine never
// unlocks: it exits locked, and the runtime then ends the thread instead of
// handing a pinned (real-time) thread to other goroutines.
func pinThread(cpu, prio int) error {
	runtime.LockOSThread()
	if cpu >= 0 {
		if err := sched.Pin(cpu); err != nil {
			return err
		}
	}
	if prio > 0 {
		return sched.FIFO(prio)
	}
	return nil
}

// MeasureFloor measures the wake-up floor for about d and the spin floor
// on dutCPU, waking from genCPU, threads at prio (0: normal policy).
func MeasureFloor(genCPU, dutCPU, prio int, d time.Duration) (Floor, error) {
	f := Floor{RTPriority: prio}
	lat, err := measureWake(genCPU, dutCPU, prio, d)
	if err != nil {
		return f, fmt.Errorf("perf: wake-up floor: %w", err)
	}
	slices.Sort(lat)
	f.WakeSamples = len(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e3
	}
	f.WakeP50us, f.WakeP99us, f.WakeP999us = q(0.5), q(0.99), q(0.999)
	if err := measureSpin(dutCPU, prio, spinFor, &f); err != nil {
		return f, fmt.Errorf("perf: spin floor: %w", err)
	}
	return f, nil
}

// measureWake returns the wake-up latencies (ns) of a thread on dutCPU
// blocked in epoll on an eventfd that a thread on genCPU writes.
func measureWake(genCPU, dutCPU, prio int, d time.Duration) ([]int64, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(efd)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		return nil, err
	}
	var (
		sentAt atomic.Int64 // when the current write was made
		taken  atomic.Int64 // samples the receiver has taken
		stop   atomic.Bool
	)
	lat := make([]int64, 0, int(d/wakeGapMin)+1)
	ready := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		if err := pinThread(dutCPU, prio); err != nil {
			ready <- err
			return
		}
		ready <- nil
		var evs [1]unix.EpollEvent
		var buf [8]byte
		for {
			n, err := unix.EpollWait(ep, evs[:], 100)
			now := monoNow()
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				done <- err
				return
			}
			if n == 0 {
				if stop.Load() {
					done <- nil
					return
				}
				continue
			}
			if _, err := unix.Read(efd, buf[:]); err != nil {
				done <- err
				return
			}
			lat = append(lat, now-sentAt.Load())
			taken.Add(1)
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	// The writer runs on a goroutine of its own, which exits locked.
	werr := make(chan error, 1)
	go func() { werr <- writeWakes(genCPU, efd, d, &taken, &sentAt) }()
	err = <-werr
	stop.Store(true)
	if rerr := <-done; err == nil {
		err = rerr
	}
	return lat, err
}

// writeWakes is measureWake's writer, pinned to genCPU: one eventfd write
// at a random gap after the receiver took the last, until d has passed.
func writeWakes(genCPU, efd int, d time.Duration, taken, sentAt *atomic.Int64) error {
	if err := pinThread(genCPU, 0); err != nil {
		return err
	}
	one := [8]byte{1}
	end := monoNow() + d.Nanoseconds()
	for i := int64(0); ; i++ {
		// One write at a time: the next waits until the receiver has
		// taken this one (an eventfd adds up writes it has not read).
		for taken.Load() < i {
		}
		gap := wakeGapMin + rand.N(wakeGapMax-wakeGapMin)
		until := monoNow() + gap.Nanoseconds()
		for monoNow() < until {
		}
		if until > end {
			return nil
		}
		sentAt.Store(monoNow())
		if _, err := unix.Write(efd, one[:]); err != nil {
			return err
		}
	}
}

// measureSpin spins on dutCPU for d and records the gaps into f.
func measureSpin(dutCPU, prio int, d time.Duration, f *Floor) error {
	errc := make(chan error, 1)
	go func() {
		if err := pinThread(dutCPU, prio); err != nil {
			errc <- err
			return
		}
		start := monoNow()
		end := start + d.Nanoseconds()
		last, lost, maxGap := start, int64(0), int64(0)
		var gaps [4]int
		for last < end {
			now := monoNow()
			if g := now - last; g >= gapMin.Nanoseconds() {
				lost += g
				maxGap = max(maxGap, g)
				switch us := g / 1e3; {
				case us < 50:
					gaps[0]++
				case us < 100:
					gaps[1]++
				case us < 200:
					gaps[2]++
				default:
					gaps[3]++
				}
			}
			last = now
		}
		secs := float64(last-start) / 1e9
		f.SpinSeconds = secs
		for i, n := range gaps {
			f.SpinGaps[i] = float64(n) / secs
		}
		f.SpinLostShare = float64(lost) / float64(last-start)
		f.SpinMaxUs = float64(maxGap) / 1e3
		errc <- nil
	}()
	return <-errc
}

// String is the floor in one line of the report.
func (f Floor) String() string {
	return fmt.Sprintf("machine floor on the device CPU (SCHED_FIFO %d): cross-CPU wake-up p50 %.0f us, p99 %.0f us, p99.9 %.0f us (%d samples); a spinning thread lost %.2f%% of %.1fs, gaps per second 20-50 us %.0f, 50-100 %.0f, 100-200 %.0f, 200+ %.0f, longest %.0f us",
		f.RTPriority, f.WakeP50us, f.WakeP99us, f.WakeP999us, f.WakeSamples, f.SpinLostShare*100, f.SpinSeconds,
		f.SpinGaps[0], f.SpinGaps[1], f.SpinGaps[2], f.SpinGaps[3], f.SpinMaxUs)
}
