package e2e

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
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

// flood sends frames round-robin from an AF_PACKET socket (qdisc bypassed)
// on the left host for d, and returns how many the socket accepted.
func flood(t *testing.T, l *lab.Lab, frames [][]byte, d time.Duration) uint64 {
	t.Helper()
	var fd int
	err := l.Do(l.LeftNS, func() error {
		i, err := net.InterfaceByName(l.LeftIf)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: i.Index}); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	})
	if err != nil {
		t.Fatalf("flood socket: %v", err)
	}
	defer unix.Close(fd)
	var sent uint64
	end := time.Now().Add(d)
	for k := 0; time.Now().Before(end); {
		for range 256 {
			if _, err := unix.Write(fd, frames[k]); err == nil {
				sent++
			}
			k = (k + 1) % len(frames)
		}
	}
	return sent
}

// measure floods the lab and returns the pps counted at the right host.
func measure(t *testing.T, l *lab.Lab, d time.Duration) (sentPPS, gotPPS float64) {
	t.Helper()
	frames := floodFrames(t, l)
	flood(t, l, frames[:64], 200*time.Millisecond) // warm up: ARP-free, but entries and caches
	time.Sleep(100 * time.Millisecond)
	before := readCounter(t, l, l.RightNS, l.RightIf, "rx_packets")
	sent := flood(t, l, frames, d)
	time.Sleep(100 * time.Millisecond) // let the last batches land
	got := readCounter(t, l, l.RightNS, l.RightIf, "rx_packets") - before
	return float64(sent) / d.Seconds(), float64(got) / d.Seconds()
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
	var sw, kern float64
	t.Run("statewire", func(t *testing.T) {
		r := newRig(t, rigOptions{cores: 1})
		sent, got := measure(t, r.l, d)
		st, _ := r.dp.Stop()
		a := st.Total(bridge.PortA)
		t.Logf("statewire (1 worker, AF_XDP %s): sent %.0f pps, received %.0f pps (%.1f%%); bridge in %d, forwarded %d, drops %s, kernel drops before RX %d",
			st.Queues[0].Mode, sent, got, 100*got/max(sent, 1), a.RX, a.Forwarded, nonZeroDrops(&a), st.KernelDrops(bridge.PortA))
		for _, q := range st.Queues {
			t.Logf("queue %d port A socket: %+v", q.Queue, q.Socket[bridge.PortA])
		}
		if got < sent/20 {
			t.Errorf("statewire delivered %.0f of %.0f pps, want at least 5%%", got, sent)
		}
		sw = got
	})
	t.Run("kernel-bridge-conntrack", func(t *testing.T) {
		l := lab.NewT(t, lab.Options{Mode: lab.KernelBridgeConntrack})
		sent, got := measure(t, l, d)
		t.Logf("kernel bridge + br_netfilter conntrack: sent %.0f pps, received %.0f pps (%.1f%%)", sent, got, 100*got/max(sent, 1))
		if got < sent/20 {
			t.Errorf("kernel bridge delivered %.0f of %.0f pps, want at least 5%%", got, sent)
		}
		kern = got
	})
	if sw > 0 && kern > 0 {
		t.Logf("64-byte UDP, %d flows, received pps: statewire %.0f, kernel bridge+conntrack %.0f (ratio %.2f)", floodFlows, sw, kern, sw/kern)
	}
}
