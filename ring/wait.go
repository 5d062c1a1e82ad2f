package ring

import (
	"errors"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Waiter lets an idle worker sleep in the kernel instead of spinning or
// sleeping on a timer: Wait is one poll(2) on the worker's sockets (POLLIN:
// the RX ring is not empty) and on an eventfd that other goroutines write
// through Wake, bounded by a timeout (the worker's next timer).
//
// The protocol against lost wake-ups: the owner calls Prepare (the asleep
// flag goes up), then looks once more at everything another goroutine can
// hand it (its SPSC rings, its shard's mailbox, the settings), and only
// then calls Wait, or Cancel when it found work. A waker publishes its work
// first and calls Wake after, which writes the eventfd only when the flag
// is up. The flag and the work are sequentially consistent atomics, so
// either the owner's second look sees the work or the waker sees the flag;
// the eventfd keeps a write until it is read, so a Wake between the second
// look and poll(2) makes poll return at once. The sockets need no flag:
// poll(2) itself looks at the RX rings (the kernel's xsk_poll), and it also
// does the need_wakeup work for the fill ring (zero-copy drivers) and the
// TX ring (copy mode sends in xsk_poll too).
//
// Ownership: Watch, Prepare, Cancel, Wait and Close belong to the goroutine
// that owns the sockets; Wake and Stats may be called from any goroutine.
type Waiter struct {
	efd    int
	fds    []unix.PollFd // the sockets', then the eventfd
	asleep atomic.Bool
	buf    [8]byte // the owner's read of the eventfd
	// closed and waking keep Close from closing the eventfd under a Wake
	// that saw the flag up (its number could be reused by then).
	closed atomic.Bool
	waking atomic.Int32

	sleeps, byWake, byRX, byTimeout atomic.Uint64
}

// WaitStats count the sleeps of a Waiter and what ended each.
type WaitStats struct {
	Sleeps  uint64 // calls to Wait
	Woken   uint64 // ended by Wake (the eventfd)
	RX      uint64 // ended by a socket with frames to receive
	Timeout uint64 // ended by the timeout alone
}

// wakeValue is what Wake adds to the eventfd's counter (any non-zero
// value makes it readable). Read-only: concurrent writers share it.
var wakeValue = [8]byte{1}

// NewWaiter returns a Waiter with its eventfd and no sockets yet.
func NewWaiter() (*Waiter, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, errors.Join(errors.New("ring: eventfd for the worker's wake-ups"), err)
	}
	return &Waiter{efd: fd, fds: []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}}, nil
}

// Watch adds s to the sockets Wait polls. Owner only, before the first Wait.
func (w *Waiter) Watch(s *Socket) {
	n := len(w.fds)
	w.fds = append(w.fds, w.fds[n-1])
	w.fds[n-1] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
}

// Prepare raises the asleep flag: from now on a Wake writes the eventfd.
// The owner looks for work once more after it, then calls Wait or Cancel.
func (w *Waiter) Prepare() { w.asleep.Store(true) }

// Cancel lowers the flag when the second look found work.
func (w *Waiter) Cancel() { w.asleep.Store(false) }

// Wait sleeps in poll(2) until a watched socket has frames to receive, a
// Wake, or timeout (rounded up to a millisecond; negative: no timeout),
// then lowers the flag and empties the eventfd. Owner only, after Prepare.
func (w *Waiter) Wait(timeout time.Duration) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	w.sleeps.Add(1)
	n, err := unix.Poll(w.fds, ms)
	w.asleep.Store(false)
	switch {
	case err != nil || n == 0:
		// EINTR (a signal, the Go runtime's preemption) counts as a
		// timeout: the caller looks at everything and sleeps again.
		w.byTimeout.Add(1)
	case w.fds[len(w.fds)-1].Revents&unix.POLLIN != 0:
		w.byWake.Add(1)
		unix.Read(w.efd, w.buf[:]) // resets the counter; EAGAIN when raced
	default:
		w.byRX.Add(1)
	}
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

// Asleep reports whether the owner is between Prepare and the end of its
// Wait (tests). Any goroutine.
func (w *Waiter) Asleep() bool { return w.asleep.Load() }

// Stats returns the counters of the Waiter. Any goroutine.
func (w *Waiter) Stats() WaitStats {
	return WaitStats{Sleeps: w.sleeps.Load(), Woken: w.byWake.Load(), RX: w.byRX.Load(), Timeout: w.byTimeout.Load()}
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
	err := unix.Close(w.efd)
	w.efd = -1
	return err
}
