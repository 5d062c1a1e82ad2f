package bridge

import (
	"testing"
	"time"
)

// fakeThread is a worker thread's clocks for rtBudget: the wall clock now
// and the CPU time it has used, advanced by the test.
type fakeThread struct{ now, cpu int64 }

func (f *fakeThread) budget() *rtBudget { return &rtBudget{cpu: func() int64 { return f.cpu }} }

// awake advances both clocks by d: the thread runs.
func (f *fakeThread) awake(d time.Duration) { f.now += int64(d); f.cpu += int64(d) }

// TestRTBudgetSpinsUntilSpent plays a real-time worker that never sleeps
// (a frame every 20 µs, idle in between): it may spin until it has been
// awake rtAwakeMax of the window, then must sleep when idle; after a sleep
// to the window's end, the next window gives it the spin back.
func TestRTBudgetSpinsUntilSpent(t *testing.T) {
	const spin = rtIdleSpin
	f := &fakeThread{now: int64(time.Hour)}
	b := f.budget()
	b.woke(f.now)
	ws := b.windowStart
	for b.spin(f.now, spin) == spin {
		if f.now-ws > rtWindow {
			t.Fatalf("still spinning %v into a window, awake the whole time", time.Duration(f.now-ws))
		}
		f.awake(20 * time.Microsecond)
	}
	if awake := f.now - ws; awake < rtAwakeMax || awake > rtAwakeMax+int64(20*time.Microsecond) {
		t.Errorf("spin refused after %v awake in the window, want %v", time.Duration(awake), time.Duration(rtAwakeMax))
	}
	f.awake(20 * time.Microsecond)
	if got := b.spin(f.now, spin); got != 0 {
		t.Errorf("spin %v after the budget, want 0", time.Duration(got))
	}
	b.sleep(f.now)
	f.now = ws + rtWindow + int64(20*time.Microsecond) // slept into the next window
	b.woke(f.now)
	f.awake(20 * time.Microsecond)
	if got := b.spin(f.now, spin); got != spin {
		t.Errorf("next window: spin %v, want %v", time.Duration(got), time.Duration(spin))
	}
}

// TestRTBudgetCountsCPU: time asleep does not count, so a worker awake
// half the time never loses its spin; but the CPU a sleep's wake-up costs
// the thread (the kernel counts it) does: a worker awake 70% of the wall
// clock whose 1 000 wake-ups a window cost 20 µs of CPU each is at 90% of
// a CPU, and must lose its spin.
func TestRTBudgetCountsCPU(t *testing.T) {
	const spin = rtIdleSpin
	f := &fakeThread{now: int64(time.Hour)}
	b := f.budget()
	b.woke(f.now)
	for i := range 20000 { // 2 s: 50 µs awake, 50 µs asleep
		f.awake(50 * time.Microsecond)
		if got := b.spin(f.now, spin); got != spin {
			t.Fatalf("after %v: spin %v, want %v (awake only half the time)", time.Duration(int64(i)*int64(100*time.Microsecond)), time.Duration(got), time.Duration(spin))
		}
		b.sleep(f.now)
		f.now += int64(50 * time.Microsecond)
		b.woke(f.now)
	}
	f = &fakeThread{now: int64(time.Hour)}
	b = f.budget()
	b.woke(f.now)
	ws, refused := b.windowStart, false
	for f.now-ws < rtWindow-int64(100*time.Microsecond) {
		f.awake(70 * time.Microsecond)
		if b.spin(f.now, spin) == 0 {
			refused = true
			break
		}
		b.sleep(f.now)
		f.now += int64(30 * time.Microsecond)
		f.cpu += int64(20 * time.Microsecond) // the wake-up's kernel path, on the thread
		b.woke(f.now)
	}
	if !refused {
		t.Errorf("awake 70%% of the window plus 20 µs of CPU per wake-up (90%% of a CPU): spin never refused, want refused after %v of CPU", time.Duration(rtAwakeMax))
	}
}

// TestRTBudgetAcrossWindows: a worker awake across a window's end starts
// the new window's account at its start, not at its wake-up.
func TestRTBudgetAcrossWindows(t *testing.T) {
	const spin = rtIdleSpin
	f := &fakeThread{now: int64(time.Hour)}
	b := f.budget()
	b.woke(f.now)
	end := b.windowStart + rtWindow
	f.awake(time.Duration(end - int64(time.Millisecond) - f.now))
	b.spin(f.now, spin)                // awake almost all of window 1 (spent: no matter)
	f.awake(time.Duration(rtAwakeMax)) // into window 2 by rtAwakeMax - 1 ms
	if got := b.spin(f.now, spin); got != spin {
		t.Errorf("window 2, awake %v of it: spin %v, want %v", time.Duration(f.now-end), time.Duration(got), time.Duration(spin))
	}
	f.awake(time.Millisecond)
	if got := b.spin(f.now, spin); got != 0 {
		t.Errorf("window 2, awake %v of it: spin %v, want 0", time.Duration(f.now-end), time.Duration(got))
	}
}
