package bridge

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/statewire/statewire/internal/sched"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/ring"
)

func validConfig() DatapathConfig {
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = "eth0", "eth1"
	return c
}

func TestDatapathConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*DatapathConfig)
		wantErr string // "" means valid
	}{
		{"defaults", func(*DatapathConfig) {}, ""},
		{"zero values take defaults", func(c *DatapathConfig) { *c = DatapathConfig{PortA: "a", PortB: "b"} }, ""},
		{"four cores eight queues", func(c *DatapathConfig) { c.Cores, c.Queues = 4, 8 }, ""},
		{"port A missing", func(c *DatapathConfig) { c.PortA = "" }, "both ports must be named"},
		{"same port", func(c *DatapathConfig) { c.PortB = c.PortA }, "must differ"},
		{"negative cores", func(c *DatapathConfig) { c.Cores = -1 }, "cores -1"},
		{"fewer queues than cores", func(c *DatapathConfig) { c.Cores, c.Queues = 4, 2 }, "queues 2 fewer than cores 4"},
		{"too many queues", func(c *DatapathConfig) { c.Queues = 65 }, "queues 65"},
		{"batch too large", func(c *DatapathConfig) { c.Batch = 1024 }, "batch 1024"},
		{"batch over RX ring", func(c *DatapathConfig) { c.RXSize, c.Batch = 128, 256 }, "larger than the RX ring"},
		{"RX ring not a power of two", func(c *DatapathConfig) { c.RXSize = 1000 }, "RXSize 1000"},
		{"TX ring not a power of two", func(c *DatapathConfig) { c.TXSize = 3 }, "TXSize 3"},
		{"fill ring not a power of two", func(c *DatapathConfig) { c.FillSize = 1500 }, "FillSize 1500"},
		{"completion ring not a power of two", func(c *DatapathConfig) { c.CompletionSize = 100 }, "CompletionSize 100"},
		{"frame size", func(c *DatapathConfig) { c.FrameSize = 1500 }, "FrameSize 1500"},
		{"too few frames", func(c *DatapathConfig) { c.Frames = 4096 }, "need at least 2*(fill 2048 + tx 2048) = 8192"},
		{"handoff not a power of two", func(c *DatapathConfig) { c.Handoff = 1000 }, "handoff ring size 1000"},
		{"attach mode", func(c *DatapathConfig) { c.Attach = offload.Mode(7) }, "attach mode 7"},
		{"fail-open without a name", func(c *DatapathConfig) { c.FailOpen = true }, "fail-open needs the bridge's name"},
		{"name not a directory", func(c *DatapathConfig) { c.Name = "a/b" }, "cannot name a bpffs directory"},
		{"offload mode", func(c *DatapathConfig) { c.Offload = OffloadMode(9) }, "offload mode 9"},
		{"offload flows", func(c *DatapathConfig) { c.OffloadFlows = -1 }, "offload flows -1"},
		{"bind mode", func(c *DatapathConfig) { c.XDPMode = ring.Mode(9) }, "Mode 9"},
		{"one CPU per worker", func(c *DatapathConfig) { c.CPUs = []int{0} }, ""},
		{"CPUs for fewer workers", func(c *DatapathConfig) { c.Cores, c.Queues, c.CPUs = 2, 2, []int{0} }, "1 CPUs listed for 2 workers"},
		{"CPU out of range", func(c *DatapathConfig) { c.CPUs = []int{4096} }, "CPU 4096: not one this process may run on (CPUs 0-"},
		{"CPU negative", func(c *DatapathConfig) { c.CPUs = []int{-1} }, "CPU -1: not one"},
		{"CPU twice", func(c *DatapathConfig) { c.Cores, c.Queues, c.CPUs = 2, 2, []int{0, 0} }, "CPU 0 listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate got %v, want nil", err)
			case tc.wantErr == "":
				return
			case err == nil:
				t.Fatalf("Validate got nil, want an error containing %q", tc.wantErr)
			case !errors.Is(err, ErrDatapathConfig):
				t.Errorf("Validate got %v, want it to wrap ErrDatapathConfig", err)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("Validate got %q, want it to contain %q", err, tc.wantErr)
			}
			if _, nerr := NewDatapath(c); nerr == nil {
				t.Errorf("NewDatapath accepted a config Validate refuses")
			}
		})
	}
}

