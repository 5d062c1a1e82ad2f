package hasync

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestThreadPriority starts the service's thread at each --sync-priority
// and reads its policy and nice value back with sched_getattr: idle is
// SCHED_IDLE, nice is SCHED_OTHER at nice 19, normal is the process's own.
func TestThreadPriority(t *testing.T) {
	own, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		priority string
		policy   uint32
		nice     int32
	}{
		{PriorityIdle, unix.SCHED_IDLE, own.Nice},
		{PriorityNice, unix.SCHED_NORMAL, 19},
		{PriorityNormal, own.Policy, own.Nice},
	} {
		t.Run(c.priority, func(t *testing.T) {
			b := newBox(t)
			s := New(Config{Link: &pairLink{}, Filter: DefaultFilter, Peer: "b", Table: b.tb, Now: func() int64 { return b.now },
				Events: b.ctl.Events(), Shards: 1, DrainInterval: time.Hour, Priority: c.priority})
			s.Start()
			defer s.Close()
			tid := s.ThreadID()
			if tid == 0 {
				t.Fatal("ThreadID 0 after Start with Events: no thread of its own")
			}
			a, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				t.Fatalf("sched_getattr(%d): %v", tid, err)
			}
			if a.Policy != c.policy || a.Nice != c.nice {
				t.Errorf("sync thread %d: policy %d nice %d, want policy %d nice %d", tid, a.Policy, a.Nice, c.policy, c.nice)
			}
		})
	}
}
