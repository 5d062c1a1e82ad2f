package ring

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is one AF_XDP socket bound to (ifindex, queue) on a UMEM, with its
// own RX, TX, fill and completion rings. The first socket opened on a UMEM
// registers the area with the kernel (XDP_UMEM_REG); later ones bind with
// XDP_SHARED_UMEM, so a frame received on one socket can be put on another
// socket's TX ring without copying. A Socket belongs to the goroutine that
// owns its UMEM.
type Socket struct {
	umem    *UMEM
	fd      int
	ifindex int
	queue   int
	mode    Mode // obtained: ModeZeroCopy or ModeCopy
	wakeup  bool // XDP_USE_NEED_WAKEUP in force

	rx   RXRing
	tx   TXRing
	fill FillRing
	comp CompletionRing

	// acct holds this socket's places; the rings' accounting pointers
	// point here and at UMEM.app, so the Socket must not move (it is
	// always used through its pointer).
	acct struct{ fill, tx int64 }

	maps   [4][]byte // the mmap'd rings, for Close
	pfd    [1]unix.PollFd
	closed bool

	kicks, kickAgain, kickErrors, fillWakeups uint64
}

// ErrZeroCopy is wrapped when ModeZeroCopy was asked for and the driver
// refused it.
var ErrZeroCopy = errors.New("ring: zero-copy not supported on this device queue")

