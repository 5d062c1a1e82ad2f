package perf

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/statewire/statewire/internal/testenv"
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
			// frames received there, one of each step.
			if ov.FramesRX < cpsSteps*ov.Done {
				t.Errorf("endpoints received %d frames for %d complete connections, want >= %d", ov.FramesRX, ov.Done, cpsSteps*ov.Done)
			}
			for step, n := range ov.Received {
				if n < ov.Done {
					t.Errorf("step %d received %d times for %d complete connections", step, n, ov.Done)
				}
			}
			if ov.Done > ov.Opened {
				t.Errorf("done %d > opened %d", ov.Done, ov.Opened)
			}
			// Every trial says where the time went: at overload the
			// generator's CPU opens connections as fast as it can.
			for _, tr := range append([]CPSTrial{ov}, x.Trials...) {
				if len(tr.CPUs) != 2 {
					t.Errorf("trial at %.0f conn/s records CPUs %+v, want the generator's and the device's", tr.Target, tr.CPUs)
				}
			}
			for _, c := range ov.CPUs {
				if c.CPU == o.GenCPU && c.Idle > 0.5 {
					t.Errorf("overload trial: generator CPU %d idle %.0f%% of the trial", c.CPU, 100*c.Idle)
				}
			}
		})
	}
}

func TestCPSFrames(t *testing.T) {
	wantFlags := [cpsSteps]uint8{tcpSYN, tcpSYN | tcpACK, tcpACK, tcpPSH | tcpACK, tcpPSH | tcpACK, tcpFIN | tcpACK, tcpFIN | tcpACK, tcpACK}
	for _, k := range []uint64{0, 1, 1<<15 - 1, 1 << 15, 123456789, cpsTuples - 1, cpsTuples + 5} {
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
			if cpsScript[tc.step].fromServer == cpsScript[tc.ackedBy].fromServer {
				t.Fatalf("step %d and %d from the same side", tc.step, tc.ackedBy)
			}
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
		{"server port below range", func(f []byte) []byte { binary.BigEndian.PutUint16(f[34:], 80); return f }},
		{"client port below range", func(f []byte) []byte { binary.BigEndian.PutUint16(f[36:], 80); return f }},
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

// testCPSProgram loads the client's or the server's program for a veth of
// index ifindex with fresh statistics.
func testCPSProgram(t *testing.T, client bool, ifindex int) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	stats, err := newPerCPUArray("t_cps", cpsStatN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stats.Close() })
	prog, err := cpsProgram(stats, &testAddrs, client, ifindex)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog, stats
}

