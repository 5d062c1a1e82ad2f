package sched

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"golang.org/x/sys/unix"
)

// onThread runs f on a goroutine locked to a fresh OS thread and waits for
// it. The goroutine exits locked, so the runtime ends the thread with
// whatever affinity, policy or capabilities f gave it.
func onThread(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		f()
	}()
	<-done
}

// needRoot skips the test when not root, or fails it with CI=true.
func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, what+" needs root")
	}
}

// dropSysNice clears CAP_SYS_NICE from the calling (locked) thread's
// effective capabilities: capabilities are per thread on Linux, and the
// thread ends with the test's goroutine.
func dropSysNice() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[unix.CAP_SYS_NICE/32].Effective &^= 1 << (unix.CAP_SYS_NICE % 32)
	return unix.Capset(&hdr, &data[0])
}

// TestPinReadsBack pins a locked thread to each CPU it may use in turn and
// reads the affinity back: exactly that CPU.
func TestPinReadsBack(t *testing.T) {
	onThread(func() {
		cpus, err := Allowed()
		if err != nil {
			t.Errorf("Allowed: %v", err)
			return
		}
		if len(cpus) == 0 {
			t.Errorf("Allowed: no CPU, want at least the one this thread runs on")
			return
		}
		for _, cpu := range cpus {
			if err := Pin(cpu); err != nil {
				t.Errorf("Pin(%d): %v", cpu, err)
				continue
			}
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				t.Errorf("sched_getaffinity: %v", err)
				return
			}
			if set.Count() != 1 || !set.IsSet(cpu) {
				t.Errorf("after Pin(%d): affinity %s, want %d", cpu, List(setCPUs(&set)), cpu)
			}
			// Widen it again so the next CPU is allowed whatever
			// the kernel's rules for a pinned thread.
			var all unix.CPUSet
			for _, c := range cpus {
				all.Set(c)
			}
			if err := unix.SchedSetaffinity(0, &all); err != nil {
				t.Errorf("restore affinity %s: %v", List(cpus), err)
				return
			}
		}
	})
}

func setCPUs(set *unix.CPUSet) []int {
	var cpus []int
	for c := 0; c < setSize; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// TestPinOutsideAllowed asks for CPUs the thread can never run on (the
// last the kernel's mask can name, which no machine here has, and two
// outside the mask) and checks the refusal: EINVAL, the CPU asked for, the
// CPUs allowed in taskset's notation and what to do; the thread's
// affinity is unchanged.
func TestPinOutsideAllowed(t *testing.T) {
	possible, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		t.Fatal(err)
	}
	last := setSize - 1
	for _, r := range strings.Split(strings.TrimSpace(string(possible)), ",") {
		_, hi, _ := strings.Cut(r, "-")
		if hi == "" {
			hi = r
		}
		if n, _ := strconv.Atoi(hi); n >= last {
			t.Skipf("this machine can have CPU %d (possible: %s): no CPU number is certain to be absent", last, possible)
		}
	}
	onThread(func() {
		before, err := Allowed()
		if err != nil {
			t.Errorf("Allowed: %v", err)
			return
		}
		for _, cpu := range []int{last, setSize, -1} {
			err := Pin(cpu)
			if err == nil {
				t.Errorf("Pin(%d): no error, want a refusal", cpu)
				continue
			}
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("Pin(%d): %v, want EINVAL wrapped", cpu, err)
			}
			msg := err.Error()
			for _, want := range []string{
				"CPU " + strconv.Itoa(cpu) + ":",
				"may run on CPUs " + List(before) + " ",
				"choose one of those",
				"cpuset",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("Pin(%d) error %q: does not say %q", cpu, msg, want)
				}
			}
			after, err := Allowed()
			if err != nil {
				t.Errorf("Allowed: %v", err)
				return
			}
			if !slices.Equal(after, before) {
				t.Errorf("after the refused Pin(%d): affinity %s, want %s unchanged", cpu, List(after), List(before))
			}
		}
	})
}

func TestList(t *testing.T) {
	for _, c := range []struct {
		cpus []int
		want string
	}{
		{nil, ""},
		{[]int{0}, "0"},
		{[]int{0, 1}, "0-1"},
		{[]int{0, 2}, "0,2"},
		{[]int{0, 1, 2, 3, 6, 8, 9}, "0-3,6,8-9"},
		{[]int{1023}, "1023"},
	} {
		if got := List(c.cpus); got != c.want {
			t.Errorf("List(%v) = %q, want %q", c.cpus, got, c.want)
		}
	}
}

