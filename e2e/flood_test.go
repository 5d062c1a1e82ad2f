package e2e

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/pktsend"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// floodFlows is the number of distinct UDP flows in the flood.
const floodFlows = 1024

// floodFrames builds minimum-size (60 bytes + FCS = 64 on a wire) UDP frames
// from the left host to the right host, one per flow (source ports differ).
func floodFrames(t *testing.T, l *lab.Lab) [][]byte {
	t.Helper()
	frames := make([][]byte, floodFlows)
	for i := range frames {
		f := taggedFrame(t, l.LeftMAC, l.RightMAC, 0, leftIP.AsSlice(), rightIP.AsSlice(), uint16(10000+i), make([]byte, 18))
		// taggedFrame makes an 802.1Q frame; drop the tag for an untagged
		// flood (the checksums do not cover the tag).
		u := append(append([]byte(nil), f[:12]...), f[16:]...)
		binary.BigEndian.PutUint16(u[12:], 0x0800)
		frames[i] = u
	}
	return frames
}

// TX ring geometry of the flood socket (internal/pktsend): 8192 slots of
// 128 bytes, each a 32-byte tpacket2_hdr and the frame after it.
const (
	txSlot     = 128
	txSlots    = 8192
	floodBurst = 512
)

// flood sends frames round-robin from the left host for d through an
// AF_PACKET socket with a TX ring of 8192 128-byte slots (one send()
// flushes a burst of up to 512 frames; the qdisc is bypassed), and returns
// how many it queued.
func flood(t *testing.T, l *lab.Lab, frames [][]byte, d time.Duration) uint64 {
	t.Helper()
	return sendRing(t, l, frames, d, txSlot, txSlots)
}

// sendRing is flood's and blast's sender: a TX ring (pktsend) of slots
// slots of slotSize bytes on the left host's veth. When the frames divide
// the slots, slot i always carries frames[i%len(frames)] and is written
// once, so the sender's cost does not grow with the frame size.
func sendRing(t *testing.T, l *lab.Lab, frames [][]byte, d time.Duration, slotSize, slots int) uint64 {
	t.Helper()
	var r *pktsend.Ring
	err := l.Do(l.LeftNS, func() (err error) {
		r, err = pktsend.Open(l.LeftIf, slotSize, slots)
		return err
	})
	if err != nil {
		t.Fatalf("TX ring socket: %v", err)
	}
	defer r.Close()
	copyOnce := slots%len(frames) == 0
	written := make([]bool, slots)
	var queued uint64
	k := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		n := 0
		for ; n < floodBurst; n++ {
			// The kernel hands a slot back when the frame's skb is
			// freed; a slot still in use ends the burst.
			slot, buf, ok := r.Next()
			if !ok {
				break
			}
			f := frames[k]
			if !copyOnce || !written[slot] {
				copy(buf, f)
				written[slot] = true
			}
			r.Queue(len(f))
			k = (k + 1) % len(frames)
		}
		if r.Flush(true) == nil {
			queued += uint64(n)
		}
		if n == 0 {
			time.Sleep(10 * time.Microsecond)
		}
	}
	return queued
}

// measure floods the lab and returns the pps counted at the right host.
func measure(t *testing.T, l *lab.Lab, d time.Duration) (sentPPS, gotPPS float64) {
	t.Helper()
	frames := floodFrames(t, l)
	flood(t, l, frames[:64], 200*time.Millisecond) // warm up: ARP-free, but entries and caches
	before := landed(t, l)
	sentBefore := e2etest.IfStat(t, l, l.LeftNS, l.LeftIf, "tx_packets")
	flood(t, l, frames, d)
	got := landed(t, l) - before
	sent := e2etest.IfStat(t, l, l.LeftNS, l.LeftIf, "tx_packets") - sentBefore
	return float64(sent) / d.Seconds(), float64(got) / d.Seconds()
}

// landed waits until the right host's rx_packets stops moving (the last
// batches of a flood have landed: unchanged for 100 ms, up to 3 s) and
// returns it.
func landed(t *testing.T, l *lab.Lab) uint64 {
	t.Helper()
	prev, changed := uint64(1<<64-1), time.Now()
	if !testenv.WaitFor(3*time.Second, func() bool {
		n := e2etest.IfStat(t, l, l.RightNS, l.RightIf, "rx_packets")
		if n != prev {
			prev, changed = n, time.Now()
			return false
		}
		return time.Since(changed) >= 100*time.Millisecond
	}) {
		t.Logf("right host rx_packets still moving after 3s (now %d)", prev)
	}
	return prev
}

// TestFloodThroughput floods 64-byte UDP frames over 1024 flows through
// statewire (one worker) and through the kernel bridge with conntrack, in
// the same run, and logs the pps received at the right host. It is a first
// figure, not the perf harness: one AF_PACKET sender shares the machine's
// cores with the bridge under test. It asserts only that each bridge
// delivered a meaningful share of what was sent.
func TestFloodThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("flood: skipped in -short")
	}
	const d = 2 * time.Second
	sw := map[int]float64{}
	var kern float64
	for _, cores := range coreCounts {
		t.Run(fmt.Sprintf("statewire-%d-workers", cores), func(t *testing.T) {
			r := e2etest.Start(t, e2etest.Options{Cores: cores})
			sent, got := measure(t, r.Lab, d)
			st := r.Stop(t)
			a := st.Total(bridge.PortA)
			t.Logf("statewire (%d workers, AF_XDP %s): offered %.0f pps, received %.0f pps (%.1f%%); bridge in %d, forwarded %d, via another core %d, drops %s, kernel drops before RX %d",
				cores, st.Queues[0].Mode, sent, got, 100*got/max(sent, 1), a.RX, a.Forwarded, a.HandedOff, a.DropList(), st.KernelDrops(bridge.PortA))
			for _, q := range st.Queues {
				t.Logf("queue %d port A socket: %+v", q.Queue, q.Socket[bridge.PortA])
			}
			if got < sent/20 {
				t.Errorf("statewire delivered %.0f of %.0f pps, want at least 5%%", got, sent)
			}
			sw[cores] = got
		})
	}
	t.Run("kernel-bridge-conntrack", func(t *testing.T) {
		l := lab.NewT(t, lab.Options{Queues: 2, Mode: lab.KernelBridgeConntrack})
		sent, got := measure(t, l, d)
		t.Logf("kernel bridge + br_netfilter conntrack: offered %.0f pps, received %.0f pps (%.1f%%)", sent, got, 100*got/max(sent, 1))
		if got < sent/20 {
			t.Errorf("kernel bridge delivered %.0f of %.0f pps, want at least 5%%", got, sent)
		}
		kern = got
	})
	t.Logf("64-byte UDP, %d flows, received pps: statewire 1 worker %.0f, 2 workers %.0f; kernel bridge+conntrack %.0f",
		floodFlows, sw[1], sw[2], kern)
}
