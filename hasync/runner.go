package hasync

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/internal/sched"
)

// Priorities of the service's thread (Config.Priority, --sync-priority).
const (
	// PriorityIdle is SCHED_IDLE: the kernel runs the thread only on CPU
	// time no other thread of the machine wants, so a flood of new
	// connections on a bridge whose workers share a CPU with the sync
	// costs the workers nothing; what the thread cannot keep up with is
	// lost in the rings, counted (Stats.RingLost), and repaired by a walk
	// of the table (reconcile.go, Stats.Reconciles).
	PriorityIdle = "idle"
	// PriorityNice is nice 19: the thread still gets about 1.5% of a CPU
	// a worker keeps busy.
	PriorityNice = "nice"
	// PriorityNormal is the priority of the rest of the process.
	PriorityNormal = "normal"
)

// CheckPriority returns an error for a priority that is not one of the
// three, in the flag's words.
func CheckPriority(p string) error {
	switch p {
	case "", PriorityIdle, PriorityNice, PriorityNormal:
		return nil
	}
	return fmt.Errorf("--sync-priority must be idle, nice or normal, got %q", p)
}

// runner is the service's thread: one goroutine, locked to its OS thread
// and lowered to Config.Priority, that drains the workers' event rings,
// records and encodes what passes the filter, sends the datagrams (the
// link leaves its sends to it: ctsync.Link.DeferSends), serves the peer's
// resync requests and, after the rings lost events, walks the live
// table. Nothing of this needs a normal priority: it only ever waits for
// CPU time, never makes anyone else wait for it except the control
// server's sync commands (Service.mu) and conntrack -E (the drain lock),
// which then wait for a slice of the CPU the workers leave.
//
// The Go scheduler: a thread the kernel deschedules keeps its P, so while
// the workers keep a CPU busy the runner's P can be held for as long as
// the kernel lets a SCHED_IDLE thread wait (hundreds of milliseconds on a
// busy CPU). startRunner therefore raises GOMAXPROCS to workers + 2: each
// worker keeps its own P, the runner may sit on one, and the control
// server, the link's goroutines, timers and the garbage collector's
// background work always find a free P (TestFloodOneCPU). A
// stop-the-world pause stops the workers first, and the CPU they leave
// lets the runner reach its safe point at once, unless other processes
// keep that CPU busy too (then the pause waits for the runner's next
// slice). Threads the runtime makes
// later are cloned by its template thread, not by this one, so they do not
// inherit its priority.
type runner struct {
	tid             atomic.Int32 // the thread's id, once started
	kick            chan struct{}
	peerResync      atomic.Int32 // resyncs the peer asked for, to serve
	reconcileWanted atomic.Bool  // CheckLost saw new losses
	lastReconcile   time.Time    // the thread's own
	ctx             context.Context
	cancel          context.CancelFunc
	flush           func() // the link's Flush, or nil for a link that sends itself
}

// flusher is a link that can leave its sends to the service's thread
// (ctsync.Link).
type flusher interface {
	DeferSends(owner func())
	Flush()
}

// flushLink sends what the link holds, when the service's thread is the
// link's sender.
func (r *runner) flushLink() {
	if r.flush != nil {
		r.flush()
	}
}

func (r *runner) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// ThreadID returns the id of the service's thread (0 before Start, or
// without Events): the one to look at in top -H or /proc/PID/task.
func (s *Service) ThreadID() int { return int(s.run.tid.Load()) }

func (s *Service) startRunner() {
	ev := s.cfg.Events
	r := &s.run
	r.kick = make(chan struct{}, 1)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if f, ok := s.cfg.Link.(flusher); ok {
		f.DeferSends(r.wake)
		r.flush = f.Flush
	}
	if s.cfg.Priority != "" && s.cfg.Priority != PriorityNormal {
		if n := s.cfg.Shards + 2; runtime.GOMAXPROCS(0) < n {
			runtime.GOMAXPROCS(n)
		}
	}
	ev.Subscribe(s.cfg.Shards)
	s.ringBase = ev.Lost()
	s.lastLost.Store(s.ringBase)
	s.removeReader = ev.AddReader(s.HandleEvents)
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	started := make(chan struct{})
	go s.runLoop(started)
	<-started
}

// runLoop is the service's thread.
func (s *Service) runLoop(started chan<- struct{}) {
	defer close(s.done)
	// Never unlocked: a thread with a lowered priority must not go back
	// to the runtime's pool, so it ends with this goroutine.
	runtime.LockOSThread()
	s.run.tid.Store(int32(unix.Gettid()))
	if err := setPriority(s.cfg.Priority); err != nil {
		s.cfg.Logger.Warn("state sync: could not lower the sync thread's priority; it competes with the workers for CPU", "priority", s.cfg.Priority, "err", err)
	}
	close(started)
	buf := make([]bridge.Event, 256)
	t := time.NewTicker(s.cfg.DrainInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.run.kick:
		}
		s.cycle(buf)
	}
}

// cycle is one turn of the service's thread: drain (sending batch by
// batch, so that a long drain does not fill the link's transmit queue),
// the expectations, the peer's resync requests, and, after lost events, a
// reconciliation (reconcile.go) at most once per ReconcileInterval.
func (s *Service) cycle(buf []bridge.Event) {
	r := &s.run
	s.cfg.Events.Drain(buf, func([]bridge.Event) { r.flushLink() })
	s.SyncExpectations()
	s.CheckLost()
	for ; r.peerResync.Load() > 0; r.peerResync.Add(-1) {
		s.cfg.Logger.Info("sync peer asked for a resync: resending the whole cache")
		s.serveResync()
		r.flushLink()
	}
	if r.reconcileWanted.Load() && s.cfg.Table != nil && time.Since(r.lastReconcile) >= s.cfg.ReconcileInterval {
		r.reconcileWanted.Store(false)
		r.lastReconcile = time.Now()
		ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
		if _, err := s.Reconcile(ctx); err != nil {
			r.reconcileWanted.Store(true) // again at the next turn after the interval
		}
		cancel()
	}
	r.flushLink()
}

// newCached takes an entry from the free list, the slab, or makes one.
// Under mu.
func (s *Service) newCached() *cached {
	if n := len(s.free); n > 0 {
		c := s.free[n-1]
		s.free = s.free[:n-1]
		return c
	}
	if len(s.slab) > 0 {
		c := &s.slab[0]
		s.slab = s.slab[1:]
		return c
	}
	return new(cached)
}

// setPriority lowers the calling thread (locked) to p.
func setPriority(p string) error {
	switch p {
	case PriorityIdle:
		return sched.Idle()
	case PriorityNice:
		return sched.Nice(19)
	}
	return nil
}
