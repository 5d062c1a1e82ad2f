package testenv

import (
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	n := 0
	if !WaitFor(time.Second, func() bool { n++; return n == 3 }) {
		t.Errorf("WaitFor: got false, want true once cond holds")
	}
	if n != 3 {
		t.Errorf("cond called %d times, want 3 (until it held)", n)
	}
	start := time.Now()
	n = 0
	if WaitFor(50*time.Millisecond, func() bool { n++; return false }) {
		t.Errorf("WaitFor on a condition that never holds: got true, want false")
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("WaitFor returned after %v, want at least the 50ms timeout", el)
	}
	if n < 2 {
		t.Errorf("cond called %d times, want at least 2 (first and at the deadline)", n)
	}
	if !WaitFor(0, func() bool { return true }) {
		t.Errorf("WaitFor(0) on a true condition: got false, want true (cond runs once)")
	}
}

func TestCPUTicks(t *testing.T) {
	before := CPUTicks(t, "/proc/self/stat")
	// Burn CPU until the kernel has charged at least one tick to us.
	deadline := time.Now().Add(5 * time.Second)
	for x := 0; CPUTicks(t, "/proc/self/stat") == before; x++ {
		if time.Now().After(deadline) {
			t.Fatalf("no CPU tick charged in 5 s of spinning (stays %d)", before)
		}
	}
}
