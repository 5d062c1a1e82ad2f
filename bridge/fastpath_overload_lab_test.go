package bridge

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/internal/pktsend"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	pt "github.com/statewire/statewire/packet/packettest"
)

// The overload lab: many UDP flows flood port A faster than the slow path
// (one worker, under -race) can judge their frames, so a pending offer's
// count runs ahead of the worker for good and the flow is activated by
// force (fastpath.go pendingForce, offload/doc.go "Under overload").
// Every frame carries its flow's number and a per-flow sequence number; a
// receiver on the right host checks that no flow's frames arrive out of
// order.

const (
	overloadFlows    = 64
	overloadDuration = 3 * time.Second
	// Payload offsets after Ethernet (14), IPv4 (20) and UDP (8).
	overloadFlowOff = 42
	overloadSeqOff  = 46
)

// overloadFrames builds one 60-byte frame per flow (left host, source
// ports 20000+i, to the right host's port 9) with the flow's number in
// the payload. The destination MAC is not the right host's: its stack
// ignores the frames (no ICMP back through the bridge), its packet socket
// sees them. The UDP checksum is 0 (none), so the sequence numbers can be
// written in place.
func overloadFrames(l *lab.Lab) [][]byte {
	other := net.HardwareAddr{0x02, 0x5e, 0, 0, 0, 0x99}
	frames := make([][]byte, overloadFlows)
	for i := range frames {
		f := pt.UDP4("198.18.0.1", "198.18.0.2", uint16(20000+i), 9, make([]byte, 18))
		copy(f[0:6], other)
		copy(f[6:12], l.LeftMAC)
		binary.BigEndian.PutUint16(f[40:], 0)
		binary.BigEndian.PutUint32(f[overloadFlowOff:], uint32(i))
		frames[i] = f
	}
	return frames
}

// TX ring of the flood socket (internal/pktsend), as e2e/flood_test.go:
// 128-byte slots, the frame after a 32-byte header.
const (
	ovTxSlot  = 128
	ovTxSlots = 8192
	ovBurst   = 256
)

// overloadFlood sends frames round-robin from the left host for d, each
// with its flow's next sequence number (from 1), through an AF_PACKET TX
// ring (qdisc bypassed), and returns how many it queued per flow.
func overloadFlood(t *testing.T, l *lab.Lab, frames [][]byte, d time.Duration) []uint64 {
	t.Helper()
	var r *pktsend.Ring
	err := l.Do(l.LeftNS, func() (err error) {
		r, err = pktsend.Open(l.LeftIf, ovTxSlot, ovTxSlots)
		return err
	})
	if err != nil {
		t.Fatalf("flood socket: %v", err)
	}
	defer r.Close()
	seq := make([]uint64, len(frames))
	k := 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		n := 0
		for ; n < ovBurst; n++ {
			_, buf, ok := r.Next()
			if !ok {
				break
			}
			f := buf[:len(frames[k])]
			copy(f, frames[k])
			seq[k]++
			binary.BigEndian.PutUint64(f[overloadSeqOff:], seq[k])
			r.Queue(len(f))
			k = (k + 1) % len(frames)
		}
		// A frame the send fails on stays marked: the next send retries
		// it, so every numbered frame leaves, in order.
		r.Flush(true)
		if n == 0 {
			time.Sleep(10 * time.Microsecond)
		}
	}
	// Wait until the ring has sent everything it holds.
	testenv.WaitFor(2*time.Second, func() bool {
		r.Flush(true)
		pending, _ := r.Pending()
		return pending == 0
	})
	return seq
}

// flowOrder is what the receiver saw of each flow.
type flowOrder struct {
	got, ooo, dups []uint64
	last           []uint64
	frames         atomic.Uint64
}

// overloadReceiver reads every frame of the flood on the right host's
// veth (a packet socket; frames it has no room for are dropped by the
// kernel, which loses frames but reorders none) until stop is closed.
func overloadReceiver(t *testing.T, l *lab.Lab, stop <-chan struct{}, wg *sync.WaitGroup) *flowOrder {
	t.Helper()
	var fd int
	err := l.Do(l.RightNS, func() error {
		i, err := net.InterfaceByName(l.RightIf)
		if err != nil {
			return err
		}
		proto := int(uint16(unix.ETH_P_IP>>8 | unix.ETH_P_IP<<8&0xff00))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: i.Index})
	})
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		t.Fatalf("receiver socket: %v", err)
	}
	o := &flowOrder{
		got: make([]uint64, overloadFlows), ooo: make([]uint64, overloadFlows),
		dups: make([]uint64, overloadFlows), last: make([]uint64, overloadFlows),
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unix.Close(fd)
		buf := make([]byte, 2048)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < overloadSeqOff+8 {
				continue
			}
			f := buf[:n]
			if binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[23] != 17 || binary.BigEndian.Uint16(f[36:]) != 9 {
				continue
			}
			i := binary.BigEndian.Uint32(f[overloadFlowOff:])
			if i >= overloadFlows || binary.BigEndian.Uint16(f[34:]) != uint16(20000+i) {
				continue
			}
			s := binary.BigEndian.Uint64(f[overloadSeqOff:])
			o.frames.Add(1)
			o.got[i]++
			switch {
			case s == o.last[i]:
				o.dups[i]++
			case s < o.last[i]:
				o.ooo[i]++
			default:
				o.last[i] = s
			}
		}
	}()
	return o
}

