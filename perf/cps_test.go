package perf

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

var testAddrs = cpsAddrs{clientMAC: macL, serverMAC: macR, client: lab.LeftIPv4.Addr(), server: lab.RightIPv4.Addr()}

// TestCPSLab runs short CPS trials against the Linux bridge and statewire
// and checks that connections complete and are
// counted at the endpoints. Not a speed test.
func TestCPSLab(t *testing.T) {
	lab.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds labs and plays TCP sessions for ~10 s")
	}
	o := QuickOptions()
	o.Mode = ModeCPS
	o.Devices = []string{KernelBridge, Statewire}
	o.Statewire = lab.StatewireBinary(t)
	o.CPSTrial, o.CPSSteps = 150*time.Millisecond, 1
	rep := runLab(t, o, 60*time.Second)
	if g := rep.CPSGenerator; g == nil || g.Done == 0 {
		t.Fatalf("generator calibration completed no connection: %+v", g)
	}
	for _, dev := range o.Devices {
		t.Run(dev, func(t *testing.T) {
			var x *CPSResult
			for i := range rep.CPS {
				if rep.CPS[i].Device == dev {
					x = &rep.CPS[i]
				}
			}
			if x == nil {
				t.Fatal("no CPS result")
			}
			if x.Error != "" {
				t.Fatalf("error: %s", x.Error)
			}
			ov := x.Overload
			if ov.Done == 0 {
				t.Errorf("overload trial: 0 connections completed, want > 0 (%+v)", ov)
			}
			// Counted at the endpoints: every completed connection is 8
			// frames received there.
			if ov.FramesRX < cpsSteps*ov.Done {
				t.Errorf("endpoints received %d frames for %d complete connections, want >= %d", ov.FramesRX, ov.Done, cpsSteps*ov.Done)
			}
			if ov.Done > ov.Opened {
				t.Errorf("done %d > opened %d", ov.Done, ov.Opened)
			}
		})
	}
}

func TestCPSFrames(t *testing.T) {
	wantFlags := [cpsSteps]uint8{tcpSYN, tcpSYN | tcpACK, tcpACK, tcpPSH | tcpACK, tcpPSH | tcpACK, tcpFIN | tcpACK, tcpFIN | tcpACK, tcpACK}
	for _, k := range []uint64{0, 1, cpsPortSpan - 1, cpsPortSpan, 123456789, cpsTuples - 1, cpsTuples + 5} {
		for step := range cpsSteps {
			t.Run(fmt.Sprintf("conn %d step %d", k, step), func(t *testing.T) {
				f := make([]byte, 128)
				n := cpsBuild(f, &testAddrs, k, step)
				if n != cpsFrameLen {
					t.Fatalf("length %d, want %d", n, cpsFrameLen)
				}
				f = f[:n]
				if !tcpChecksumOK(t, f) {
					t.Errorf("TCP checksum does not verify")
				}
				if fold(sum16(f[14:34], 0)) != 0xffff {
					t.Errorf("IPv4 checksum does not verify")
				}
				if got := f[47]; got != wantFlags[step] {
					t.Errorf("flags %#x, want %#x", got, wantFlags[step])
				}
				gk, gs, ok := cpsParse(f, &testAddrs)
				if !ok || gk != k%cpsTuples || gs != step {
					t.Errorf("parse = conn %d step %d ok %v, want conn %d step %d ok true", gk, gs, ok, k%cpsTuples, step)
				}
			})
		}
	}
	t.Run("sequence numbers follow the session", func(t *testing.T) {
		f := make([]byte, cpsFrameLen)
		seqAck := func(step int) (uint32, uint32) {
			cpsBuild(f, &testAddrs, 7, step)
			return binary.BigEndian.Uint32(f[38:]), binary.BigEndian.Uint32(f[42:])
		}
		for _, tc := range []struct{ step, ackedBy int }{{0, 1}, {1, 2}, {3, 4}, {4, 5}, {5, 6}, {6, 7}} {
			seq, _ := seqAck(tc.step)
			_, ack := seqAck(tc.ackedBy)
			n := uint32(1) // SYN and FIN take one
			if cpsScript[tc.step].data {
				n = cpsDataLen
			}
			if ack != seq+n {
				t.Errorf("step %d acks %d, want step %d's seq %d + %d", tc.ackedBy, ack, tc.step, seq, n)
			}
		}
	})
	t.Run("short buffer", func(t *testing.T) {
		if n := cpsBuild(make([]byte, cpsFrameLen-1), &testAddrs, 0, 0); n != 0 {
			t.Errorf("built %d bytes into a %d-byte buffer, want 0", n, cpsFrameLen-1)
		}
	})
}

