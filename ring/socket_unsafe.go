package ring

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

func xskSocket() (int, error) {
	return unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
}

// mapRings sizes the four rings with setsockopt, reads their layout with
// XDP_MMAP_OFFSETS and maps them. It must run before bind: the kernel only
// lets an unbound socket map its fill and completion rings.
func (s *Socket) mapRings() error {
	u := s.umem
	c := u.cfg
	for _, r := range []struct {
		opt int
		n   int
	}{
		{unix.XDP_UMEM_FILL_RING, c.FillSize},
		{unix.XDP_UMEM_COMPLETION_RING, c.CompletionSize},
		{unix.XDP_RX_RING, c.RXSize},
		{unix.XDP_TX_RING, c.TXSize},
	} {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, r.opt, r.n); err != nil {
			return fmt.Errorf("setsockopt ring %d size %d: %w", r.opt, r.n, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(s.fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("XDP_MMAP_OFFSETS: %w", err)
	}
	const descSize = int(unsafe.Sizeof(Desc{}))
	var err error
	var p, q, f *uint32
	var m []byte

	if m, p, q, f, err = mapRing(s.fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, c.FillSize, 8); err != nil {
		return fmt.Errorf("mmap fill ring: %w", err)
	}
	s.maps[0] = m
	s.fill = FillRing{idx: newIdx(p, q, f, uint32(c.FillSize), &u.app, &s.acct.fill),
		addrs: unsafe.Slice((*uint64)(unsafe.Pointer(&m[off.Fr.Desc])), c.FillSize)}

	if m, p, q, f, err = mapRing(s.fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, c.CompletionSize, 8); err != nil {
		return fmt.Errorf("mmap completion ring: %w", err)
	}
	s.maps[1] = m
	s.comp = CompletionRing{idx: newIdx(p, q, f, uint32(c.CompletionSize), &s.acct.tx, &u.app),
		addrs: unsafe.Slice((*uint64)(unsafe.Pointer(&m[off.Cr.Desc])), c.CompletionSize)}

	if m, p, q, f, err = mapRing(s.fd, unix.XDP_PGOFF_RX_RING, off.Rx, c.RXSize, descSize); err != nil {
		return fmt.Errorf("mmap rx ring: %w", err)
	}
	s.maps[2] = m
	s.rx = RXRing{idx: newIdx(p, q, f, uint32(c.RXSize), &s.acct.fill, &u.app),
		descs: unsafe.Slice((*Desc)(unsafe.Pointer(&m[off.Rx.Desc])), c.RXSize)}

	if m, p, q, f, err = mapRing(s.fd, unix.XDP_PGOFF_TX_RING, off.Tx, c.TXSize, descSize); err != nil {
		return fmt.Errorf("mmap tx ring: %w", err)
	}
	s.maps[3] = m
	s.tx = TXRing{idx: newIdx(p, q, f, uint32(c.TXSize), &u.app, &s.acct.tx),
		descs: unsafe.Slice((*Desc)(unsafe.Pointer(&m[off.Tx.Desc])), c.TXSize)}
	return nil
}

// mapRing maps one ring and returns pointers to its producer, consumer and
// flags words at the offsets the kernel gave.
func mapRing(fd int, pgoff int64, off unix.XDPRingOffset, n, elem int) (m []byte, prod, cons, flags *uint32, err error) {
	size := int(off.Desc) + n*elem
	m, err = unix.Mmap(fd, pgoff, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	prod = (*uint32)(unsafe.Pointer(&m[off.Producer]))
	cons = (*uint32)(unsafe.Pointer(&m[off.Consumer]))
	flags = (*uint32)(unsafe.Pointer(&m[off.Flags]))
	return m, prod, cons, flags, nil
}

func bindXSK(fd, ifindex, queue int, flags uint16, sharedFD int) error {
	sa := &unix.SockaddrXDP{
		Flags:        flags,
		Ifindex:      uint32(ifindex),
		QueueID:      uint32(queue),
		SharedUmemFD: uint32(sharedFD),
	}
	return unix.Bind(fd, sa)
}

// xdpOptions reads struct xdp_options (XDP_OPTIONS_ZEROCOPY).
func xdpOptions(fd int) (uint32, error) {
	var flags uint32
	err := getsockopt(fd, unix.XDP_OPTIONS, unsafe.Pointer(&flags), unsafe.Sizeof(flags))
	return flags, err
}

func statistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	err := getsockopt(fd, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	return st, err
}

// kick is sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0): it makes the kernel
// process the TX ring. Raw syscall: no allocation.
func kick(fd int) error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// wakeRX is recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL): it makes the
// driver pick up fill ring entries. EAGAIN is the normal answer.
func wakeRX(fd int) {
	unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
}

func pollIn(fds []unix.PollFd, timeoutMs int) (bool, error) {
	for {
		n, err := unix.Poll(fds, timeoutMs)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		return n > 0 && fds[0].Revents&unix.POLLIN != 0, nil
	}
}
