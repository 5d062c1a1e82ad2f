package offload_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/ring"
	"golang.org/x/sys/unix"
)

// port is one side of the bump-in-the-wire in the end-to-end test.
type port struct {
	name string
	sock *ring.Socket
	prog *offload.Program // shared by both ports
}

// forwarder is the smallest datapath: RX on one port -> TX on the other,
// completions back to the free stack, free stack to the fill rings. It is
// what a bridge worker does per batch, minus the pipeline.
type forwarder struct {
	umem      *ring.UMEM
	a, b      *ring.Socket
	forwarded atomic.Uint64
	dropped   atomic.Uint64 // TX ring full: frame freed
}

const batch = 64

// moveBatch forwards one batch from in to out and reports how many frames
// it took from in.
func (f *forwarder) moveBatch(in, out *ring.Socket) uint32 {
	rx, tx := in.RX(), out.TX()
	n, start := rx.Peek(batch)
	if n == 0 {
		return 0
	}
	got, ts := tx.Reserve(n)
	for i := uint32(0); i < got; i++ {
		// Shared UMEM: the descriptor moves, the bytes stay put.
		tx.Set(ts+i, rx.Desc(start+i))
	}
	var over [batch]uint64
	for i := got; i < n; i++ {
		over[i-got] = rx.Desc(start + i).Addr
	}
	rx.Release(n) // frames: fill -> app
	tx.Submit(got)
	for i := uint32(0); i < n-got; i++ {
		f.umem.Free(over[i])
	}
	out.KickTX()
	f.forwarded.Add(uint64(got))
	f.dropped.Add(uint64(n - got))
	return n
}

func (f *forwarder) housekeep() {
	for _, s := range []*ring.Socket{f.a, f.b} {
		s.Complete(1024)
		if s.TXPending() {
			s.KickTX() // copy mode sends only inside sendto, 32 at a time
		}
		s.Refill(1024)
		s.WakeFill()
	}
}

// run loops until stop is closed. It busy-polls and yields when idle.
func (f *forwarder) run(stop <-chan struct{}) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		select {
		case <-stop:
			return
		default:
		}
		for range 64 {
			moved := f.moveBatch(f.a, f.b) + f.moveBatch(f.b, f.a)
			f.housekeep()
			if moved == 0 {
				runtime.Gosched()
			}
		}
	}
}

// drain reaps the completions of frames still in flight after the loop
// stopped, until the TX places are empty.
func (f *forwarder) drain(t *testing.T) {
	deadline := time.Now().Add(2 * time.Second)
	for f.umem.Counts().TX > 0 && time.Now().Before(deadline) {
		for _, s := range []*ring.Socket{f.a, f.b} {
			s.KickTX()
			s.Complete(1024)
		}
		time.Sleep(time.Millisecond)
	}
	if c := f.umem.Counts(); c.TX != 0 {
		t.Errorf("after drain: %d frames still in TX", c.TX)
	}
}

func ifindex(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}

