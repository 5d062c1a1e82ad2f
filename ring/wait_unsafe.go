package ring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Waiter lets an idle worker sleep instead of spinning or sleeping on a
// timer: Wait waits for the worker's sockets to be readable (the RX ring
// is not empty) or an eventfd that other goroutines write through Wake,
// bounded by a timeout (the worker's next timer): an epoll set of those,
// waited on through Go's poller.
//
// The protocol against lost wake-ups: the owner calls Prepare (the asleep
// flag goes up), then looks once more at everything another goroutine can
// hand it (its SPSC rings, its shard's mailbox, the settings), and only
// then calls Wait, or Cancel when it found work. A waker publishes its work
// first and calls Wake after, which writes the eventfd only when the flag
// is up. The flag and the work are sequentially consistent atomics, so
// either the owner's second look sees the work or the waker sees the flag;
// the eventfd keeps a write until it is read, so a Wake between the second
// look and the wait makes it return at once. The sockets need no flag:
// epoll itself looks at the RX rings (the kernel's xsk_poll), which also
// does the need_wakeup work for the fill ring (zero-copy drivers) and the
// TX ring (copy mode sends in xsk_poll too).
//
// Ownership: Watch, Prepare, Cancel, Wait and Close belong to the goroutine
// that owns the sockets; Wake and Stats may be called from any goroutine.
type Waiter struct {
	efd int
	// The sockets and the eventfd are in an epoll set (level-triggered),
	// whose descriptor is in Go's own poller (file, rc): Wait parks the
	// goroutine there like any blocking read or timer sleep, so its P is
	// free for others at once; a blocking poll(2) would hold the P until
	// the runtime's sysmon takes it back.
	epfd int
	// thread: a thread waiter (NewThreadWaiter), whose epoll set is not
	// in Go's poller (file and rc are nil): Wait blocks the owner's
	// thread in epoll_wait.
	thread bool
	file   *os.File
	rc     syscall.RawConn
	ready  func(fd uintptr) bool // epoll_wait without blocking; made once
	events [8]unix.EpollEvent
	got    int
	asleep atomic.Bool
	buf    [8]byte // the owner's read of the eventfd
	// socks are the watched sockets; armed says whether they are in the
	// epoll set now. They are only while the owner sleeps (Wait adds
	// them, Disarm takes them out once the owner is busy again): a
	// socket in an epoll set is woken (sock_def_readable, the epoll
	// callback) at every receive flush, and Go's poller, which has our
	// epoll set in its own (NewWaiter), polls it from its scheduler:
	// xsk_poll then sends the TX ring from that thread. Under a
	// connections-per-second flood that was 14% (the scheduler's
	// netpoll) and 5% (the wake-ups) of the worker's CPU
	// (perf/RESULTS.md).
	socks []int
	armed bool
	ev    unix.EpollEvent // add's argument
	// closed and waking keep Close from closing the eventfd under a Wake
	// that saw the flag up (its number could be reused by then).
	closed atomic.Bool
	waking atomic.Int32

	sleeps, byWake, byRX, byTimeout, disarms atomic.Uint64
}

// WaitStats count the sleeps of a Waiter and what ended each.
type WaitStats struct {
	Sleeps  uint64 // calls to Wait
	Woken   uint64 // ended by Wake (the eventfd)
	RX      uint64 // ended by a socket with frames to receive
	Timeout uint64 // ended by the timeout alone
	// Disarmed counts the Disarms that took the sockets out of the
	// epoll set (the owner became busy after a sleep).
	Disarmed uint64
}

// wakeValue is what Wake adds to the eventfd's counter (any non-zero
// value makes it readable). Read-only: concurrent writers share it.
var wakeValue = [8]byte{1}

// NewWaiter returns a Waiter with its eventfd and no sockets yet, whose
// Wait parks the goroutine in Go's poller.
func NewWaiter() (*Waiter, error) { return newWaiter(false) }