func TestCPSParseRejects(t *testing.T) {
	good := make([]byte, cpsFrameLen)
	cpsBuild(good, &testAddrs, 42, 3)
	for _, tc := range []struct {
		name string
		mod  func(f []byte) []byte
	}{
		{"truncated", func(f []byte) []byte { return f[:40] }},
		{"empty", func(f []byte) []byte { return nil }},
		{"IPv6 ethertype", func(f []byte) []byte { f[12], f[13] = 0x86, 0xdd; return f }},
		{"UDP", func(f []byte) []byte { f[23] = 17; return f }},
		{"foreign address", func(f []byte) []byte { f[29] = 99; return f }},
		{"port below range", func(f []byte) []byte { binary.BigEndian.PutUint16(f[34:], 80); return f }},
		{"unknown sequence", func(f []byte) []byte { f[41]++; return f }},
		{"RST", func(f []byte) []byte { f[47] = 0x04; return f }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.mod(append([]byte(nil), good...))
			if k, s, ok := cpsParse(f, &testAddrs); ok {
				t.Errorf("parse accepted it as conn %d step %d", k, s)
			}
		})
	}
	for n := range 60 { // every prefix: no panic
		cpsParse(good[:n], &testAddrs)
	}
}

// playCPS plays n connections between two in-memory endpoints, dropping
// the frames drop says to drop, and returns the player.
func playCPS(base uint64, n int, drop func(conn, step int) bool, dup bool) *cpsPlayer {
	pl := newCPSPlayer(base, n)
	type msg struct{ idx, step int }
	var q []msg
	for i := range n {
		q = append(q, msg{i, 0})
	}
	buf := make([]byte, cpsFrameLen)
	for len(q) > 0 {
		m := q[0]
		q = q[1:]
		if drop != nil && drop(m.idx, m.step) {
			continue
		}
		cpsBuild(buf, &testAddrs, base+uint64(m.idx), m.step)
		atServer := !cpsScript[m.step].fromServer
		idx, step, ok := pl.deliver(buf, &testAddrs, atServer)
		if dup {
			pl.deliver(buf, &testAddrs, atServer)
		}
		if !ok {
			continue
		}
		for _, nx := range cpsScript[step].next {
			q = append(q, msg{idx, nx})
		}
	}
	return pl
}

func TestCPSPlayer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		base      uint64
		n         int
		drop      func(conn, step int) bool
		dup       bool
		wantDone  int
		wantStray uint64
	}{
		{"all complete", 0, 100, nil, false, 100, 0},
		{"base near the tuple wrap", cpsTuples - 10, 20, nil, false, 20, 0},
		{"duplicates are stray, not double counted", 5, 10, nil, true, 10, 10 * cpsSteps},
		{"lost SYN", 0, 10, func(c, s int) bool { return c == 3 && s == 0 }, false, 9, 0},
		// Losing the bare ACK triggers nothing else: the session goes on,
		// but the connection is not complete.
		{"lost handshake ACK", 0, 10, func(c, s int) bool { return c == 4 && s == 2 }, false, 9, 0},
		{"lost final ACK", 0, 10, func(c, s int) bool { return s == 7 && c%2 == 0 }, false, 5, 0},
		{"lost server FIN", 0, 10, func(c, s int) bool { return s == 6 }, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := playCPS(tc.base, tc.n, tc.drop, tc.dup)
			if got := pl.complete(0, tc.n); got != tc.wantDone {
				t.Errorf("complete = %d, want %d", got, tc.wantDone)
			}
			if pl.full != tc.wantDone {
				t.Errorf("full = %d, want %d", pl.full, tc.wantDone)
			}
			if pl.stray != tc.wantStray {
				t.Errorf("stray = %d, want %d", pl.stray, tc.wantStray)
			}
		})
	}
	t.Run("frames at the wrong side or of another trial", func(t *testing.T) {
		pl := newCPSPlayer(1000, 10)
		f := make([]byte, cpsFrameLen)
		cpsBuild(f, &testAddrs, 1000, 0) // SYN: goes to the server
		if _, _, ok := pl.deliver(f, &testAddrs, false); ok {
			t.Error("SYN accepted at the client")
		}
		cpsBuild(f, &testAddrs, 1010, 0) // one past the trial
		if _, _, ok := pl.deliver(f, &testAddrs, true); ok {
			t.Error("connection outside the trial accepted")
		}
		cpsBuild(f, &testAddrs, 999, 0)
		if _, _, ok := pl.deliver(f, &testAddrs, true); ok {
			t.Error("connection before the trial accepted")
		}
		if pl.stray != 3 {
			t.Errorf("stray = %d, want 3", pl.stray)
		}
	})
}
