package bridge

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// TestDatapathStepAllocs runs a manual two-worker datapath on a two-queue
// veth lab while the left host sends UDP over 32 flows, and checks that a
// worker loop iteration (RX batches, pipeline, hand-offs both ways, TX,
// housekeeping, expiry, snapshot service) allocates nothing, and that the
// accounting balances after Stop. Needs root.
func TestDatapathStepAllocs(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.Cores, c.Queues = 2, 2
	c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames = 512, 512, 512, 512, 2048
	c.Table.Buckets = 1024
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	dp.manual = true
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer dp.Stop()

	// 32 UDP flows from the left host, sent until the test is done.
	var fds []int
	err = l.Do(l.LeftNS, func() error {
		for range 32 {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
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
		payload := make([]byte, 18)
		for !stop.Load() {
			for _, fd := range fds {
				unix.Write(fd, payload)
			}
			time.Sleep(200 * time.Microsecond)
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
	// Warm up: ARP, entries for every flow, first hand-offs.
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
	st, err := dp.Stop()
	if err != nil {
		t.Errorf("Stop: %v", err)
	}
	a := st.Total(PortA)
	t.Logf("A->B: in %d, forwarded %d, dropped %d, via the other worker %d", a.RX, a.Forwarded, a.Dropped(), a.HandedOff)
	if a.HandedOff == 0 {
		t.Errorf("frames handed to the other worker got 0, want some (32 flows over 2 shards)")
	}
	if err := st.CheckConservation(); err != nil {
		t.Errorf("conservation: %v", err)
	}
}