// NewThreadWaiter returns a Waiter whose Wait blocks the owner's own
// thread in epoll_wait, for an owner locked to a real-time thread: the
// thread a frame's softirq or a Wake wakes is then the owner's, one hop,
// and under SCHED_FIFO it preempts whatever runs on its CPU at once.
// Through Go's poller the wake-up goes to the poller's thread first, an
// ordinary thread that waits for its CPU like any other (on a busy
// machine a scheduler slice, milliseconds: perf/RESULTS.md "Tail
// latency"), which then wakes the owner's; and every frame that arrives
// while the owner is awake wakes the poller's thread too, for nothing.
// The cost: the owner's P stays in the system call while it sleeps, until
// the runtime's sysmon hands it on (after 10 ms when other Ps are idle).
func NewThreadWaiter() (*Waiter, error) { return newWaiter(true) }

func newWaiter(thread bool) (*Waiter, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, errors.Join(errors.New("ring: eventfd for the worker's wake-ups"), err)
	}
	w := &Waiter{efd: fd, epfd: -1, thread: thread}
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ring: epoll for the worker's wake-ups: %w", err)
	}
	err = w.add(fd)
	if err == nil && !thread {
		err = unix.SetNonblock(w.epfd, true) // os.NewFile puts it in Go's poller then
	}
	if err != nil {
		unix.Close(w.epfd)
		unix.Close(fd)
		return nil, fmt.Errorf("ring: epoll for the worker's wake-ups: %w", err)
	}
	if thread {
		return w, nil
	}
	w.file = os.NewFile(uintptr(w.epfd), "statewire-wait")
	if w.rc, err = w.file.SyscallConn(); err != nil {
		w.file.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("ring: epoll for the worker's wake-ups: %w", err)
	}
	w.ready = func(uintptr) bool {
		n, _ := unix.EpollWait(w.epfd, w.events[:], 0)
		w.got = max(n, 0)
		return n > 0
	}
	return w, nil
}

// add puts fd in the epoll set, readable (level-triggered).
func (w *Waiter) add(fd int) error {
	w.ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)} // the Waiter's own: arming allocates nothing
	return unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &w.ev)
}

// Watch adds s to the sockets Wait waits on. Owner only, before the first
// Wait. The socket goes into the epoll set now (a refusal is reported
// here, at start) and stays until the first Disarm; from then on it is in
// the set only while the owner sleeps.
func (w *Waiter) Watch(s *Socket) error {
	if err := w.add(s.fd); err != nil {
		return err
	}
	w.socks = append(w.socks, s.fd)
	w.armed = true
	return nil
}

// arm puts the watched sockets in the epoll set (level-triggered: one
// that already has frames makes the next epoll_wait return at once, so no
// frame that came before the add is missed). It reports false when the
// kernel refused one (out of memory): the caller must not sleep then.
func (w *Waiter) arm() bool {
	if w.armed {
		return true
	}
	for i, fd := range w.socks {
		if err := w.add(fd); err != nil && err != unix.EEXIST {
			for _, added := range w.socks[:i] {
				unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, added, nil)
			}
			return false
		}
	}
	w.armed = true
	return true
}