// Open creates an AF_XDP socket bound to queue of the interface with index
// ifindex, sharing the UMEM. With ModeAuto the first socket tries
// XDP_ZEROCOPY and falls back to XDP_COPY; later sockets inherit the mode of
// the first (the kernel does not let a shared-UMEM bind choose), and Mode
// reports what was obtained. The fill ring starts empty: call Refill.
func (u *UMEM) Open(ifindex, queue int) (*Socket, error) {
	if u.closed {
		return nil, ErrClosed
	}
	if u.fd >= 0 {
		s, err := u.open(ifindex, queue, unix.XDP_SHARED_UMEM)
		if err != nil {
			return nil, fmt.Errorf("ring: bind ifindex %d queue %d on shared UMEM: %w", ifindex, queue, err)
		}
		if u.cfg.Mode == ModeZeroCopy && s.mode != ModeZeroCopy {
			s.Close()
			return nil, fmt.Errorf("ring: ifindex %d queue %d: %w", ifindex, queue, ErrZeroCopy)
		}
		return s, nil
	}
	var wake uint16
	if !u.cfg.NoNeedWakeup {
		wake = unix.XDP_USE_NEED_WAKEUP
	}
	if u.cfg.MultiBuffer {
		// Only the first bind names it: a shared-UMEM bind takes no
		// flags and inherits multi-buffer from the UMEM.
		wake |= unix.XDP_USE_SG
	}
	var firstErr error
	if u.cfg.Mode != ModeCopy {
		s, err := u.open(ifindex, queue, unix.XDP_ZEROCOPY|wake)
		if err == nil {
			return s, nil
		}
		if u.cfg.Mode == ModeZeroCopy {
			return nil, fmt.Errorf("ring: ifindex %d queue %d: %w: %w", ifindex, queue, ErrZeroCopy, err)
		}
		firstErr = err
	}
	s, err := u.open(ifindex, queue, unix.XDP_COPY|wake)
	if err != nil {
		if firstErr != nil {
			return nil, fmt.Errorf("ring: bind ifindex %d queue %d: zerocopy: %v; copy: %w", ifindex, queue, firstErr, err)
		}
		return nil, fmt.Errorf("ring: bind ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return s, nil
}

// open makes one attempt with the given bind flags. On failure everything
// it made is undone, so the caller may retry with other flags.
func (u *UMEM) open(ifindex, queue int, flags uint16) (_ *Socket, err error) {
	s := &Socket{umem: u, fd: -1, ifindex: ifindex, queue: queue}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	if s.fd, err = xskSocket(); err != nil {
		return nil, err
	}
	shared := flags&unix.XDP_SHARED_UMEM != 0
	if !shared {
		if err = registerUMEM(s.fd, u.area, u.cfg.FrameSize, u.cfg.Headroom); err != nil {
			return nil, fmt.Errorf("XDP_UMEM_REG: %w", err)
		}
	}
	if err = s.mapRings(); err != nil {
		return nil, err
	}
	sharedFD := 0
	if shared {
		sharedFD = u.fd
	}
	// EBUSY: the queue still holds the buffer pool of a socket closed a
	// moment ago (the kernel releases it from a workqueue), e.g. when a
	// previous instance just exited. Retry for up to a second.
	for try := 0; ; try++ {
		err = bindXSK(s.fd, ifindex, queue, flags, sharedFD)
		if err != unix.EBUSY || try == bindRetries {
			break
		}
		time.Sleep(bindRetryWait)
	}
	if err != nil {
		return nil, fmt.Errorf("bind flags %#x: %w", flags, err)
	}
	opts, err := xdpOptions(s.fd)
	if err != nil {
		return nil, fmt.Errorf("XDP_OPTIONS: %w", err)
	}
	s.mode = ModeCopy
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = ModeZeroCopy
	}
	// A shared bind inherits need_wakeup from the first socket.
	s.wakeup = !u.cfg.NoNeedWakeup
	s.pfd[0] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
	if !shared {
		u.fd = s.fd
	}
	u.sockets = append(u.sockets, s)
	return s, nil
}

const (
	bindRetries   = 40
	bindRetryWait = 25 * time.Millisecond
)

// FD returns the socket's file descriptor (for the XSKMAP).
func (s *Socket) FD() int { return s.fd }

// Ifindex returns the interface index the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue returns the queue id the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// Mode returns the bind mode obtained: ModeZeroCopy or ModeCopy.
func (s *Socket) Mode() Mode { return s.mode }

// UMEM returns the UMEM the socket's frames live in.
func (s *Socket) UMEM() *UMEM { return s.umem }

// RX returns the socket's receive ring.
func (s *Socket) RX() *RXRing { return &s.rx }

// TX returns the socket's transmit ring.
func (s *Socket) TX() *TXRing { return &s.tx }

// Fill returns the socket's fill ring.
func (s *Socket) Fill() *FillRing { return &s.fill }

// Completion returns the socket's completion ring.
func (s *Socket) Completion() *CompletionRing { return &s.comp }

// Refill moves up to max frames from the UMEM's free stack to this socket's
// fill ring in one batch and returns how many it moved.
func (s *Socket) Refill(max uint32) uint32 {
	u := s.umem
	if n := uint32(len(u.free)); n < max {
		max = n
	}
	got, start := s.fill.Reserve(max)
	top := len(u.free)
	for i := uint32(0); i < got; i++ {
		s.fill.Set(start+i, u.free[top-1-int(i)])
	}
	u.free = u.free[:top-int(got)]
	u.app += int64(got) // free -> app; Submit moves app -> fill
	s.fill.Submit(got)
	return got
}

// Complete reaps up to max entries from the completion ring onto the UMEM's
// free stack in one batch and returns how many it reaped.
func (s *Socket) Complete(max uint32) uint32 {
	u := s.umem
	n, start := s.comp.Peek(max)
	if room := uint32(cap(u.free) - len(u.free)); n > room {
		n = room // cannot happen with correct accounting; Check reports it
	}
	for i := uint32(0); i < n; i++ {
		u.free = append(u.free, s.comp.Addr(start+i)&^u.frameMask)
	}
	s.comp.Release(n) // tx -> app
	u.app -= int64(n) // app -> free
	return n
}

// KickTX tells the kernel to process the TX ring, with a non-blocking
// sendto, when it asked for it (XDP_RING_NEED_WAKEUP on the TX ring) or
// always when need_wakeup is off. In copy mode one sendto sends at most a
// budget of frames (32 by default) and answers EAGAIN when more are left,
// and EBUSY/ENOBUFS when the device queue is full: those are counted as
// KickAgain, the rest as KickErrors, and nothing is returned, because the
// remedy is always the same: kick again later (see TXPending).
func (s *Socket) KickTX() {
	if s.wakeup && !s.tx.NeedWakeup() {
		return
	}
	s.kicks++
	switch err := kick(s.fd); err {
	case nil:
	case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
		s.kickAgain++
	default:
		s.kickErrors++
	}
}

// TXPending reports whether descriptors submitted on the TX ring have not
// been taken by the kernel yet (one atomic load). In copy mode they leave
// only during a sendto, so a worker must KickTX while this is true, even
// when it has nothing new to send, or frames stay stuck in the ring.
func (s *Socket) TXPending() bool {
	return s.tx.cachedProd != s.tx.loadConsumer()
}

// WakeFill wakes the driver with a non-blocking recvfrom when the fill ring
// says it needs it (zero-copy drivers that ran out of fill entries).
func (s *Socket) WakeFill() {
	if !s.wakeup || !s.fill.NeedWakeup() {
		return
	}
	s.fillWakeups++
	wakeRX(s.fd)
}

// Poll waits up to timeoutMs milliseconds (-1: forever) for the RX ring to
// become non-empty and reports whether it did. It also serves as the fill
// ring wakeup.
func (s *Socket) Poll(timeoutMs int) (bool, error) {
	return pollIn(s.pfd[:], timeoutMs)
}

// Stats are the kernel's XDP_STATISTICS for one socket plus our counters.
type Stats struct {
	// From the kernel.
	RxDropped            uint64 // dropped for other reasons than ring full
	RxInvalidDescs       uint64 // invalid fill descriptors
	TxInvalidDescs       uint64 // invalid TX descriptors (frames lost!)
	RxRingFull           uint64 // dropped because the RX ring was full
	RxFillRingEmptyDescs uint64 // the fill ring was empty when a frame came
	TxRingEmptyDescs     uint64 // the kernel found the TX ring empty
	// Ours.
	// Frames through the RX and TX rings. A frame of several buffers
	// (Config.MultiBuffer) counts once there and once per buffer in
	// RXBuffers, TXBuffers, Filled and Completed (the fill and
	// completion rings carry buffers, not frames).
	RX, TX, Filled, Completed uint64
	RXBuffers, TXBuffers      uint64
	Kicks                     uint64 // TX sendto calls
	KickAgain                 uint64 // of which EAGAIN/EBUSY/ENOBUFS: more left to send
	KickErrors                uint64 // of which other errors
	FillWakeups               uint64 // fill-ring recvfrom wakeups
}

// Stats reads XDP_STATISTICS and adds our counters.
func (s *Socket) Stats() (Stats, error) {
	if s.closed {
		return Stats{}, ErrClosed
	}
	k, err := statistics(s.fd)
	if err != nil {
		return Stats{}, fmt.Errorf("ring: XDP_STATISTICS: %w", err)
	}
	return Stats{
		RxDropped:            k.Rx_dropped,
		RxInvalidDescs:       k.Rx_invalid_descs,
		TxInvalidDescs:       k.Tx_invalid_descs,
		RxRingFull:           k.Rx_ring_full,
		RxFillRingEmptyDescs: k.Rx_fill_ring_empty_descs,
		TxRingEmptyDescs:     k.Tx_ring_empty_descs,
		RX:                   s.rx.frames,
		RXBuffers:            s.rx.moved,
		TX:                   s.tx.frames,
		TXBuffers:            s.tx.moved,
		Filled:               s.fill.moved,
		Completed:            s.comp.moved,
		Kicks:                s.kicks,
		KickAgain:            s.kickAgain,
		KickErrors:           s.kickErrors,
		FillWakeups:          s.fillWakeups,
	}, nil
}

// checkRings verifies that no ring holds more than its place accounts for.
// Each bound holds at any instant, whatever the kernel does concurrently.
func (s *Socket) checkRings() error {
	if s.closed {
		return nil
	}
	for _, c := range []struct {
		name  string
		occ   uint32
		place int64
	}{
		{"fill", s.fill.occupancy(), s.acct.fill},
		{"rx", s.rx.occupancy(), s.acct.fill},
		{"tx", s.tx.occupancy(), s.acct.tx},
		{"completion", s.comp.occupancy(), s.acct.tx},
	} {
		if int64(c.occ) > c.place {
			return fmt.Errorf("ring: ifindex %d queue %d: %s ring holds %d entries, accounting says %d",
				s.ifindex, s.queue, c.name, c.occ, c.place)
		}
	}
	return nil
}

// Close closes the socket and unmaps its rings. Frames in its fill and TX
// places stay counted there (the kernel dropped them with the socket), so
// check the accounting before closing. Close the UMEM after all its sockets.
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	u := s.umem
	err := s.release()
	s.closed = true
	allClosed := true
	for _, o := range u.sockets {
		allClosed = allClosed && o.closed
	}
	if allClosed {
		u.fd = -1
	}
	return err
}

