package bridge

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/rules"
	"golang.org/x/sys/unix"
)

// TestDatapathStepAllocs runs a manual two-worker datapath on a two-queue
// veth lab while the left host sends UDP over 32 flows, and checks that a
// worker loop iteration (RX batches, pipeline, hand-offs both ways, TX,
// housekeeping, expiry, snapshot service) allocates nothing, and that the
// accounting balances after Stop. Needs root.
func TestDatapathStepAllocs(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	dp := startLabDatapath(t, l, 512, 1024, "", true)

	// 32 UDP flows from the left host, sent until the test is done.
	var fds []int
	err := l.Do(l.LeftNS, func() error {
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
	st := stopLabDatapath(t, l, dp)
	if a := st.Total(PortA); a.HandedOff == 0 {
		t.Errorf("frames handed to the other worker got 0, want some (32 flows over 2 shards)")
	}
}

// startLabDatapath starts a two-worker datapath on l's two-queue ports:
// every AF_XDP ring of ring entries, 4*ring UMEM frames per queue, a table
// of buckets buckets, the rules of policy (iptables-save text, "porta"
// replaced by port A's name; "" accepts everything), driven by the test
// (manual: Datapath.step) or by its own workers. The test stops it with
// stopLabDatapath; a cleanup stops it if the test ends first.
func startLabDatapath(t *testing.T, l *lab.Lab, ring, buckets int, policy string, manual bool) *Datapath {
	t.Helper()
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.Cores, c.Queues = 2, 2
	c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames = ring, ring, ring, ring, 4*ring
	c.Table.Buckets = buckets
	c.Logf = t.Logf
	if policy != "" {
		rs, err := rules.FromText("lab.rules", strings.ReplaceAll(policy, "porta", l.PortA), [2]string{l.PortA, l.PortB})
		if err != nil {
			t.Fatalf("rules: %v", err)
		}
		s := DefaultSettings()
		s.Rules = rs
		c.Settings = s
	}
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	dp.manual = manual
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { dp.Stop() }) // a no-op after stopLabDatapath
	return dp
}

// startDatapath starts a datapath of cores workers and queues on l's
// ports, configured further by set, and stops it when the test ends.
func startDatapath(t *testing.T, l *lab.Lab, cores int, set func(*DatapathConfig)) *Datapath {
	t.Helper()
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.Cores, c.Queues = cores, cores
	c.Logf = t.Logf
	set(&c)
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { dp.Stop() })
	return dp
}

// smallRings gives c 512-entry rings and 2048 UMEM frames a queue.
func smallRings(c *DatapathConfig) {
	c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames = 512, 512, 512, 512, 2048
}

// stopLabDatapath stops dp and checks Stop's error, nothing in flight,
// frame conservation and no XDP program left on l's ports; it logs each
// direction's counters and returns the totals.
func stopLabDatapath(t *testing.T, l *lab.Lab, dp *Datapath) DatapathStats {
	t.Helper()
	st, err := dp.Stop()
	if err != nil {
		t.Errorf("Stop: %v", err)
	}
	for _, p := range []Port{PortA, PortB} {
		c := st.Total(p)
		t.Logf("%s->%s: in %d, forwarded %d, dropped %d (%s), via the other worker %d",
			p, p.Other(), c.RX, c.Forwarded, c.Dropped(), c.DropList(), c.HandedOff)
		if c.InFlight != 0 {
			t.Errorf("%s: %d frames in flight after Stop, want 0", p, c.InFlight)
		}
	}
	if err := st.CheckConservation(); err != nil {
		t.Errorf("conservation: %v", err)
	}
	if err := l.CheckNoXDP(); err != nil {
		t.Errorf("after Stop: %v", err)
	}
	return st
}
