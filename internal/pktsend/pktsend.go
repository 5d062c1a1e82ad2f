// Package pktsend is a frame sender for tests and the perf harness: an
// AF_PACKET socket with a TX ring (PACKET_TX_RING, TPACKET_V2) bound to one
// interface, the qdisc bypassed (PACKET_QDISC_BYPASS). Frames are written
// into the ring's slots and one send() hands every queued slot to the
// kernel: one system call for a burst, no copy from a user buffer (the
// kernel attaches the ring's pages to the skbs).
//
// It imports nothing of statewire (the bridge's own tests use it).
//
// Ownership: a Ring belongs to one goroutine; Close once.
package pktsend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// HdrLen is the room before the frame in a slot:
// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
const HdrLen = 32

// tpacket2_hdr status values.
const (
	statusAvailable   = 0 // TP_STATUS_AVAILABLE: the slot is ours
	statusWrongFormat = 4 // TP_STATUS_WRONG_FORMAT: the kernel refused the frame
)

// blockMin is the smallest ring block: a page.
const blockMin = 4096

// Ring is the TX ring of one AF_PACKET socket.
type Ring struct {
	fd             int
	ring           []byte
	slotSize, next int
	slots          int
}

// Open makes a TX ring of slots slots of slotSize bytes (the frame after
// HdrLen bytes of header) on the interface ifname of the calling thread's
// network namespace. slotSize is a multiple of 16, and either divides a
// page or is a multiple of it.
func Open(ifname string, slotSize, slots int) (*Ring, error) {
	block := max(slotSize, blockMin)
	if slotSize <= HdrLen || slotSize%16 != 0 || block%slotSize != 0 || slots <= 0 || slots*slotSize%block != 0 {
		return nil, fmt.Errorf("pktsend: %d slots of %d bytes: a slot is a multiple of 16 above %d that divides a page or is a multiple of it, and the slots fill whole blocks of %d", slots, slotSize, HdrLen, block)
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("pktsend: %w", err)
	}
	r := &Ring{fd: -1, slotSize: slotSize, slots: slots}
	if err := r.open(ifc.Index, block); err != nil {
		r.Close()
		return nil, fmt.Errorf("pktsend: TX ring on %s: %w", ifname, err)
	}
	return r, nil
}

func (r *Ring) open(ifindex, block int) (err error) {
	if r.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fmt.Errorf("PACKET_VERSION: %w", err)
	}
	req := unix.TpacketReq{Block_size: uint32(block), Block_nr: uint32(r.slots * r.slotSize / block),
		Frame_size: uint32(r.slotSize), Frame_nr: uint32(r.slots)}
	if err := unix.SetsockoptTpacketReq(r.fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fmt.Errorf("PACKET_TX_RING: %w", err)
	}
	if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
	}
	if err := unix.Bind(r.fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	r.ring, err = unix.Mmap(r.fd, 0, r.slots*r.slotSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	return err
}

// Close unmaps the ring and closes the socket; frames still queued are
// not sent.
func (r *Ring) Close() error {
	var errs []error
	if r.ring != nil {
		errs = append(errs, unix.Munmap(r.ring))
		r.ring = nil
	}
	if r.fd >= 0 {
		errs = append(errs, unix.Close(r.fd))
		r.fd = -1
	}
	return errors.Join(errs...)
}

// Slots is the number of slots; MaxFrame the longest frame a slot holds.
func (r *Ring) Slots() int    { return r.slots }
func (r *Ring) MaxFrame() int { return r.slotSize - HdrLen }

func (r *Ring) hdr(i int) []byte { return r.ring[i*r.slotSize : i*r.slotSize+HdrLen] }

// Next returns the next slot's index and its frame area (MaxFrame bytes),
// or ok false while the kernel still holds that slot (its frame's skb is
// not freed yet): the caller then flushes and tries again later. The area
// keeps what was written into it before, so a caller that sends the same
// frames again and again can write a slot once.
func (r *Ring) Next() (slot int, frame []byte, ok bool) {
	if binary.NativeEndian.Uint32(r.hdr(r.next)) != statusAvailable {
		return r.next, nil, false
	}
	off := r.next*r.slotSize + HdrLen
	return r.next, r.ring[off : off+r.slotSize-HdrLen], true
}

// Queue marks the slot Next returned as holding a frame of n bytes to send
// and moves on to the next slot.
func (r *Ring) Queue(n int) {
	h := r.hdr(r.next)
	binary.NativeEndian.PutUint32(h[4:], uint32(n)) // tp_len
	binary.NativeEndian.PutUint32(h[0:], unix.TP_STATUS_SEND_REQUEST)
	r.next = (r.next + 1) % r.slots
}

// Flush asks the kernel to send every queued slot: send() with no buffer,
// MSG_DONTWAIT unless wait. It returns the errno (nil when all went): with
// ENOBUFS (a frame dropped at a full queue) or EAGAIN the frames not sent
// stay queued for the next Flush.
func (r *Ring) Flush(wait bool) error {
	flags := uintptr(unix.MSG_DONTWAIT)
	if wait {
		flags = 0
	}
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(r.fd), 0, 0, flags, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Pending returns how many slots the kernel has not handed back yet and
// how many frames it refused (TP_STATUS_WRONG_FORMAT: too long, too short
// for the link), whose slots it makes available again.
func (r *Ring) Pending() (pending, refused int) {
	for i := range r.slots {
		switch binary.NativeEndian.Uint32(r.hdr(i)) {
		case statusAvailable:
		case statusWrongFormat:
			refused++
			binary.NativeEndian.PutUint32(r.hdr(i), statusAvailable)
		default:
			pending++
		}
	}
	return pending, refused
}
