package perf

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/statewire/statewire/internal/pktsend"
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

// Geometry of the packet generator's TX ring (internal/pktsend): 1024
// slots of 16 KiB, one slot per block.
const (
	pktSlot    = 16384
	pktSlots   = 1024
	pktMaxData = pktSlot - pktsend.HdrLen
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
	ring *pktsend.Ring
	// written marks slots that already hold the template.
	written [pktSlots]bool
	c       uint64 // frame counter, the flow is c mod flows
}

func newPacketTX(ns, ifname string, frameLen int) (*packetTX, error) {
	if frameLen > pktMaxData {
		return nil, fmt.Errorf("perf: frame of %d bytes exceeds the packet generator's %d-byte slots", frameLen, pktMaxData)
	}
	p := &packetTX{}
	err := lab.Do(ns, func() (err error) {
		p.ring, err = pktsend.Open(ifname, pktSlot, pktSlots)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("perf: packet generator on %s: %w", ifname, err)
	}
	return p, nil
}

func (p *packetTX) close() error { return p.ring.Close() }

// fill queues up to n frames of the template with the next flows' ports
// and returns how many it queued (fewer when the kernel still holds the
// slots).
func (p *packetTX) fill(g *Generator, lay layout, n uint64) uint64 {
	var k uint64
	flows := uint64(max(g.cfg.Flows, 1))
	for ; k < n; k++ {
		slot, buf, ok := p.ring.Next()
		if !ok {
			break
		}
		f := buf[:len(g.frame)]
		if !p.written[slot] {
			copy(f, g.frame)
			p.written[slot] = true
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
		p.ring.Queue(len(g.frame))
	}
	return k
}

// flush asks the kernel to send the queued frames. ENOBUFS (a frame
// dropped at the veth) and EAGAIN leave the rest queued for the next call.
func (p *packetTX) flush() error {
	switch err := p.ring.Flush(false); err {
	case nil, unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
		return nil
	default:
		return fmt.Errorf("perf: packet generator send: %w", err)
	}
}

// drain flushes until the kernel has taken every queued frame (or timeout)
// and returns how many it refused (TP_STATUS_WRONG_FORMAT), resetting them.
func (p *packetTX) drain(timeout time.Duration) (refused uint64, err error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := p.flush(); err != nil {
			return 0, err
		}
		pending, bad := p.ring.Pending()
		refused += uint64(bad)
		if pending == 0 {
			return refused, nil
		}
		if time.Now().After(deadline) {
			return refused, fmt.Errorf("perf: packet generator: %d frames still queued after %v", pending, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
