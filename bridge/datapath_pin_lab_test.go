package bridge

import (
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/sched"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// TestDatapathPinned starts a datapath whose workers are pinned (CPUs,
// statewire run --cpus) in the reverse of their order (worker i is not on
// CPU i), checks frames go through, and reads each worker thread's
// affinity back with sched_getaffinity: exactly its CPU (waited for: a
// worker pins itself once started). Needs root (the lab).
func TestDatapathPinned(t *testing.T) {
	cores := min(2, runtime.NumCPU())
	cpus := make([]int, cores)
	for i := range cpus {
		cpus[i] = cores - 1 - i
	}
	l := lab.NewT(t, lab.Options{Queues: cores})
	dp := startDatapath(t, l, cores, func(c *DatapathConfig) {
		smallRings(c)
		c.CPUs = cpus
	})
	if ok, out := l.Ping(l.LeftNS, lab.RightIPv4.Addr().String(), 3); !ok {
		t.Fatalf("ping through the bridge failed:\n%s", out)
	}
	// A worker publishes its thread id before it pins the thread, and
	// which worker the ping reached depends on RSS: wait for each, with a
	// deadline, then assert on what was read last.
	for _, w := range dp.workers {
		want := []int{cpus[w.id]}
		var tid int
		var got []int
		var err error
		testenv.WaitFor(10*time.Second, func() bool {
			if tid = int(w.tid.Load()); tid == 0 {
				return false
			}
			got, err = affinity(tid)
			return err == nil && slices.Equal(got, want)
		})
		switch {
		case tid == 0:
			t.Errorf("worker %d: no thread after 10 s", w.id)
		case err != nil:
			t.Errorf("worker %d: sched_getaffinity(%d): %v", w.id, tid, err)
		case !slices.Equal(got, want):
			t.Errorf("worker %d (thread %d): affinity %s, want %s", w.id, tid, sched.List(got), sched.List(want))
		}
	}
	stopLabDatapath(t, l, dp)
}

// affinity returns the CPUs thread tid of this process may run on.
func affinity(tid int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil, err
	}
	var cpus []int
	for cpu := 0; set.Count() > len(cpus); cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}
