package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// LiveMaxFrame is the largest frame (FCS included) BPF_PROG_RUN sends in
// live-frames mode: net/bpf/test_run.c refuses live mode when the data does
// not fit one page after the headroom (XDP_PACKET_HEADROOM and struct
// xdp_page_head) and struct skb_shared_info ("disallow live data mode for
// jumbo frames"; EINVAL), and it builds no fragments in that mode, only for
// runs without BPF_F_TEST_XDP_LIVE_FRAMES. Measured on 6.18 with 4 KiB
// pages: 3408 bytes of data, i.e. a 3412-byte frame.
const LiveMaxFrame = 3412

// Generator kinds (Options.Generator).
const (
	// GenLive is BPF_PROG_RUN in XDP live-frames mode, frames up to
	// LiveMaxFrame.
	GenLive = "live"
	// GenPacket is an AF_PACKET socket with a TX ring (TPACKET_V2,
	// PACKET_QDISC_BYPASS): any frame the link's MTU allows.
	GenPacket = "packet"
)

// Geometry of the packet generator's TX ring: 1024 slots of 16 KiB (a
// 32-byte tpacket2_hdr, then the frame), one slot per block.
const (
	pktSlot    = 16384
	pktSlots   = 1024
	pktHdrLen  = 32 // TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): the frame starts here
	pktMaxData = pktSlot - pktHdrLen
	// tpacket2_hdr status values.
	tpStatusAvailable   = 0
	tpStatusWrongFormat = 4
)

// packetTX is the packet generator (GenPacket): frames written once into a
// TX ring and sent again and again, only the ports (and an L4 checksum, a
// timestamp) rewritten per frame, as the live-frames program does. The
// kernel attaches the ring's pages to the skb (tpacket_fill_skb), but on
// veth they are copied anyway when the skb is forwarded to the peer
// (skb_copy_ubufs, measured 12-15% of the generator CPU at 9018 B), and
// port A's veth copies the skb again into its page pool to run XDP on it
// (a chain of pages for a jumbo frame), on the generator CPU as with live
// frames: the cost per frame grows with the size. Frames dropped at a full veth ring count as sent (lost
// at the device's queue), as with live frames.
type packetTX struct {
	fd   int
	ring []byte
	slot int
	// written marks slots that already hold the template.
	written [pktSlots]bool
	c       uint64 // frame counter, the flow is c mod flows
}

func newPacketTX(ns, ifname string, frameLen int) (*packetTX, error) {
	if frameLen > pktMaxData {
		return nil, fmt.Errorf("perf: frame of %d bytes exceeds the packet generator's %d-byte slots", frameLen, pktMaxData)
	}
	p := &packetTX{fd: -1}
	err := lab.Do(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if p.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(p.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
			return fmt.Errorf("PACKET_VERSION: %w", err)
		}
		req := unix.TpacketReq{Block_size: pktSlot, Block_nr: pktSlots, Frame_size: pktSlot, Frame_nr: pktSlots}
		if err := unix.SetsockoptTpacketReq(p.fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
			return fmt.Errorf("PACKET_TX_RING: %w", err)
		}
		if err := unix.SetsockoptInt(p.fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
		if err := unix.Bind(p.fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		p.ring, err = unix.Mmap(p.fd, 0, pktSlots*pktSlot, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		return err
	})
	if err != nil {
		p.close()
		return nil, fmt.Errorf("perf: packet generator on %s: %w", ifname, err)
	}
	return p, nil
}

func (p *packetTX) close() error {
	var errs []error
	if p.ring != nil {
		errs = append(errs, unix.Munmap(p.ring))
		p.ring = nil
	}
	if p.fd >= 0 {
		errs = append(errs, unix.Close(p.fd))
		p.fd = -1
	}
	return errors.Join(errs...)
}

func (p *packetTX) hdr(i int) []byte { return p.ring[i*pktSlot : i*pktSlot+pktHdrLen] }

// fill queues up to n frames of the template with the next flows' ports
// and returns how many it queued (fewer when the kernel still holds the
// slots).
func (p *packetTX) fill(g *Generator, lay layout, n uint64) uint64 {
	var k uint64
	flows := uint64(max(g.cfg.Flows, 1))
	for ; k < n; k++ {
		h := p.hdr(p.slot)
		if binary.NativeEndian.Uint32(h[0:]) != tpStatusAvailable {
			break
		}
		f := p.ring[p.slot*pktSlot+pktHdrLen : p.slot*pktSlot+pktHdrLen+len(g.frame)]
		if !p.written[p.slot] {
			copy(f, g.frame)
			p.written[p.slot] = true
		}
		i := p.c % flows
		p.c++
		sp := uint16(0x8000 | i&0x7fff)
		dp := uint16(0x4000 + i>>15)
		binary.BigEndian.PutUint16(f[lay.sport:], sp)
		binary.BigEndian.PutUint16(f[lay.dport:], dp)
		if lay.csum > 0 {
			// As genProgram: ~(~base + sport + dport) in the 16-bit
			// memory view, from the template's value.
			s := uint32(^lay.csumBase) + uint32(binary.LittleEndian.Uint16(f[lay.sport:])) + uint32(binary.LittleEndian.Uint16(f[lay.dport:]))
			s = s>>16 + s&0xffff
			s = s>>16 + s&0xffff
			binary.LittleEndian.PutUint16(f[lay.csum:], ^uint16(s))
		}
		if g.cfg.Stamp && lay.stamp > 0 {
			var ts unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // bpf_ktime_get_ns's clock
			binary.LittleEndian.PutUint64(f[lay.stamp:], uint64(ts.Nano()))
		}
		binary.NativeEndian.PutUint32(h[4:], uint32(len(g.frame)))
		binary.NativeEndian.PutUint32(h[0:], unix.TP_STATUS_SEND_REQUEST)
		p.slot = (p.slot + 1) % pktSlots
	}
	return k
}

// flush asks the kernel to send the queued frames. ENOBUFS (a frame
// dropped at the veth) and EAGAIN leave the rest queued for the next call.
func (p *packetTX) flush() error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(p.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
		return nil
	}
	return fmt.Errorf("perf: packet generator send: %w", e)
}

// drain flushes until the kernel has taken every queued frame (or timeout)
// and returns how many it refused (TP_STATUS_WRONG_FORMAT), resetting them.
func (p *packetTX) drain(timeout time.Duration) (refused uint64, err error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := p.flush(); err != nil {
			return 0, err
		}
		pending := 0
		for i := range pktSlots {
			switch binary.NativeEndian.Uint32(p.hdr(i)[0:]) {
			case tpStatusAvailable:
			case tpStatusWrongFormat:
				refused++
				binary.NativeEndian.PutUint32(p.hdr(i)[0:], tpStatusAvailable)
			default:
				pending++
			}
		}
		if pending == 0 {
			return refused, nil
		}
		if time.Now().After(deadline) {
			return refused, fmt.Errorf("perf: packet generator: %d frames still queued after %v", pending, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
