package faults

import (
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/lab"
)

// burst is the number of datagrams the ring tests send as fast as one
// socket can.
const burst = 60000

// burstThrough starts a rig whose config tweak changes the rings, checks a
// ping passes, sends a burst of 64-byte datagrams to the right host's port
// from one socket as fast as it takes them, checks that they balance end to
// end (each received, or dropped at a counted place) and returns the rig
// with the path counters before and after the burst.
func burstThrough(t *testing.T, tweak func(*bridge.DatapathConfig), port int) (r *rig, pre, post pathCounters) {
	t.Helper()
	r = newRig(t, tweak)
	l := r.Lab
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping before the burst")
	}
	pre = r.sample(t)
	u := startUDP(t, l, port, 64, 0, burst)
	if !u.waitSent(burst, 30*time.Second) {
		t.Fatalf("sent only %d of %d datagrams in 30s", u.sent.Load(), burst)
	}
	u.stopSending()
	u.settle()
	post = r.sample(t)
	balance(t, u, pre, post)
	u.close()
	return r, pre, post
}

// recovers checks that forwarding works after a fault (a ping within 5 s,
// then a TCP transfer of 4 MiB to port intact) and stops the rig.
func recovers(t *testing.T, r *rig, port int) {
	t.Helper()
	l := r.Lab
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping within %v after the burst", d)
	}
	transferOK(t, l, port, 4<<20)
	r.Stop(t)
}

// TestFillRingEmpty starves the fill ring: 32 fill entries and 256 UMEM
// frames per queue against a burst from one socket. The kernel must count
// frames that found no fill entry (XDP_STATISTICS rx_fill_ring_empty_descs,
// published per socket), the datagrams must balance end to end (each
// received, or dropped at a counted place: here the AF_XDP socket's
// rx_dropped), and forwarding must recover.
func TestFillRingEmpty(t *testing.T) {
	r, pre, post := burstThrough(t, func(c *bridge.DatapathConfig) {
		c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames, c.Batch = 64, 64, 32, 64, 256, 64
	}, 9003)
	empty := e2etest.FillEmpty(&post.st, bridge.PortA) - e2etest.FillEmpty(&pre.st, bridge.PortA)
	kd := post.st.KernelDrops(bridge.PortA) - pre.st.KernelDrops(bridge.PortA)
	t.Logf("burst of %d: fill ring empty %d times, AF_XDP kernel drops %d", burst, empty, kd)
	if empty == 0 {
		t.Errorf("rx_fill_ring_empty_descs got 0, want > 0: the burst never starved the fill ring")
	}
	if kd == 0 {
		t.Errorf("AF_XDP kernel drops got 0 with the fill ring empty %d times, want the frames that found no fill entry counted", empty)
	}
	recovers(t, r, 5004)
}

// TestTXRingFull gives the egress sockets a TX ring of 16 entries against
// RX batches of up to 64: a batch that does not fit must be dropped with
// the reason no-tx-space (counted, frames back on the free stack), never
// block the worker, and every frame put on the TX ring must come back
// through the completion ring (checked at Stop).
func TestTXRingFull(t *testing.T) {
	r, pre, post := burstThrough(t, func(c *bridge.DatapathConfig) {
		c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames, c.Batch = 64, 16, 64, 64, 256, 64
	}, 9004)
	a0, a1 := pre.st.Total(bridge.PortA), post.st.Total(bridge.PortA)
	noTX := a1.Drops[bridge.DropNoTXSpace] - a0.Drops[bridge.DropNoTXSpace]
	t.Logf("burst of %d: bridge in %d, forwarded %d, no-tx-space drops %d", burst, a1.RX-a0.RX, a1.Forwarded-a0.Forwarded, noTX)
	if noTX == 0 {
		t.Errorf("no-tx-space drops got 0, want > 0: the 16-entry TX ring never filled")
	}
	r.alive(t)
	recovers(t, r, 5005)
}

// TestReceiverStopsReading: the right host's application stops reading in
// the middle of a TCP transfer for 2 s (its receive window closes, the
// sender probes a zero window), then reads on. The bridge must carry the
// probes and the rest: the data arrives intact and nothing is dropped.
func TestReceiverStopsReading(t *testing.T) {
	lab.RequireRoot(t)
	r := newRig(t, nil)
	l := r.Lab
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping")
	}
	const size = 16 << 20
	data := make([]byte, size)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The receiver reads 1 MiB through a 64 KiB buffer, then its
	// application stalls for 2 s.
	tr, err := l.TransferTCPWith(ctx, l.LeftNS, l.RightNS, net.JoinHostPort(rightIP.String(), "5006"), data,
		lab.Receiver{ReadBuffer: 64 << 10, StallAfter: 1 << 20, Stall: 2 * time.Second})
	if err != nil || tr.N != size || tr.Got != tr.Sent {
		t.Fatalf("after the stall got %d bytes, err %v, sha256 match %v; want %d bytes intact", tr.N, err, tr.Got == tr.Sent, size)
	}
	st := r.settledStats(t, 5*time.Second)
	t.Logf("16 MiB with a 2 s reader stall: intact in %v; pipeline: INVALID %d, ESTABLISHED %d",
		tr.Took.Round(time.Millisecond), st.Pipeline.States[1], st.Pipeline.States[3])
	if n := st.Pipeline.States[1]; n != 0 {
		t.Errorf("INVALID packets got %d, want 0: zero-window probes and the rest are in window", n)
	}
	final := r.Stop(t)
	e2etest.NoDrops(t, &final)
}
