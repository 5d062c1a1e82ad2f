package sched

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// setSize is the number of CPUs a unix.CPUSet can name (CPU_SETSIZE).
const setSize = len(unix.CPUSet{}) * strconv.IntSize

// Pin restricts the calling thread (locked, see the package comment) to
// cpu. A CPU the thread may not run on (offline, absent, or outside the
// cgroup's cpuset) is refused with the CPUs it may use.
func Pin(cpu int) error {
	if cpu < 0 || cpu >= setSize {
		// unix.CPUSet.Set panics below 0 and ignores CPUs past the set.
		return notAllowed(cpu, unix.EINVAL)
	}
	var set unix.CPUSet
	set.Set(cpu)
	err := unix.SchedSetaffinity(0, &set)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		// sched_setaffinity(2): the mask holds no CPU that is online
		// and in the thread's cpuset.
		return notAllowed(cpu, err)
	}
	return fmt.Errorf("pin this thread to CPU %d: %w", cpu, err)
}

// notAllowed is Pin's error for a cpu the thread may not run on. The CPUs
// named are the calling thread's affinity, unchanged by the refusal: for a
// thread not yet pinned, the CPUs the process was started on.
func notAllowed(cpu int, errno error) error {
	const why = "the CPU is offline, absent or outside this process's cpuset (cpuset.cpus of its cgroup)"
	cpus, err := Allowed()
	if err != nil || len(cpus) == 0 {
		return fmt.Errorf("pin this thread to CPU %d: %w: %s; choose another", cpu, errno, why)
	}
	return fmt.Errorf("pin this thread to CPU %d: %w: %s; this thread may run on CPUs %s (its affinity, as taskset -c set it at start): choose one of those", cpu, errno, why, List(cpus))
}

// Allowed returns the CPUs the calling thread may run on
// (sched_getaffinity(2)), in increasing order.
func Allowed() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("read this thread's CPU affinity: %w", err)
	}
	cpus := make([]int, 0, set.Count())
	for cpu := 0; cpu < setSize; cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}

// List formats cpus (increasing) as taskset -c and --cpus lists take them:
// runs as ranges, "0-3,6".
func List(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// FIFO puts the calling thread (locked) under SCHED_FIFO at prio (1-99):
// it then preempts every normal thread on its CPU as soon as it is
// runnable, and none preempts it.
func FIFO(prio int) error {
	if prio < 1 || prio > 99 {
		return fmt.Errorf("SCHED_FIFO priority %d: must be 1-99 (--rt-priority; 0 leaves the normal policy)", prio)
	}
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	err := unix.SchedSetAttr(0, &attr, 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("SCHED_FIFO priority %d refused (%w): it needs root or CAP_SYS_NICE (or an RLIMIT_RTPRIO of at least %d), and with RT group scheduling a cgroup with cpu.rt_runtime_us above 0; or run with --rt-priority 0", prio, err, prio)
	}
	return fmt.Errorf("SCHED_FIFO priority %d refused: %w", prio, err)
}

// Idle puts the calling thread (locked) under SCHED_IDLE: the kernel runs
// it only on CPU time no other thread wants. Lowering one's own policy
// needs no privilege.
func Idle() error {
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_IDLE}, 0); err != nil {
		return fmt.Errorf("SCHED_IDLE refused: %w", err)
	}
	return nil
}

// Nice sets the calling thread's (locked) nice value to n (-20 to 19).
// On Linux setpriority(2) with PRIO_PROCESS and 0 acts on the calling
// thread, not on the whole process (setpriority(2), Linux notes).
func Nice(n int) error {
	err := unix.Setpriority(unix.PRIO_PROCESS, 0, n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return fmt.Errorf("nice %d refused (%w): raising a thread's priority needs root or CAP_SYS_NICE (or an RLIMIT_NICE that allows it)", n, err)
	}
	return fmt.Errorf("nice %d refused: %w", n, err)
}
