package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// jumboMTU is the data-centre MTU: TCP over IPv4 then carries 8948-byte
// segments (9000 - 20 - 20 - 12 for the timestamp option).
const (
	jumboMTU = 9000
	jumboMSS = jumboMTU - 20 - 20 - 12
)

// TestJumboFrames: with MTU 9000 on every link of the lab, the hosts'
// segmentation offloads off (TSO, GSO: every segment leaves as the MSS
// says, so the bridge sees 9014-byte frames), a 10 MB TCP transfer each
// way arrives intact (SHA-256) in 8948-byte segments (the receiver's
// TCP_INFO rcv_mss, which the kernel takes from the largest segment that
// arrived, capped at the advertised MSS) and `ping -s 8000 -M do` (8028-byte
// datagrams, never fragmented) answers both ways, with the fast path off
// (every frame through the AF_XDP sockets as a chain of buffers) and on
// (the XDP program, loaded with frags support, forwards the established
// flow). Frames stay conserved (Rig.Stop): counted once however many
// buffers they took.
func TestJumboFrames(t *testing.T) {
	for _, off := range []string{"off", "on"} {
		t.Run("offload="+off, func(t *testing.T) {
			r := e2etest.Start(t, e2etest.Options{MTU: jumboMTU, Offload: off})
			hostOffloads(t, r.Lab, "tso", "off", "gso", "off")
			if on, why := r.DP.Offload(); (off == "on") != on {
				t.Fatalf("fast path on = %v (%s), want %v", on, why, off == "on")
			}
			for _, tc := range []struct{ name, ns, to string }{
				{"left to right", r.Lab.LeftNS, rightIP.String()},
				{"right to left", r.Lab.RightNS, leftIP.String()},
			} {
				t.Run("ping -s 8000 "+tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					out, err := r.Lab.Run(ctx, tc.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-s", "8000", "-M", "do", tc.to)
					if err != nil || !strings.Contains(out, "3 received") || strings.Contains(out, "wrong data") {
						t.Errorf("ping -s 8000 got %v %q, want 3 intact replies", err, out)
					}
				})
			}
			for i, tc := range []struct{ name, from, to, addr string }{
				{"left to right", r.Lab.LeftNS, r.Lab.RightNS, rightIP.String()},
				{"right to left", r.Lab.RightNS, r.Lab.LeftNS, leftIP.String()},
			} {
				t.Run("tcp "+tc.name, func(t *testing.T) {
					x := jumboTransfer(t, r.Lab, tc.from, tc.to, net.JoinHostPort(tc.addr, fmt.Sprint(5101+i)), 10<<20)
					t.Logf("10 MB in %v (%.0f Mbit/s), sender MSS %d, receiver saw segments of %d bytes",
						x.took.Round(time.Millisecond), 10<<20*8/x.took.Seconds()/1e6, x.sndMSS, x.rcvMSS)
					if x.sndMSS != jumboMSS || x.rcvMSS != jumboMSS {
						t.Errorf("MSS got sender %d, receiver %d, want %d both (MTU %d)", x.sndMSS, x.rcvMSS, jumboMSS, jumboMTU)
					}
				})
			}
			st := r.Stop(t)
			var frames, buffers, fastPkts, fastBytes uint64
			for _, q := range st.Queues {
				for p := range q.Socket {
					frames += q.Socket[p].RX
					buffers += q.Socket[p].RXBuffers
				}
			}
			for p := range st.Fast.Ports {
				fastPkts += st.Fast.Ports[p].FastPackets
				fastBytes += st.Fast.Ports[p].FastBytes
			}
			t.Logf("sockets: %d frames in %d buffers; fast path: %d frames, %d bytes", frames, buffers, fastPkts, fastBytes)
			if off == "on" {
				t.Logf("fast path: flows %+v; punts A %v, B %v", st.Pipeline.Fast, st.Fast.Ports[0].Punts, st.Fast.Ports[1].Punts)
			}
			if off == "off" && buffers < frames+2*(10<<20)/jumboMSS {
				t.Errorf("sockets received %d buffers for %d frames, want at least 2 buffers for each of the ~%d jumbo segments",
					buffers, frames, 2*(10<<20)/jumboMSS)
			}
			if off == "on" {
				// The established flow goes by the program; its
				// frames are counted whole (bpf_xdp_get_buff_len).
				if fastPkts == 0 || fastBytes/fastPkts < 4096 {
					t.Errorf("fast path forwarded %d frames of %d bytes, want jumbo frames (mean above 4096 bytes)", fastPkts, fastBytes)
				}
			}
		})
	}
}

// hostOffloads sets ethtool features (name value pairs) on both hosts'
// veths, so the test says which offloads it runs with.
func hostOffloads(t *testing.T, l *lab.Lab, kv ...string) {
	t.Helper()
	for _, h := range [][2]string{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
		args := append([]string{"-K", h[1]}, kv...)
		if out, err := l.Run(context.Background(), h[0], "ethtool", args...); err != nil {
			t.Fatalf("ethtool %v: %v %s", args, err, out)
		}
	}
}

// jumboResult is what jumboTransfer measured.
type jumboResult struct {
	took           time.Duration
	sndMSS, rcvMSS uint32
}