// TestFIFOReadsBack puts a locked thread under SCHED_FIFO and reads the
// policy and priority back with sched_getattr. Needs root.
func TestFIFOReadsBack(t *testing.T) {
	needRoot(t, "SCHED_FIFO")
	const prio = 7
	onThread(func() {
		if err := FIFO(prio); err != nil {
			t.Errorf("FIFO(%d): %v", prio, err)
			return
		}
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			t.Errorf("sched_getattr: %v", err)
			return
		}
		if a.Policy != unix.SCHED_FIFO || a.Priority != prio {
			t.Errorf("policy %d priority %d, want SCHED_FIFO (%d) priority %d", a.Policy, a.Priority, unix.SCHED_FIFO, prio)
		}
	})
	// The test's own thread is untouched.
	if a, err := unix.SchedGetAttr(0, 0); err == nil && a.Policy == unix.SCHED_FIFO {
		t.Errorf("the test goroutine's thread is under SCHED_FIFO: FIFO acted on another thread")
	}
}

// TestFIFORefused takes CAP_SYS_NICE away from a root thread and checks
// the refusal tells the operator what to do: EPERM, the capability, and
// --rt-priority 0. Needs root (a thread can only drop what it has).
func TestFIFORefused(t *testing.T) {
	needRoot(t, "dropping CAP_SYS_NICE")
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_RTPRIO, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= 99 {
		t.Skipf("RLIMIT_RTPRIO is %d: every SCHED_FIFO priority is allowed without CAP_SYS_NICE", lim.Cur)
	}
	prio := int(lim.Cur) + 1
	onThread(func() {
		if err := dropSysNice(); err != nil {
			t.Errorf("drop CAP_SYS_NICE: %v", err)
			return
		}
		err := FIFO(prio)
		if err == nil {
			t.Errorf("FIFO(%d) without CAP_SYS_NICE (RLIMIT_RTPRIO %d): no error", prio, lim.Cur)
			return
		}
		if !errors.Is(err, unix.EPERM) {
			t.Errorf("FIFO(%d): %v, want EPERM wrapped", prio, err)
		}
		for _, want := range []string{"CAP_SYS_NICE", "--rt-priority 0", "priority " + strconv.Itoa(prio)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("FIFO(%d) error %q: does not say %q", prio, err, want)
			}
		}
		if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Policy != unix.SCHED_NORMAL {
			t.Errorf("after the refusal: policy %v (err %v), want SCHED_NORMAL", a, err)
		}
	})
	for _, prio := range []int{0, 100, -1} {
		if err := FIFO(prio); err == nil || !strings.Contains(err.Error(), "1-99") {
			t.Errorf("FIFO(%d): %v, want a refusal naming 1-99", prio, err)
		}
	}
}

// TestIdleReadsBack puts a locked thread under SCHED_IDLE and reads the
// policy back with sched_getattr (lowering needs no privilege).
func TestIdleReadsBack(t *testing.T) {
	onThread(func() {
		if err := Idle(); err != nil {
			t.Errorf("Idle: %v", err)
			return
		}
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			t.Errorf("sched_getattr: %v", err)
			return
		}
		if a.Policy != unix.SCHED_IDLE {
			t.Errorf("policy %d, want SCHED_IDLE (%d)", a.Policy, unix.SCHED_IDLE)
		}
	})
}

// TestNiceReadsBack lowers a locked thread to nice 19 and reads the nice
// value back with sched_getattr (setpriority with 0 is the thread on
// Linux: the test's own thread keeps its value).
func TestNiceReadsBack(t *testing.T) {
	own, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	onThread(func() {
		if err := Nice(19); err != nil {
			t.Errorf("Nice(19): %v", err)
			return
		}
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			t.Errorf("sched_getattr: %v", err)
			return
		}
		if a.Nice != 19 {
			t.Errorf("nice %d, want 19", a.Nice)
		}
	})
	if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Nice != own.Nice {
		t.Errorf("the test's thread: nice %v (err %v), want %d unchanged", a, err, own.Nice)
	}
}

// TestNiceRaised raises a root thread to nice -20 (the perf generator's),
// then takes CAP_SYS_NICE away from another and checks the refusal names
// it. Needs root.
func TestNiceRaised(t *testing.T) {
	needRoot(t, "a negative nice value")
	onThread(func() {
		if err := Nice(-20); err != nil {
			t.Errorf("Nice(-20): %v", err)
			return
		}
		if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Nice != -20 {
			t.Errorf("after Nice(-20): %v (err %v), want nice -20", a, err)
		}
	})
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NICE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= 40 {
		t.Skipf("RLIMIT_NICE is %d: nice -20 is allowed without CAP_SYS_NICE", lim.Cur)
	}
	onThread(func() {
		if err := dropSysNice(); err != nil {
			t.Errorf("drop CAP_SYS_NICE: %v", err)
			return
		}
		err := Nice(-20)
		if err == nil {
			t.Errorf("Nice(-20) without CAP_SYS_NICE (RLIMIT_NICE %d): no error", lim.Cur)
			return
		}
		if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
			t.Errorf("Nice(-20): %v, want EACCES wrapped", err)
		}
		if !strings.Contains(err.Error(), "CAP_SYS_NICE") {
			t.Errorf("Nice(-20) error %q: does not name CAP_SYS_NICE", err)
		}
	})
}