// TestFastPathOverload: 64 UDP flows flood port A for 3 s, far beyond
// what the one worker judges under -race. Each flow goes into the fast
// path and stays there (offered and activated, forced where the worker
// stayed behind, never taken back by a stale frame), the fast path
// forwards most of the frames, no flow's frames arrive out of order at
// the right host, and every frame is accounted for (conservation, the
// handover drops among the counted drops). Before the hand-over, a forced
// activation's queued frames took the flow back and arrived after frames
// the program had forwarded, and the flow went round again.
func TestFastPathOverload(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	hostGRO(t, l, "on")
	dp := startOffloadDatapath(t, l, OffloadAuto)
	if on, why := dp.Offload(); !on {
		t.Fatalf("fast path off: %s", why)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	rx := overloadReceiver(t, l, stop, &wg)
	frames := overloadFrames(l)
	start := time.Now()
	sent := overloadFlood(t, l, frames, overloadDuration)
	took := time.Since(start)
	// The last frames: the receiver's count stops moving.
	prev := uint64(1<<64 - 1)
	testenv.WaitFor(3*time.Second, func() bool {
		n := rx.frames.Load()
		if n == prev {
			return true
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
		return false
	})
	close(stop)
	wg.Wait()
	live := dp.Stats().Pipeline.Fast
	st := stopLabDatapath(t, l, dp)
	f := st.Pipeline.Fast
	a := st.Total(PortA)
	fast := st.Fast.Packets(PortA)
	var total, got, ooo, dups uint64
	for i := range overloadFlows {
		total += sent[i]
		got += rx.got[i]
		ooo += rx.ooo[i]
		dups += rx.dups[i]
	}
	share := float64(fast) / float64(max(fast+a.RX, 1))
	t.Logf("sent %d frames in %v (%.0f/s) over %d flows; right host got %d; fast path %d (%.1f%% of those bridged), slow path took %d (forwarded %d, dropped %d: %s), kernel dropped %d before the RX ring",
		total, took.Round(time.Millisecond), float64(total)/took.Seconds(), overloadFlows, got, fast, 100*share, a.RX, a.Forwarded, a.Dropped(), a.DropList(), st.KernelDrops(PortA))
	t.Logf("offered %d, activated %d (forced %d), cancelled %d, handover drops %d, taken back %v %v, pre-offer %d, marked %d; in the fast path before stop %d; punts A %v",
		f.Offered, f.Activated, f.Forced, f.Cancelled, f.Handover, TakeBackNames, f.TakenBack, f.PreOffer, f.Marked, live.InFastPath(), st.Fast.Ports[PortA].Punts)
	for i := range overloadFlows {
		if rx.got[i] == 0 {
			t.Errorf("flow %d: nothing arrived (%d sent)", i, sent[i])
		}
	}
	if ooo != 0 || dups != 0 {
		t.Errorf("%d frames arrived out of order within their flow, %d twice (of %d)", ooo, dups, got)
	}
	if live.InFastPath() != overloadFlows || f.TakenBack[TakeBackSlowPath] != 0 {
		t.Errorf("%d flows in the fast path at the end, %d taken back by the slow path: want all %d in, none taken back",
			live.InFastPath(), f.TakenBack[TakeBackSlowPath], overloadFlows)
	}
	if f.Activated < overloadFlows {
		t.Errorf("%d activations for %d flows", f.Activated, overloadFlows)
	}
	if f.Handover != a.Drops[DropHandover] || (f.Handover != 0 && f.Forced == 0) {
		t.Errorf("handover drops %d, counted among the drops %d, forced activations %d", f.Handover, a.Drops[DropHandover], f.Forced)
	}
	// The kernel dropped frames at the full RX ring: the worker was
	// behind, so offers must have been activated by force.
	if st.KernelDrops(PortA) != 0 && f.Forced == 0 {
		t.Errorf("the slow path was overloaded (%d kernel drops) and no activation was forced", st.KernelDrops(PortA))
	}
	if share < 0.5 {
		t.Errorf("the fast path forwarded %.1f%% of the frames bridged, want most", 100*share)
	}
	if st.Pipeline.Invalid != 0 {
		t.Errorf("%d INVALID", st.Pipeline.Invalid)
	}
}