// TestDatapathConfigCPUsAllowed: --cpus is checked against the CPUs the
// process may run on (taskset), not 0..NumCPU-1: on a thread allowed CPU 1
// only, CPU 1 is accepted and CPU 0 refused with the allowed list.
func TestDatapathConfigCPUsAllowed(t *testing.T) {
	if runtime.NumCPU() < 2 {
		testenv.Unavailable(t, "needs two CPUs")
	}
	type result struct{ ok, refused error }
	res := make(chan result, 1)
	go func() {
		// Exits locked: the runtime ends the pinned thread.
		runtime.LockOSThread()
		if err := sched.Pin(1); err != nil {
			res <- result{ok: err}
			return
		}
		c := validConfig()
		c.CPUs = []int{1}
		ok := c.Validate()
		c.CPUs = []int{0}
		res <- result{ok, c.Validate()}
	}()
	r := <-res
	if r.ok != nil {
		t.Fatalf("CPU 1 on a thread allowed CPU 1: %v", r.ok)
	}
	if r.refused == nil || !strings.Contains(r.refused.Error(), "CPU 0: not one this process may run on (CPUs 1,") {
		t.Errorf("CPU 0 on a thread allowed CPU 1 only: got %v, want it refused naming CPUs 1", r.refused)
	}
}

