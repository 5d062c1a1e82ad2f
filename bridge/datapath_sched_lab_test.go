package bridge

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// TestDatapathRealtime starts a two-worker datapath with RTPriority on a
// two-queue veth lab and checks what --rt-priority promises: each worker
// thread runs under SCHED_FIFO at that priority (sched_getattr on its
// thread), its waiter blocks the thread itself (a thread waiter, not Go's
// poller), frames go through, an idle real-time worker still sleeps (its
// thread below 5% of a CPU over 3 s: a real-time thread that spun would
// take the whole CPU from every normal task on it), a frame wakes it (the
// ping goes through and sleeps ended by RX grow), and it stops cleanly.
// Needs root (SCHED_FIFO).
func TestDatapathRealtime(t *testing.T) {
	const prio = 10
	l := lab.NewT(t, lab.Options{Queues: 2})
	dp := startRealtimeDatapath(t, l, 2, prio, 0)
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the bridge failed:\n%s", out)
	}
	for _, w := range dp.workers {
		tid := int(w.tid.Load())
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatalf("worker %d: sched_getattr(%d): %v", w.id, tid, err)
		}
		if a.Policy != unix.SCHED_FIFO || a.Priority != prio {
			t.Errorf("worker %d (thread %d): policy %d priority %d, want SCHED_FIFO (%d) priority %d", w.id, tid, a.Policy, a.Priority, unix.SCHED_FIFO, prio)
		}
		if !w.waiter.Thread() {
			t.Errorf("worker %d: waits in Go's poller, want its own thread (NewThreadWaiter)", w.id)
		}
	}
	waitWorkersAsleep(t, dp)
	before := make([]uint64, len(dp.workers))
	for i, w := range dp.workers {
		before[i] = testenv.CPUTicks(t, fmt.Sprintf("/proc/self/task/%d/stat", w.tid.Load()))
	}
	start := time.Now()
	time.Sleep(3 * time.Second) // the measured idle period, not a wait for a condition
	ticks := float64(time.Since(start)) / float64(time.Second) * testenv.ClockTicks
	var rxBefore uint64
	for i, w := range dp.workers {
		cpu := float64(testenv.CPUTicks(t, fmt.Sprintf("/proc/self/task/%d/stat", w.tid.Load()))-before[i]) / ticks
		st := w.waiter.Stats()
		t.Logf("worker %d: CPU %.2f%% idle, sleeps %d (timeout %d, RX %d, wake-up %d)", w.id, 100*cpu, st.Sleeps, st.Timeout, st.RX, st.Woken)
		if cpu >= 0.05 {
			t.Errorf("idle real-time worker %d CPU got %.1f%%, want < 5%%", w.id, 100*cpu)
		}
		rxBefore += st.RX
	}
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the idle real-time bridge failed:\n%s", out)
	}
	var rxAfter uint64
	for _, w := range dp.workers {
		rxAfter += w.waiter.Stats().RX
	}
	if rxAfter == rxBefore {
		t.Errorf("sleeps ended by a received frame got none during 3 pings, want some")
	}
	stopLabDatapath(t, l, dp)
}

// TestDatapathRealtimeBudget runs one real-time worker told to spin a
// whole second after its last frame (IdleSpin) under a ping flood, whose
// frames come 200 µs apart: without its budget (rtBudget)
// it would never sleep, and the kernel's real-time throttling would take
// its CPU for 50 ms a second. It must sleep in every window once it has
// been awake rtAwakeMax of it: at least 5 sleeps in one second of the
// flood. Needs root (SCHED_FIFO, ping -f).
func TestDatapathRealtimeBudget(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	dp := startRealtimeDatapath(t, l, 1, 10, time.Second)
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the bridge failed:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 5 000 echo requests a second (-i 0.0002): gaps of 200 µs, far
	// under the spin, and little enough work that the worker is idle most
	// of the time even under -race on a loaded machine (ping -f waits for
	// each reply and so keeps a slow worker busy all the time: overload,
	// which no budget can help).
	flood := l.CommandContext(ctx, l.LeftNS, "ping", "-f", "-i", "0.0002", "-q", "-w", "3", lab.RightIPv4.Addr().String())
	var out bytes.Buffer
	flood.Stdout, flood.Stderr = &out, &out
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	w := dp.workers[0]
	stat := fmt.Sprintf("/proc/self/task/%d/stat", w.tid.Load())
	time.Sleep(500 * time.Millisecond) // the flood under way: the measured period starts after it
	sleeps0, cpu0, start := w.waiter.Stats().Sleeps, testenv.CPUTicks(t, stat), time.Now()
	time.Sleep(time.Second) // the measured period, not a wait for a condition
	sleeps, cpu := w.waiter.Stats().Sleeps-sleeps0, float64(testenv.CPUTicks(t, stat)-cpu0)/(time.Since(start).Seconds()*testenv.ClockTicks)
	if err := flood.Wait(); err != nil {
		t.Fatalf("ping -f: %v\n%s", err, out.String())
	}
	t.Logf("in 1 s of the flood: %d sleeps, CPU %.1f%%; ping: %s", sleeps, 100*cpu, strings.TrimSpace(out.String()))
	var sent, received int
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "packets transmitted") {
			fmt.Sscanf(line, "%d packets transmitted, %d received", &sent, &received)
		}
	}
	if received < 1000 {
		t.Fatalf("the flood got %d replies in 3 s, want at least 1000 (steady traffic is what this test needs)", received)
	}
	if sleeps < 5 {
		t.Errorf("worker slept %d times in 1 s of a flood, want at least 5 (once per %v window after %v awake)", sleeps, time.Duration(rtWindow), time.Duration(rtAwakeMax))
	}
	// The CPU share is logged, not asserted: /proc's tick-sampled figure
	// read 80% without the race detector and 96% with it (1 208 sleeps),
	// above what the budget's own account allows; see the closing note of
	// issue 15.
	stopLabDatapath(t, l, dp)
}

// startRealtimeDatapath starts a datapath of cores workers (one queue
// each) on l with real-time workers at prio and the idle spin given (0:
// the default), stopped at the test's end.
func startRealtimeDatapath(t *testing.T, l *lab.Lab, cores, prio int, idleSpin time.Duration) *Datapath {
	t.Helper()
	return startDatapath(t, l, cores, func(c *DatapathConfig) {
		smallRings(c)
		c.RTPriority, c.IdleSpin = prio, idleSpin
	})
}