// Disarm takes the watched sockets out of the epoll set: the owner calls
// it when it is busy (it moved frames), so that a busy worker's sockets
// cost no wake-ups; the next Wait puts them back. It costs a branch when
// they are out already. Owner only; nil-safe.
func (w *Waiter) Disarm() {
	if w == nil || !w.armed {
		return
	}
	for _, fd := range w.socks {
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	w.armed = false
	w.disarms.Add(1)
}

// Armed reports whether the watched sockets are in the epoll set (tests).
// Owner only.
func (w *Waiter) Armed() bool { return w.armed }

// Prepare raises the asleep flag: from now on a Wake writes the eventfd.
// The owner looks for work once more after it, then calls Wait or Cancel.
func (w *Waiter) Prepare() { w.asleep.Store(true) }

// Cancel lowers the flag when the second look found work.
func (w *Waiter) Cancel() { w.asleep.Store(false) }

// Wait sleeps until a watched socket has frames to receive (the kernel's
// xsk_poll, which epoll calls, also does the fill and TX need_wakeup
// work), a Wake, or timeout (negative: none), then lowers the flag and
// empties the eventfd. It puts the watched sockets back into the epoll
// set first when Disarm took them out; they stay until the next Disarm.
// Owner only, after Prepare.
func (w *Waiter) Wait(timeout time.Duration) {
	w.sleeps.Add(1)
	w.got = 0
	if !w.arm() {
		// Without the sockets in the set a frame would wait for the
		// timeout: do not sleep (the owner polls its rings instead).
		w.asleep.Store(false)
		w.byTimeout.Add(1)
		return
	}
	if w.thread {
		w.waitThread(timeout)
		return
	}
	if timeout >= 0 {
		w.file.SetReadDeadline(time.Now().Add(timeout))
	} else {
		w.file.SetReadDeadline(time.Time{})
	}
	w.rc.Read(w.ready) // a deadline or a closed file ends it with got 0
	w.woke()
}

// waitThread is Wait for a thread waiter: epoll_wait on this thread,
// timeout rounded up to a millisecond (its timers are tens of them).
// EINTR (a signal: Go's preemption, the GC) ends the sleep early, as a
// timeout: the owner looks at its rings and sleeps again.
func (w *Waiter) waitThread(timeout time.Duration) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	n, _ := unix.EpollWait(w.epfd, w.events[:], ms)
	w.got = max(n, 0)
	w.woke()
}

// woke ends a wait: lowers the flag, counts what ended it and empties the
// eventfd when it was that.
func (w *Waiter) woke() {
	w.asleep.Store(false)
	if w.got == 0 {
		w.byTimeout.Add(1)
		return
	}
	woken := false
	for _, ev := range w.events[:w.got] {
		if int(ev.Fd) == w.efd {
			woken = true
		}
	}
	if woken {
		w.byWake.Add(1)
		unix.Read(w.efd, w.buf[:]) // resets the counter; EAGAIN when raced
		return
	}
	w.byRX.Add(1)
}

// Wake wakes the owner if it is asleep or about to be (between Prepare and
// Wait); otherwise it costs one atomic load. Any goroutine, after it
// published the work the owner is to find.
func (w *Waiter) Wake() {
	if w == nil || !w.asleep.Load() {
		return
	}
	w.waking.Add(1)
	if !w.closed.Load() && w.asleep.CompareAndSwap(true, false) {
		unix.Write(w.efd, wakeValue[:])
	}
	w.waking.Add(-1)
}

// Thread reports whether Wait blocks the owner's thread (NewThreadWaiter)
// rather than parking in Go's poller. Any goroutine.
func (w *Waiter) Thread() bool { return w.thread }

// Asleep reports whether the owner is between Prepare and the end of its
// Wait (tests). Any goroutine.
func (w *Waiter) Asleep() bool { return w.asleep.Load() }

// Stats returns the counters of the Waiter. Any goroutine.
func (w *Waiter) Stats() WaitStats {
	return WaitStats{Sleeps: w.sleeps.Load(), Woken: w.byWake.Load(), RX: w.byRX.Load(), Timeout: w.byTimeout.Load(),
		Disarmed: w.disarms.Load()}
}

// Close closes the eventfd. Owner only, after its last Wait; a Wake from
// another goroutine after (or during) Close does nothing.
func (w *Waiter) Close() error {
	if w.efd < 0 {
		return nil
	}
	w.closed.Store(true)
	for w.waking.Load() != 0 {
		runtime.Gosched() // a Wake that saw the flag up is inside its write
	}
	var err error
	if w.file != nil {
		err = w.file.Close()
	} else {
		err = unix.Close(w.epfd)
	}
	err = errors.Join(err, unix.Close(w.efd))
	w.efd = -1
	return err
}