// setupPorts opens a shared UMEM with one socket per port (queue 0), loads
// and loads the program slow-only (--offload=off: every frame to the
// sockets) and attaches it to both ports, all inside the bridge namespace.
func setupPorts(t *testing.T, l *lab.Lab, cfg ring.Config, mode offload.Mode) (*ring.UMEM, port, port) {
	t.Helper()
	u, err := ring.NewUMEM(cfg)
	if err != nil {
		t.Fatalf("NewUMEM: %v", err)
	}
	ports := [2]port{{name: l.PortA}, {name: l.PortB}}
	prog, err := offload.Load(offload.Options{Queues: 4, SlowOnly: true, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ports[0].prog, ports[1].prog = prog, prog
	err = lab.Do(l.BridgeNS, func() error {
		for i := range ports {
			p := &ports[i]
			idx, err := ifindex(p.name)
			if err != nil {
				return err
			}
			if p.sock, err = u.Open(idx, 0); err != nil {
				return err
			}
			if err := p.prog.Register(i, 0, p.sock.FD()); err != nil {
				return err
			}
			if err := p.prog.Attach(i, p.name, mode); err != nil {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() {
		prog.Close()
		for _, p := range ports {
			if p.sock != nil {
				p.sock.Close()
			}
		}
		u.Close()
	})
	if err != nil {
		t.Fatalf("setup ports: %v", err)
	}
	return u, ports[0], ports[1]
}

func rxPackets(t *testing.T, l *lab.Lab, ns, ifc string) uint64 {
	t.Helper()
	n, err := l.IfStat(ns, ifc, "rx_packets")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// flood sends 64-byte-payload UDP datagrams from the left host to the right
// host for d and returns how many the left host's socket accepted.
func flood(t *testing.T, l *lab.Lab, d time.Duration) uint64 {
	t.Helper()
	var fd int
	err := l.Do(l.LeftNS, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: lab.RightIPv4.Addr().As4()})
	})
	if err != nil {
		t.Fatalf("flood socket: %v", err)
	}
	defer unix.Close(fd)
	payload := make([]byte, 18) // 14+20+8+18 = 60-byte frames: minimum size
	var sent uint64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for range 256 {
			if _, err := unix.Write(fd, payload); err == nil {
				sent++
			}
		}
	}
	return sent
}

// TestForwardEndToEnd runs the full AF_XDP path on a veth lab: the XDP
// program loaded slow-only (what --offload=off runs) on both ports, one UMEM shared by the sockets of port A and port B, and
// the forwarder above between them. Ping (with ARP) must work through it,
// the frame accounting must balance and no XDP program may be left behind.
// It also measures the forwarder with a 2-second UDP flood.
func TestForwardEndToEnd(t *testing.T) {
	for _, mode := range []offload.Mode{offload.Native, offload.Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			l := lab.NewT(t, lab.Options{})
			cfg := ring.DefaultConfig()
			u, pa, pb := setupPorts(t, l, cfg, mode)
			t.Logf("XDP %s; AF_XDP bind mode asked %v, got port A %v, port B %v",
				mode, cfg.Mode, pa.sock.Mode(), pb.sock.Mode())
			f := &forwarder{umem: u, a: pa.sock, b: pb.sock}
			f.housekeep() // fill both fill rings before traffic
			if err := u.Check(); err != nil {
				t.Fatalf("Check before traffic: %v", err)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); f.run(stop) }()
			stopped := false
			stopLoop := func() {
				if !stopped {
					close(stop)
					wg.Wait()
					stopped = true
				}
			}
			defer stopLoop()

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := l.Run(ctx, l.LeftNS, "ping", "-c", "3", "-i", "0.2", "-W", "2",
				lab.RightIPv4.Addr().String())
			if err != nil {
				t.Fatalf("ping through the forwarder: %v\n%s", err, out)
			}
			if !strings.Contains(out, "3 received") {
				t.Fatalf("ping got %q, want 3 received", out)
			}
			neigh, err := l.Run(ctx, l.LeftNS, "ip", "neigh", "show", lab.RightIPv4.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(neigh, l.RightMAC.String()) {
				t.Fatalf("left host's ARP entry got %q, want lladdr %s", neigh, l.RightMAC)
			}

			before := rxPackets(t, l, l.RightNS, l.RightIf)
			fwdBefore := f.forwarded.Load()
			const d = 2 * time.Second
			sent := flood(t, l, d)
			time.Sleep(50 * time.Millisecond) // let the last batch land
			got := rxPackets(t, l, l.RightNS, l.RightIf) - before
			fwd := f.forwarded.Load() - fwdBefore
			stopLoop()
			pps := float64(got) / d.Seconds()
			t.Logf("flood %v: left sent %d (%.0f pps), right received %d (%.0f pps, %.1f%%), forwarder moved %d, TX-full drops %d",
				d, sent, float64(sent)/d.Seconds(), got, pps, 100*float64(got)/float64(max(sent, 1)), fwd, f.dropped.Load())
			if got < sent/10 {
				t.Errorf("right host received %d of %d flood frames, want at least 10%%", got, sent)
			}

			f.drain(t)
			// The per-batch work, syscalls included, must not allocate.
			if a := testing.AllocsPerRun(100, func() {
				f.moveBatch(f.a, f.b)
				f.moveBatch(f.b, f.a)
				f.housekeep()
				f.a.KickTX()
			}); a != 0 {
				t.Errorf("forwarder batch allocs got %v, want 0", a)
			}
			f.drain(t)
			if err := u.Check(); err != nil {
				t.Errorf("Check after traffic: %v", err)
			}
			c := u.Counts()
			if c.App != 0 || c.TX != 0 || c.Free+c.Fill != c.Frames {
				t.Errorf("Counts after drain got %+v, want every frame free or in fill", c)
			}
			for _, p := range []port{pa, pb} {
				st, err := p.sock.Stats()
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s stats: %+v", p.name, st)
				if st.TxInvalidDescs != 0 || st.RxInvalidDescs != 0 {
					t.Errorf("%s: invalid descriptors: tx %d rx %d, want 0", p.name, st.TxInvalidDescs, st.RxInvalidDescs)
				}
			}

			for _, p := range []port{pa, pb} {
				if err := p.prog.Close(); err != nil {
					t.Errorf("Close program on %s: %v", p.name, err)
				}
				if att, id := attachedIn(t, l.BridgeNS, p.name); att {
					t.Errorf("after Close: XDP program id %d still on %s", id, p.name)
				}
				out, err := l.Run(ctx, l.BridgeNS, "ip", "link", "show", p.name)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(out, "xdp") {
					t.Errorf("ip link show %s after Close got %q, want no xdp", p.name, out)
				}
			}
		})
	}
}

// TestZeroCopyOnVeth: veth has no zero-copy AF_XDP; ModeZeroCopy must fail
// with ErrZeroCopy and ModeAuto must fall back to copy.
func TestZeroCopyOnVeth(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	for _, tc := range []struct {
		mode     ring.Mode
		wantErr  error
		wantMode ring.Mode
	}{
		{ring.ModeZeroCopy, ring.ErrZeroCopy, 0},
		{ring.ModeAuto, nil, ring.ModeCopy},
		{ring.ModeCopy, nil, ring.ModeCopy},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			cfg := ring.DefaultConfig()
			cfg.Mode = tc.mode
			u, err := ring.NewUMEM(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			err = lab.Do(l.BridgeNS, func() error {
				idx, err := ifindex(l.PortA)
				if err != nil {
					return err
				}
				// The previous subtest's socket held this queue; the
				// kernel unbinds it from a workqueue that needs RTNL,
				// which a loaded host (namespaces torn down by other
				// tests) can hold for longer than ring's one-second
				// retry: EBUSY for up to 30 s, as the datapath waits.
				var s *ring.Socket
				deadline := time.Now().Add(30 * time.Second)
				for {
					s, err = u.Open(idx, 0)
					if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if err != nil {
					return err
				}
				defer s.Close()
				if s.Mode() != tc.wantMode {
					return fmt.Errorf("mode got %v, want %v", s.Mode(), tc.wantMode)
				}
				return nil
			})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Open got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