// release unmaps and closes whatever open made.
func (s *Socket) release() error {
	var err error
	for i, m := range s.maps {
		if m != nil {
			err = errors.Join(err, munmap(m))
			s.maps[i] = nil
		}
	}
	if s.fd >= 0 {
		err = errors.Join(err, closeFD(s.fd))
		s.fd = -1
	}
	return err
}

// BusyPoll is the kernel's busy polling for one socket (socket(7)):
// SO_BUSY_POLL, SO_PREFER_BUSY_POLL and SO_BUSY_POLL_BUDGET. With
// Prefer and the device's napi_defer_hard_irqs and gro_flush_timeout set,
// the device's interrupts stay off while the application keeps calling
// into the socket (PollRX), which then runs the driver's NAPI poll itself
// on the worker's CPU: no interrupt, no softirq on another CPU.
type BusyPoll struct {
	Usecs  int  // SO_BUSY_POLL: how long a receive call may busy poll (0: off)
	Budget int  // SO_BUSY_POLL_BUDGET: frames per NAPI poll (0: the kernel's 8)
	Prefer bool // SO_PREFER_BUSY_POLL
}

// SetBusyPoll sets bp's options on the socket. A kernel without one
// (ENOPROTOOPT, before 5.11 for Prefer and Budget) or without
// CAP_NET_ADMIN (EPERM) refuses it; the error names the option.
func (s *Socket) SetBusyPoll(bp BusyPoll) error {
	set := func(name string, opt, v int) error {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, opt, v); err != nil {
			return fmt.Errorf("ring: setsockopt %s %d: %w", name, v, err)
		}
		return nil
	}
	if bp.Prefer {
		if err := set("SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1); err != nil {
			return err
		}
	}
	if bp.Usecs > 0 {
		if err := set("SO_BUSY_POLL", unix.SO_BUSY_POLL, bp.Usecs); err != nil {
			return err
		}
	}
	if bp.Budget > 0 {
		if err := set("SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, bp.Budget); err != nil {
			return err
		}
	}
	return nil
}

// GetBusyPoll reads the socket's busy-poll options back (tests, logs).
// Budget stays 0: the kernel has no getsockopt for SO_BUSY_POLL_BUDGET.
func (s *Socket) GetBusyPoll() (BusyPoll, error) {
	var bp BusyPoll
	var err error
	if bp.Usecs, err = unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_BUSY_POLL); err != nil {
		return bp, err
	}
	prefer, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_PREFER_BUSY_POLL)
	bp.Prefer = prefer != 0
	return bp, err
}

// PollRX is a non-blocking recvfrom on the socket, whatever the ring
// flags say: with busy polling set (SetBusyPoll) it is what runs the
// device's NAPI poll (the kernel's xsk_recvmsg busy polls before it
// looks at need_wakeup), so a worker calls it while it spins on an empty
// RX ring.
func (s *Socket) PollRX() { wakeRX(s.fd) }