// runXDP runs prog once on in (BPF_PROG_RUN, no live frames) as received
// by the loopback device (ifindex 1 in the test's namespace) and returns the
// action and the frame it left.
func runXDP(t *testing.T, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Repeat: 1,
		Context: xdpMD{DataEnd: uint32(len(in)), IngressIfindex: 1}}
	ret, err := prog.Run(&opts)
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// TestCPSPrograms plays sessions through the two endpoint programs alone:
// each step run through the program of the side it arrives at must come
// out as the next step of the same connection, byte for byte as cpsBuild
// makes it (checksums included); the final ACK is dropped and counted; the
// generator writes a fresh connection per run; anything else is counted
// as stray or passed to the host.
func TestCPSPrograms(t *testing.T) {
	lab.RequireRoot(t)
	onCPU0(t, func() {
		// The endpoints "attached" to the loopback device: every run
		// arrives by their veth.
		cprog, cstats := testCPSProgram(t, true, 1)
		sprog, sstats := testCPSProgram(t, false, 1)
		stat := func(m *ebpf.Map, key int) uint64 {
			v, err := sumPerCPU(m, uint32(key))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		conns := []uint64{0, 1, 1<<15 - 1, 1 << 15, 123456789, cpsTuples - 1}
		for _, k := range conns {
			for step := range cpsSteps {
				in := make([]byte, cpsFrameLen)
				cpsBuild(in, &testAddrs, k, step)
				prog := cprog
				if !cpsScript[step].fromServer {
					prog = sprog
				}
				ret, out := runXDP(t, prog, in)
				if step == cpsSteps-1 {
					if ret != xdpDrop {
						t.Errorf("conn %d final ACK: action %d, want XDP_DROP", k, ret)
					}
					continue
				}
				want := make([]byte, cpsFrameLen)
				cpsBuild(want, &testAddrs, k, step+1)
				if ret != xdpTX || !bytes.Equal(out, want) {
					t.Errorf("conn %d step %d: action %d, frame\n%x\nwant XDP_TX and step %d\n%x", k, step, ret, out, step+1, want)
				}
			}
		}
		n := uint64(len(conns))
		for step := range cpsSteps {
			m := cstats
			if !cpsScript[step].fromServer {
				m = sstats
			}
			if got := stat(m, cpsStatRX+step); got != n {
				t.Errorf("step %d received %d times at its endpoint, want %d", step, got, n)
			}
		}
		for step := 1; step < cpsSteps; step++ {
			m := sstats
			if !cpsScript[step].fromServer {
				m = cstats
			}
			if got := stat(m, cpsStatTX+step); got != n {
				t.Errorf("step %d sent %d times, want %d", step, got, n)
			}
		}

		// A kernel bridge with br_netfilter trims the padding of frames
		// without data: 54 bytes arrive, 60 leave.
		in := make([]byte, cpsFrameLen)
		cpsBuild(in, &testAddrs, 77, 2) // client ACK, no data
		ret, out := runXDP(t, sprog, in[:54])
		want := make([]byte, cpsFrameLen)
		cpsBuild(want, &testAddrs, 77, 3)
		if ret != xdpTX || !bytes.Equal(out, want) {
			t.Errorf("trimmed ACK: action %d, frame %x, want XDP_TX and %x", ret, out, want)
		}

		// The generator: a client for another veth (every run here then
		// comes in by another device, as BPF_PROG_RUN's do) opens
		// connection 0, 1, 2, ... and redirects the SYN to its veth,
		// whatever the frame it was run on held (live frames recycle
		// pages holding the session's last frame).
		gprog, gstats := testCPSProgram(t, true, 1<<30)
		tmpl := make([]byte, cpsFrameLen)
		cpsBuildPorts(tmpl, &testAddrs, 0, 0, 0)
		last := make([]byte, cpsFrameLen)
		cpsBuild(last, &testAddrs, 99, cpsSteps-1)
		for k, in := range [][]byte{tmpl, last, in[:54]} {
			ret, out := runXDP(t, gprog, in)
			cpsBuild(want, &testAddrs, uint64(k), 0)
			if ret != xdpRedirect || !bytes.Equal(out, want) {
				t.Errorf("generator run %d: action %d, frame %x, want XDP_REDIRECT and %x", k, ret, out, want)
			}
		}
		if got := stat(gstats, cpsStatGen); got != 3 {
			t.Errorf("generator counter %d, want 3", got)
		}
		if got := stat(gstats, cpsStatTX); got != 3 {
			t.Errorf("generator sent %d SYNs, want 3", got)
		}

		// Not a step: a RST from the peer is stray and dropped; a frame
		// of another host, ARP, a truncated frame pass to the host.
		rst := make([]byte, cpsFrameLen)
		cpsBuild(rst, &testAddrs, 5, 1)
		rst[47] = 0x04
		if ret, _ := runXDP(t, cprog, rst); ret != xdpDrop {
			t.Errorf("RST: action %d, want XDP_DROP", ret)
		}
		if got := stat(cstats, cpsStatStray); got != 1 {
			t.Errorf("stray %d, want 1", got)
		}
		other := make([]byte, cpsFrameLen)
		cpsBuild(other, &testAddrs, 5, 1)
		other[29] = 99
		arp := make([]byte, 60)
		arp[12], arp[13] = 0x08, 0x06
		for name, f := range map[string][]byte{"other host": other, "ARP": arp, "truncated": other[:40]} {
			if ret, _ := runXDP(t, cprog, f); ret != xdpPass {
				t.Errorf("%s: action %d, want XDP_PASS", name, ret)
			}
		}
	})
}

// TestCPSEndpoints opens connections through a real device with the XDP
// endpoints and checks that every one is played to its end and every step
// counted where it arrives: the SYN and the ACK at the server, the SYN/ACK
// at the client, and so on to the final ACK. statewire (--offload=off:
// every connection through its workers) and the Linux bridge with
// conntrack (whose br_netfilter trims the frames' padding), and the
// endpoints back to back (port A is the server: the ceiling's lab).
func TestCPSEndpoints(t *testing.T) {
	lab.RequireRoot(t)
	o := QuickOptions()
	o.Statewire = lab.StatewireBinary(t)
	for _, dev := range []string{StatewireOff, KernelBridgeCT, generatorDevice} {
		t.Run(dev, func(t *testing.T) {
			d, err := newDevice(context.Background(), dev, &o)
			if err != nil {
				t.Fatal(err)
			}
			defer d.close()
			r := &runner{o: o, settle: 50 * time.Millisecond}
			if dev == generatorDevice {
				r.nullDev = d
			}
			p, err := r.cpsOpen(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer p.close()
			if err := d.resume(); err != nil {
				t.Fatal(err)
			}
			defer d.pause()
			sent, _, err := p.gen.SendCount(20e3, 2000)
			if err != nil {
				t.Fatal(err)
			}
			// The SYNs the client's program wrote: Send counts no frame of
			// a call a signal interrupted (EINTR), which ran some.
			c, _, err := p.read()
			if err != nil {
				t.Fatal(err)
			}
			conns := c[cpsStatTX]
			if conns < sent || conns != c[cpsStatGen] {
				t.Fatalf("generator wrote %d SYNs (counter %d), Send counted %d", conns, c[cpsStatGen], sent)
			}
			var s cpsStats
			testenv.WaitFor(5*time.Second, func() bool {
				c, s, err = p.read()
				return err == nil && c[cpsStatRX+cpsSteps-1] >= conns
			})
			if err != nil {
				t.Fatal(err)
			}
			for step := range cpsSteps {
				at, from, where := s, c, "server"
				if cpsScript[step].fromServer {
					at, from, where = c, s, "client"
				}
				if got := at[cpsStatRX+step]; got != conns {
					t.Errorf("step %d (flags %#x) received at the %s %d times, want %d", step, cpsScript[step].flags, where, got, conns)
				}
				if got := from[cpsStatTX+step]; step > 0 && got != conns {
					t.Errorf("step %d sent %d times, want %d", step, got, conns)
				}
			}
			if c[cpsStatStray]+s[cpsStatStray]+c[cpsStatTail]+s[cpsStatTail] != 0 {
				t.Errorf("stray %d/%d, short %d/%d (client/server), want 0", c[cpsStatStray], s[cpsStatStray], c[cpsStatTail], s[cpsStatTail])
			}
			// A trial counts them the same way.
			tr, err := p.run(20e3, 0, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Done == 0 || tr.Done > tr.Opened || tr.Received[0] < tr.Done || tr.Received[1] < tr.Done || tr.Received[2] < tr.Done {
				t.Errorf("trial: %+v, want completed connections, each with its SYN, SYN/ACK and ACK counted", tr)
			}
		})
	}
}
