package faults

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/lab"
)

// burst is the number of datagrams the ring tests send as fast as one
// socket can.
const burst = 60000

// TestFillRingEmpty starves the fill ring: 32 fill entries and 256 UMEM
// frames per queue against a burst from one socket. The kernel must count
// frames that found no fill entry (XDP_STATISTICS rx_fill_ring_empty_descs,
// published per socket), the datagrams must balance end to end (each
// received, or dropped at a counted place: here the AF_XDP socket's
// rx_dropped), and forwarding must recover.
func TestFillRingEmpty(t *testing.T) {
	lab.RequireRoot(t)
	r := newRig(t, func(c *bridge.DatapathConfig) {
		c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames, c.Batch = 64, 64, 32, 64, 256, 64
	})
	l := r.l
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping before the burst")
	}
	pre := r.sample(t)
	u := startUDP(t, l, 9003, 64, 0, burst)
	if !u.waitSent(burst, 30*time.Second) {
		t.Fatalf("sent only %d of %d datagrams in 30s", u.sent.Load(), burst)
	}
	u.stopSending()
	u.settle()
	post := r.sample(t)
	balance(t, u, pre, post)
	u.close()
	empty := fillEmpty(&post.st, bridge.PortA) - fillEmpty(&pre.st, bridge.PortA)
	kd := post.st.KernelDrops(bridge.PortA) - pre.st.KernelDrops(bridge.PortA)
	t.Logf("burst of %d: fill ring empty %d times, AF_XDP kernel drops %d", burst, empty, kd)
	if empty == 0 {
		t.Errorf("rx_fill_ring_empty_descs got 0, want > 0: the burst never starved the fill ring")
	}
	if kd == 0 {
		t.Errorf("AF_XDP kernel drops got 0 with the fill ring empty %d times, want the frames that found no fill entry counted", empty)
	}
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping within %v after the burst", d)
	}
	transferOK(t, l, 5004, 4<<20)
	r.stop(t)
}

// TestTXRingFull gives the egress sockets a TX ring of 16 entries against
// RX batches of up to 64: a batch that does not fit must be dropped with
// the reason no-tx-space (counted, frames back on the free stack), never
// block the worker, and every frame put on the TX ring must come back
// through the completion ring (checked at Stop).
func TestTXRingFull(t *testing.T) {
	lab.RequireRoot(t)
	r := newRig(t, func(c *bridge.DatapathConfig) {
		c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames, c.Batch = 64, 16, 64, 64, 256, 64
	})
	l := r.l
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping before the burst")
	}
	pre := r.sample(t)
	u := startUDP(t, l, 9004, 64, 0, burst)
	if !u.waitSent(burst, 30*time.Second) {
		t.Fatalf("sent only %d of %d datagrams in 30s", u.sent.Load(), burst)
	}
	u.stopSending()
	u.settle()
	post := r.sample(t)
	balance(t, u, pre, post)
	u.close()
	a0, a1 := pre.st.Total(bridge.PortA), post.st.Total(bridge.PortA)
	noTX := a1.Drops[bridge.DropNoTXSpace] - a0.Drops[bridge.DropNoTXSpace]
	t.Logf("burst of %d: bridge in %d, forwarded %d, no-tx-space drops %d", burst, a1.RX-a0.RX, a1.Forwarded-a0.Forwarded, noTX)
	if noTX == 0 {
		t.Errorf("no-tx-space drops got 0, want > 0: the 16-entry TX ring never filled")
	}
	r.alive(t)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping within %v after the burst", d)
	}
	transferOK(t, l, 5005, 4<<20)
	r.stop(t)
}

// TestReceiverStopsReading: the right host's application stops reading in
// the middle of a TCP transfer for 2 s (its receive window closes, the
// sender probes a zero window), then reads on. The bridge must carry the
// probes and the rest: the data arrives intact and nothing is dropped.
func TestReceiverStopsReading(t *testing.T) {
	lab.RequireRoot(t)
	r := newRig(t, nil)
	l := r.l
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping")
	}
	const size = 16 << 20
	data := make([]byte, size)
	rand.Read(data)
	addr := net.JoinHostPort(rightIP.String(), "5006")
	var ln net.Listener
	if err := l.Do(l.RightNS, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.CopyN(h, c, 1<<20)
		if err == nil {
			time.Sleep(2 * time.Second) // the consumer stalls
			var m int64
			m, err = io.Copy(h, c)
			n += m
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		done <- result{s, n, err}
	}()
	var c net.Conn
	if err := l.Do(l.LeftNS, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	_, err := io.Copy(c, bytes.NewReader(data))
	c.Close()
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("receiver did not finish within 60s")
	}
	if res.err != nil || res.n != size || res.sum != sha256.Sum256(data) {
		t.Fatalf("after the stall got %d bytes, err %v, sha256 match %v; want %d bytes intact", res.n, res.err, res.sum == sha256.Sum256(data), size)
	}
	st := r.settledStats(t, 5*time.Second)
	t.Logf("16 MiB with a 2 s reader stall: intact in %v; pipeline: INVALID %d, ESTABLISHED %d",
		time.Since(start).Round(time.Millisecond), st.Pipeline.States[1], st.Pipeline.States[3])
	if n := st.Pipeline.States[1]; n != 0 {
		t.Errorf("INVALID packets got %d, want 0: zero-window probes and the rest are in window", n)
	}
	final := r.stop(t)
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		if c := final.Total(p); c.Dropped() != 0 {
			t.Errorf("%s->%s: %d frames dropped (%s), want 0", p, p.Other(), c.Dropped(), c.DropList())
		}
	}
}