func TestCheckInterfaces(t *testing.T) {
	for _, tc := range []struct {
		name, a, b, wantErr string
	}{
		{"missing port", "sw-no-such-port", "lo", `port A "sw-no-such-port"`},
		// lo has an MTU of 65536: more than 18 buffers of 2048-byte
		// frames hold (the kernel chains at most 18).
		{"MTU over frame size", "lo", "sw-no-such-port-2", `port A "lo": MTU 65536 is too large`},
		{"largest MTU", "lo", "sw-no-such-port-2", "the largest MTU that works is 32234 (ip link set dev lo mtu 32234)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig().withDefaults()
			c.PortA, c.PortB = tc.a, tc.b
			c.FrameSize = 2048
			_, err := c.checkInterfaces()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("checkInterfaces got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestSteering: both directions of a flow, and the ICMP errors quoting it,
// are processed by the same worker (the owner of the flow's shard); frames
// without a key stay where they arrived.
func TestSteering(t *testing.T) {
	c := validConfig()
	c.Cores, c.Queues = 4, 4
	c.Table.Seed = 42
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	w := dp.workers[0]
	owners := map[int]int{}
	for sport := uint16(1000); sport < 1200; sport++ {
		fwd := packettest.UDP4("198.18.0.1", "198.18.0.2", sport, 53, []byte("q"))
		rev := packettest.UDP4("198.18.0.2", "198.18.0.1", 53, sport, []byte("a"))
		unreach := packettest.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 3, packettest.Quote(fwd, 64))
		o := w.owner(fwd)
		if o < 0 || o >= c.Cores {
			t.Fatalf("sport %d: owner got %d, want a worker in [0, %d)", sport, o, c.Cores)
		}
		if got := w.owner(rev); got != o {
			t.Errorf("sport %d: reply owner got %d, want %d (the original's)", sport, got, o)
		}
		if got := w.owner(unreach); got != o {
			t.Errorf("sport %d: ICMP error owner got %d, want %d (the quoted flow's)", sport, got, o)
		}
		owners[o]++
	}
	if len(owners) != c.Cores {
		t.Errorf("200 flows spread over %d workers (%v), want all %d", len(owners), owners, c.Cores)
	}
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	for i, wk := range dp.workers {
		if got := wk.owner(arp); got != i {
			t.Errorf("ARP on worker %d: owner got %d, want %d (stays local)", i, got, i)
		}
	}
	if a := testing.AllocsPerRun(100, func() {
		w.owner(packettest.UDP4("198.18.0.1", "198.18.0.2", 7, 7, nil))
	}); a > 1 {
		// The frame builder allocates once; owner must add nothing.
		t.Errorf("owner allocs got %v, want at most the frame's 1", a)
	}
}

// finalTotals makes s the totals of a stopped datapath: the in-flight frame
// forwarded, every TX submission completed but the last stuck on B's ring.
func finalTotals(s *DatapathStats, stuck uint64) {
	s.Final = true
	s.Queues[1].Port[PortA].InFlight = 0
	s.Queues[1].Port[PortA].Forwarded++
	s.Queues[1].Socket[PortB].TX++
	for i := range s.Queues {
		for p := range s.Queues[i].Socket {
			// One buffer per frame; TestCheckConservationMultiBuffer
			// has frames of several.
			s.Queues[i].Socket[p].TXBuffers = s.Queues[i].Socket[p].TX
			s.Queues[i].Socket[p].Completed = s.Queues[i].Socket[p].TX
		}
	}
	s.Queues[1].Socket[PortB].Completed -= stuck
}

// TestCheckConservationMultiBuffer: frames of several buffers count once
// as forwarded and submitted, and once per buffer on the completion ring
// and in Unsent; a lost buffer is caught.
func TestCheckConservationMultiBuffer(t *testing.T) {
	var s DatapathStats
	s.Final = true
	s.Queues = make([]QueueStats, 1)
	s.Queues[0].Port[PortA] = PortCounters{RX: 4, Forwarded: 4}
	s.Queues[0].Socket[PortB].TX = 4        // frames
	s.Queues[0].Socket[PortB].TXBuffers = 9 // three of 2, one of 3 buffers
	s.Queues[0].Socket[PortB].Completed = 7
	s.Queues[0].Unsent[PortB] = 2
	if err := s.CheckConservation(); err != nil {
		t.Fatalf("CheckConservation got %v, want nil", err)
	}
	s.Queues[0].Unsent[PortB] = 1
	want := "direction A->B: 9 buffers submitted on B's TX rings, 7 completed + 1 unsent at stop"
	if err := s.CheckConservation(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckConservation got %v, want an error containing %q", err, want)
	}
}

func TestDropList(t *testing.T) {
	var c PortCounters
	if got := c.DropList(); got != "" {
		t.Errorf("no drops: got %q, want empty", got)
	}
	c.Drops[DropRule], c.Drops[DropTableFull], c.HandoffFull = 3, 1, 2
	if got, want := c.DropList(), "rule=3 table-full=1 handoff-full=2"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCheckConservation(t *testing.T) {
	base := func() DatapathStats {
		var s DatapathStats
		s.Queues = make([]QueueStats, 2)
		s.Queues[0].Port[PortA] = PortCounters{RX: 10, Forwarded: 7, HandoffFull: 1}
		s.Queues[0].Port[PortA].Drops[DropRule] = 2
		s.Queues[1].Port[PortA] = PortCounters{RX: 5, Forwarded: 4, InFlight: 1}
		s.Queues[0].Socket[PortB].TX = 6
		s.Queues[1].Socket[PortB].TX = 5
		s.Queues[0].Port[PortB] = PortCounters{RX: 3, Forwarded: 3}
		s.Queues[1].Socket[PortA].TX = 3
		return s
	}
	for _, tc := range []struct {
		name    string
		mod     func(*DatapathStats)
		wantErr string
	}{
		{"balanced", func(*DatapathStats) {}, ""},
		{"a frame lost A to B", func(s *DatapathStats) { s.Queues[1].Port[PortA].RX++ }, "direction A->B: 16 frames in, 15 out"},
		{"an uncounted send on A", func(s *DatapathStats) { s.Queues[0].Socket[PortA].TX++ }, "direction B->A: 3 frames forwarded but 4 submitted"},
		{"final, all completed", func(s *DatapathStats) { finalTotals(s, 0) }, ""},
		{"final, two left on B's TX ring, counted", func(s *DatapathStats) {
			finalTotals(s, 2)
			s.Queues[1].Unsent[PortB] = 2
		}, ""},
		{"final, two left on B's TX ring, not counted", func(s *DatapathStats) { finalTotals(s, 2) },
			"direction A->B: 12 buffers submitted on B's TX rings, 10 completed + 0 unsent at stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.mod(&s)
			err := s.CheckConservation()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckConservation got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckConservation got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestMultiBufferError: when a port's MTU needs chained buffers and the
// driver or mode refuses them, the message names the port, its MTU, what
// failed and the largest MTU that works without chaining, with the command
// that sets it.
func TestMultiBufferError(t *testing.T) {
	c := validConfig().withDefaults()
	c.PortA, c.PortB, c.FrameSize = "lo", "lo2", 4096
	err := c.multiBufferError(PortA, "attach XDP", errors.New("numerical result out of range"))
	for _, want := range []string{`attach XDP on port A "lo": numerical result out of range`, "its MTU 65536",
		"cannot chain buffers (multi-buffer)", "the largest MTU that works here is 3818 (ip link set dev lo mtu 3818)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