// jumboTransfer is e2etest.TransferOK that also reads both ends' TCP_INFO:
// the sender's MSS and the receiver's rcv_mss (the largest segment seen).
func jumboTransfer(t *testing.T, l *lab.Lab, fromNS, toNS, addr string, size int) jumboResult {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	var ln net.Listener
	if err := l.Do(toNS, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	defer ln.Close()
	type recv struct {
		sum [32]byte
		n   int64
		mss uint32
		err error
	}
	done := make(chan recv, 1)
	go func() {
		var r recv
		c, err := ln.Accept()
		if err != nil {
			done <- recv{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		r.n, r.err = io.Copy(h, c)
		copy(r.sum[:], h.Sum(nil))
		r.mss = tcpInfo(c).Rcv_mss
		done <- r
	}()
	start := time.Now()
	var c net.Conn
	if err := l.Do(fromNS, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	_, err := io.Copy(c, bytes.NewReader(data))
	snd := tcpInfo(c).Snd_mss
	c.Close()
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	r := <-done
	took := time.Since(start)
	if r.err != nil {
		t.Fatalf("receive: %v", r.err)
	}
	if want := sha256.Sum256(data); r.sum != want || r.n != int64(size) {
		t.Fatalf("TCP transfer got %d bytes sha256 %x, want %d bytes sha256 %x", r.n, r.sum[:8], size, want[:8])
	}
	return jumboResult{took: took, sndMSS: snd, rcvMSS: r.mss}
}

// tcpInfo reads TCP_INFO of c (zero on error: the MSS checks then fail).
func tcpInfo(c net.Conn) unix.TCPInfo {
	var info *unix.TCPInfo
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return unix.TCPInfo{}
	}
	rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return unix.TCPInfo{}
	}
	return *info
}

// TestJumboFramesPerSecond measures frames per second through statewire
// (one worker, fast path off and on) at MTU 1500 and MTU 9000 in the same
// run: the left host sends MTU-sized UDP frames (1472 and 8972 bytes of
// payload) over 16 flows for a second from an AF_PACKET TX ring whose
// slots are written once (the sender's cost does not grow with the frame
// size), counted where they land (the right host's rx_packets). It logs
// both rates and requires that frames of both sizes landed; it asserts no
// rate (speed is shown by measurements, not timed tests). The frame rate
// at MTU 9000 is lower: on veth every frame is
// copied and summed by the kernel several times (AF_XDP copy mode into the
// UMEM and out into an skb, the receiving host's checksum; the fast path's
// checksum over the fragments), so per-frame cost grows with the size
// here; the rates measured are in the report of the jumbo branch.
func TestJumboFramesPerSecond(t *testing.T) {
	for _, off := range []string{"off", "on"} {
		t.Run("offload="+off, func(t *testing.T) {
			fps := map[int]float64{}
			bps := map[int]float64{}
			for _, mtu := range []int{1500, jumboMTU} {
				r := e2etest.Start(t, e2etest.Options{MTU: mtu, Offload: off, StaticNeighbours: true})
				hostOffloads(t, r.Lab, "tso", "off", "gso", "off")
				sent, got := udpBlast(t, r.Lab, mtu-28, time.Second)
				fps[mtu], bps[mtu] = got, got*float64(mtu+14)*8
				st := r.Stop(t)
				t.Logf("MTU %d: sent %.0f frames/s, %.0f landed (%.0f Mbit/s); fast path frames %d",
					mtu, sent, got, bps[mtu]/1e6, st.Fast.Packets(0)+st.Fast.Packets(1))
			}
			t.Logf("through statewire (offload %s): MTU 1500 %.0f frames/s %.0f Mbit/s, MTU 9000 %.0f frames/s %.0f Mbit/s (%.2fx frames, %.2fx bits)",
				off, fps[1500], bps[1500]/1e6, fps[jumboMTU], bps[jumboMTU]/1e6, fps[jumboMTU]/fps[1500], bps[jumboMTU]/bps[1500])
			// A rate is not asserted: a timed comparison fails whenever the
			// shared machine starves one of the two runs (seen: 0.12x frames
			// while six suites ran). The figures are logged for the report;
			// what must hold is that MTU-sized frames of both sizes landed.
			for _, mtu := range []int{1500, jumboMTU} {
				if fps[mtu] == 0 {
					t.Errorf("MTU %d: no frame landed", mtu)
				}
			}
		})
	}
}

// udpBlast sends payload-byte UDP datagrams from the left host to the
// right one over 16 flows for d through an AF_PACKET TX ring (as flood, with
// slots that hold a jumbo frame), and returns the frames per second the
// left host sent and the right host received.
func udpBlast(t *testing.T, l *lab.Lab, payload int, d time.Duration) (sent, got float64) {
	t.Helper()
	frames := make([][]byte, 16)
	for i := range frames {
		f := taggedFrame(t, l.LeftMAC, l.RightMAC, 0, leftIP.AsSlice(), rightIP.AsSlice(), uint16(20000+i), make([]byte, payload))
		u := append(append([]byte(nil), f[:12]...), f[16:]...)
		binary.BigEndian.PutUint16(u[12:], 0x0800)
		frames[i] = u
	}
	blast(t, l, frames, 200*time.Millisecond) // warm up: entries, caches
	before := landed(t, l)
	sentBefore := e2etest.IfStat(t, l, l.LeftNS, l.LeftIf, "tx_packets")
	blast(t, l, frames, d)
	n := landed(t, l) - before
	s := e2etest.IfStat(t, l, l.LeftNS, l.LeftIf, "tx_packets") - sentBefore
	return float64(s) / d.Seconds(), float64(n) / d.Seconds()
}

// blast is flood with 16 KiB slots (1024 of them), each written once
// (16 frames divide 1024 slots).
func blast(t *testing.T, l *lab.Lab, frames [][]byte, d time.Duration) {
	t.Helper()
	if 1024%len(frames) != 0 {
		t.Fatalf("blast: %d frames do not divide 1024 slots", len(frames))
	}
	sendRing(t, l, frames, d, 16384, 1024)
}
