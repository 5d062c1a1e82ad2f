package bridge

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/ring"
)

// TestDatapathIdleCPU runs a two-worker datapath on a two-queue veth lab
// with no traffic and checks that the workers sleep instead of spinning:
// over 10 s the CPU time of each worker thread (utime + stime of
// /proc/self/task/TID/stat, in clock ticks) is below 5% of one CPU. The
// whole test process is logged, not checked: in a full package run it
// also pays for what earlier tests left running (e2e TestRunIdleCPU
// checks a statewire process as a whole). It also checks what must wake a sleeping worker does: a ping
// through the idle bridge is forwarded (the RX ring wakes it: epoll on
// the sockets) and a conntrack -F while idle is served (the eventfd). A
// behaviour check, not a timing test: a spinning worker takes ~100% of a
// CPU; with the old loop's 50 µs timer sleeps each worker thread took
// 1.7-2.1% and the process 8.5% (under -race, load 18: the timers run on
// the runtime's other threads), sleeping until woken 0.5% and 1.9%. Needs
// root.
func TestDatapathIdleCPU(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	dp := startLabDatapath(t, l, 512, 1024, "", false)
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the bridge failed:\n%s", out)
	}
	waitWorkersAsleep(t, dp)

	tids := make([]int, len(dp.workers))
	for i, w := range dp.workers {
		tids[i] = int(w.tid.Load())
	}
	procBefore := testenv.CPUTicks(t, "/proc/self/stat")
	threadBefore := make([]uint64, len(tids))
	for i, tid := range tids {
		threadBefore[i] = testenv.CPUTicks(t, fmt.Sprintf("/proc/self/task/%d/stat", tid))
	}
	start := time.Now()
	time.Sleep(10 * time.Second) // the measured idle period, not a wait for a condition
	elapsed := time.Since(start)
	ticks := float64(elapsed) / float64(time.Second) * testenv.ClockTicks
	proc := float64(testenv.CPUTicks(t, "/proc/self/stat")-procBefore) / ticks
	t.Logf("idle for %v: process CPU %.2f%% of one CPU (%s)", elapsed.Round(time.Millisecond), 100*proc, loadAvg())
	for i, tid := range tids {
		c := float64(testenv.CPUTicks(t, fmt.Sprintf("/proc/self/task/%d/stat", tid))-threadBefore[i]) / ticks
		st := dp.workers[i].waiter.Stats()
		t.Logf("worker %d (thread %d): CPU %.2f%%, sleeps %d (ended by timeout %d, RX %d, wake-up %d), sockets out of the epoll set %d times",
			i, tid, 100*c, st.Sleeps, st.Timeout, st.RX, st.Woken, st.Disarmed)
		if c >= 0.05 {
			t.Errorf("idle worker %d CPU got %.1f%%, want < 5%%", i, 100*c)
		}
	}

	// A frame wakes a sleeping worker: the ping still goes through, and
	// the workers' sleeps ended by RX.
	var rxBefore uint64
	for _, w := range dp.workers {
		rxBefore += w.waiter.Stats().RX
	}
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the idle bridge failed:\n%s", out)
	}
	var rxAfter uint64
	for _, w := range dp.workers {
		rxAfter += w.waiter.Stats().RX
	}
	if rxAfter == rxBefore {
		t.Errorf("sleeps ended by a received frame got none during 3 pings, want some")
	}
	// The workers that moved those frames took their sockets out of
	// the epoll set (ring.Waiter.Disarm) and every sleep put them back:
	// the RX wake-ups above came through sockets re-added by Wait.
	var disarmed uint64
	for _, w := range dp.workers {
		disarmed += w.waiter.Stats().Disarmed
	}
	if disarmed == 0 {
		t.Errorf("no worker took its sockets out of the epoll set after moving frames (Waiter.Stats().Disarmed 0)")
	}

	// A control request wakes its shard's owner through the eventfd.
	var wokenBefore uint64
	for _, w := range dp.workers {
		wokenBefore += w.waiter.Stats().Woken
	}
	for range 3 {
		if !testenv.WaitFor(10*time.Second, func() bool { return workersAsleep(dp) }) {
			t.Fatal("the workers never went back to sleep")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := dp.Table().FlushEntries(ctx)
		cancel()
		if err != nil {
			t.Fatalf("conntrack -F on the idle bridge: %v", err)
		}
	}
	var wokenAfter uint64
	for _, w := range dp.workers {
		wokenAfter += w.waiter.Stats().Woken
	}
	if wokenAfter == wokenBefore {
		t.Errorf("sleeps ended by a wake-up got none during 3 flushes, want some")
	}
	stopLabDatapath(t, l, dp)
}

// TestDatapathSocketBusyPoll starts a datapath with the kernel's busy
// polling asked for (SocketBusyPoll) and checks that every socket took the
// three options (SO_BUSY_POLL and SO_PREFER_BUSY_POLL read back with
// getsockopt; the kernel cannot read SO_BUSY_POLL_BUDGET back, but a
// refusal of any would leave kernelBusy false), that the workers then
// drive the sockets themselves (kernelBusy: recvfrom while spinning), and
// that frames still go through, with the workers sleeping between pings.
// Needs root (CAP_NET_ADMIN to raise the options).
func TestDatapathSocketBusyPoll(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	want := ring.BusyPoll{Usecs: 50, Budget: 64, Prefer: true}
	dp := startDatapath(t, l, 2, func(c *DatapathConfig) {
		smallRings(c)
		c.SocketBusyPoll = want
	})
	for _, w := range dp.workers {
		if !w.kernelBusy {
			t.Errorf("worker %d: sockets not busy polling (kernelBusy false): the options were refused", w.id)
		}
		for _, q := range w.queues {
			for p, s := range q.sock {
				got, err := s.GetBusyPoll()
				if err != nil {
					t.Fatalf("queue %d port %s: getsockopt: %v", q.id, Port(p), err)
				}
				if got.Usecs != want.Usecs || got.Prefer != want.Prefer { // no getsockopt for the budget
					t.Errorf("queue %d port %s: busy-poll options got %+v, want %+v", q.id, Port(p), got, want)
				}
			}
		}
	}
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the busy-polling bridge failed:\n%s", out)
	}
	var sleeps uint64
	for _, w := range dp.workers {
		sleeps += w.waiter.Stats().Sleeps
	}
	if sleeps == 0 {
		t.Error("worker sleeps got 0 between pings 200 ms apart, want some: busy polling must not keep an idle worker awake")
	}
	stopLabDatapath(t, l, dp)
}

// loadAvg returns /proc/loadavg's first three fields, for the log: the
// machine is shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "load unknown"
	}
	return "load " + strings.Join(f[:3], " ")
}

// workersAsleep reports whether every worker of dp sleeps in its waiter.
func workersAsleep(dp *Datapath) bool {
	for _, w := range dp.workers {
		if !w.waiter.Asleep() {
			return false
		}
	}
	return true
}

// waitWorkersAsleep waits until every worker of dp sleeps in its waiter
// (the traffic has stopped and the spin after the last frame ended).
func waitWorkersAsleep(t *testing.T, dp *Datapath) {
	t.Helper()
	if !testenv.WaitFor(10*time.Second, func() bool { return workersAsleep(dp) }) {
		t.Fatal("the workers never went to sleep after the traffic stopped")
	}
}
