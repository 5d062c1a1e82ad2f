package bridge

import (
	"fmt"
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
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.Cores, c.Queues = 2, 2
	c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames = 512, 512, 512, 512, 2048
	c.RTPriority = prio
	c.Logf = t.Logf
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { dp.Stop() })
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
