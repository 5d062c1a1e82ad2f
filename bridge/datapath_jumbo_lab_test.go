package bridge

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// TestDatapathJumboStepAllocs is TestDatapathStepAllocs with MTU 9000 and
// 8000-byte UDP datagrams (8042-byte frames: the frame size derived from
// the MTU is 4096, so three buffers of up to 3840 bytes each): a worker loop iteration that receives,
// gathers (for the pipeline, checksums verified), hands off, forwards and
// frees chains of buffers allocates nothing; the chains really were
// chains (more buffers than frames through the sockets), both workers
// judged some for each other, every frame is conserved and counted once,
// and the right host received the datagrams whole. Needs root.
func TestDatapathJumboStepAllocs(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2, MTU: 9000})
	dp := startLabDatapath(t, l, 512, 1024, "", true)
	if !dp.cfg.multiBuffer || dp.cfg.wireMax != 9000+l2Overhead || dp.cfg.FrameSize != 4096 {
		t.Fatalf("multi-buffer %v, largest frame %d, frame size %d: want on, %d, 4096", dp.cfg.multiBuffer, dp.cfg.wireMax, dp.cfg.FrameSize, 9000+l2Overhead)
	}
	if s := DefaultSettings(); !s.VerifyChecksum {
		t.Fatalf("the default settings do not verify checksums: the test would not cover gathering for them")
	}
	const size = 8000
	var sink int
	err := l.Do(l.RightNS, func() (err error) {
		sink, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(sink, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		return unix.Bind(sink, &unix.SockaddrInet4{Port: 9})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sink)
	var fds []int
	err = l.Do(l.LeftNS, func() error {
		for range 32 {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			// Never fragment: a datagram that did not fit would
			// fail here rather than reach the bridge in pieces.
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: lab.RightIPv4.Addr().As4()}); err != nil {
				return err
			}
		}
		return nil
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		payload := make([]byte, size)
		fill(payload)
		for !stop.Load() {
			for _, fd := range fds {
				unix.Write(fd, payload)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	stepAll := func() int {
		n := 0
		for _, w := range dp.workers {
			m, _ := w.step(dp.Now())
			n += m
		}
		return n
	}
	moved := 0
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		moved += stepAll()
	}
	if moved == 0 {
		t.Fatal("no frame moved during warm-up")
	}
	allocs := testing.AllocsPerRun(2000, func() { stepAll() })
	stop.Store(true)
	wg.Wait()
	if allocs != 0 {
		t.Errorf("worker step allocs got %v, want 0", allocs)
	}
	// Drain what is still on the way, then read the sink.
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		stepAll()
	}
	got, bad := 0, 0
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(sink, buf, 0)
		if err != nil {
			break
		}
		got++
		if n != size || !intact(buf[:n]) {
			bad++
		}
	}
	st := stopLabDatapath(t, l, dp)
	var frames, buffers uint64
	for _, q := range st.Queues {
		frames += q.Socket[PortA].RX
		buffers += q.Socket[PortA].RXBuffers
	}
	a := st.Total(PortA)
	t.Logf("A: %d frames in %d buffers, %d forwarded, %d via the other worker; right host got %d datagrams", frames, buffers, a.Forwarded, a.HandedOff, got)
	if frames == 0 || buffers < 2*frames {
		t.Errorf("port A sockets: %d frames in %d buffers, want most in chains of 3 buffers", frames, buffers)
	}
	if a.HandedOff == 0 {
		t.Errorf("frames handed to the other worker got 0, want some (32 flows over 2 shards)")
	}
	if got == 0 || bad != 0 {
		t.Errorf("right host received %d datagrams, %d of them not the %d bytes sent; want some, all whole", got, bad, size)
	}
}

// TestDatapathMTUTooLarge: a port whose MTU needs more buffers than the
// kernel chains (18 of 1792 bytes with --frame-size 2048) stops Start with
// a message that names the port, its MTU and the largest MTU that works.
func TestDatapathMTUTooLarge(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 1, MTU: 40000})
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.FrameSize = 2048
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	err = l.Do(l.BridgeNS, dp.Start)
	if err == nil {
		dp.Stop()
		t.Fatal("Start with MTU 40000 succeeded, want an error")
	}
	for _, want := range []string{"port A", l.PortA, "MTU 40000", "largest MTU that works is 32234", "mtu 32234"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error %q does not say %q", err, want)
		}
	}
	if err := l.CheckNoXDP(); err != nil {
		t.Error(err)
	}
}

// fill writes the test pattern (byte i is i*31 mod 256) that intact checks.
func fill(b []byte) {
	for i := range b {
		b[i] = byte(i * 31)
	}
}

func intact(b []byte) bool {
	for i := range b {
		if b[i] != byte(i*31) {
			return false
		}
	}
	return true
}
