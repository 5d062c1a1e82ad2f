package hostile

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

const (
	floodMaxFlows = 4096
	floodSYNs     = 16 * floodMaxFlows // 65536 distinct spoofed sources and ports
)

// spoofedSYNs returns n SYNs to the right host's port 9 from distinct
// spoofed sources in 198.19.0.0/16 (inside 198.18.0.0/15, outside the
// lab's /24: the right host has no route back, so it answers nothing).
func spoofedSYNs(l *lab.Lab, n int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		src := fmt.Sprintf("198.19.%d.%d", i>>8&0xff, i&0xff)
		f := pt.TCP4(src, lab.RightIPv4.Addr().String(), uint16(1024+i%50000), 9,
			pt.TCPFields{Flags: packet.TCPSyn, Seq: uint32(i) * 7919, Window: 64240})
		copy(f[0:6], l.RightMAC)
		copy(f[6:12], injSrcMAC[:])
		frames[i] = f
	}
	return frames
}

// TestSYNFlood floods 16x --max-flows spoofed SYNs while two TCP
// connections carry data: the transfers complete intact, their entries
// stay ASSURED through the flood, the table never exceeds its maximum, and
// the flood's SYNs are all accounted for as inserts (after early drops) or
// table-full drops (which occur when the flood outruns the 95% sweep).
func TestSYNFlood(t *testing.T) {
	for _, cores := range []int{1, 2} {
		t.Run(fmt.Sprintf("cores=%d", cores), func(t *testing.T) {
			// 64 buckets per entry: early drop scans 8 buckets, which are
			// then often free of non-ASSURED entries, so both outcomes of
			// a full table (early drop, table-full drop) show up.
			r := newRig(t, rigOptions{cores: cores, maxFlows: floodMaxFlows, buckets: 64 * floodMaxFlows})
			l := r.Lab
			frames := spoofedSYNs(l, floodSYNs)
			inj := newInjector(t, l, l.LeftNS, l.LeftIf)

			const size = 4 << 20
			var xfers []*e2etest.PacedTransfer
			for i, a := range []string{"198.18.0.2:5001", "198.18.0.2:5002"} {
				xfers = append(xfers, e2etest.StartPacedTransfer(t, l, l.LeftNS, l.RightNS, a, size+i*(1<<20), 60*time.Millisecond))
			}
			// Both connections established and assured before the flood.
			testenv.WaitFor(5*time.Second, func() bool {
				for _, x := range xfers {
					if e, ok := r.entryOf(t, x.Local, x.Remote); !ok || e.Conn.Status&statemachine.StatusAssured == 0 {
						return false
					}
				}
				return true
			})
			for i, x := range xfers {
				e, ok := r.entryOf(t, x.Local, x.Remote)
				if !ok || e.Conn.Status&statemachine.StatusAssured == 0 {
					t.Fatalf("transfer %d before the flood: entry %v (found %v), want ASSURED", i, e.Conn.Status, ok)
				}
			}
			// Not settle: the transfers keep the counters moving.
			before := r.DP.Stats()
			tbBefore := r.DP.Table().Stats()

			// Sample the table while the flood runs.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var maxLen, samples, lost int
			start := time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(40 * time.Millisecond):
					}
					maxLen = max(maxLen, r.DP.Table().Len())
					samples++
					for i, x := range xfers {
						// A finished connection is in TIME_WAIT, which
						// early drop may evict like the kernel does.
						if !x.Active.Load() {
							continue
						}
						if e, ok := r.entryOf(t, x.Local, x.Remote); !ok || e.Conn.Status&statemachine.StatusAssured == 0 {
							if lost == 0 {
								t.Logf("transfer %d entry at sample %d: found %v, state %v, status %#x", i, samples, ok, e.Conn.State, e.Conn.Status)
								r.dumpLab(t)
							}
							lost++
						}
					}
				}
			}()
			if !xfers[0].Active.Load() || !xfers[1].Active.Load() {
				t.Fatalf("transfers finished before the flood began; lengthen them")
			}
			sent := inj.send(frames)
			activeAfter := xfers[0].Active.Load() && xfers[1].Active.Load()
			took := time.Since(start)
			close(stop)
			wg.Wait()

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for i, x := range xfers {
				if err := x.Wait(ctx); err != nil {
					t.Errorf("transfer %d (%d bytes) during the flood: %v", i, x.Size, err)
				}
			}
			after := r.settle(t)
			tb := r.DP.Table().Stats()
			maxLen = max(maxLen, int(tb.Count))

			newPkts := after.Pipeline.States[2] - before.Pipeline.States[2]
			full := after.Pipeline.Drops[bridge.DropTableFull] - before.Pipeline.Drops[bridge.DropTableFull]
			inserts := tb.Insert - tbBefore.Insert
			early := tb.EarlyDrop - tbBefore.EarlyDrop
			rxA := after.Total(bridge.PortA).RX - before.Total(bridge.PortA).RX
			kdrops := after.KernelDrops(bridge.PortA) - before.KernelDrops(bridge.PortA)
			t.Logf("flood: %d SYNs sent in %v (%.0f pps), bridge in on A %d (kernel drops %d, hand-off ring full %d); NEW %d = inserted %d + table-full %d (+%d other); early drops %d; table max observed %d of %d over %d samples; transfers %d and %d bytes",
				sent, took, float64(sent)/took.Seconds(), rxA, kdrops, after.Total(bridge.PortA).HandoffFull-before.Total(bridge.PortA).HandoffFull, newPkts, inserts, full, int64(newPkts)-int64(inserts+full), early, maxLen, floodMaxFlows, samples, xfers[0].Size, xfers[1].Size)

			if sent < floodSYNs*9/10 {
				t.Errorf("SYNs sent: got %d, want at least %d", sent, floodSYNs*9/10)
			}
			if maxLen > floodMaxFlows {
				t.Errorf("table length: max observed %d, want <= %d", maxLen, floodMaxFlows)
			}
			if !activeAfter {
				t.Errorf("a transfer finished before the flood ended, want both to outlast it")
			}
			if lost != 0 {
				t.Errorf("transfer entries missing or not ASSURED in %d of %d samples, want 0", lost, 2*samples)
			}
			if early == 0 {
				t.Errorf("early drops: got 0, want > 0")
			}
			// Whether the flood outruns the 95% sweep (and so meets a full
			// table) depends on the injection rate this machine reaches;
			// the table-full path itself is pinned by bridge's
			// TestTableFullKeepsAssured. Here: a table seen at its maximum
			// with 64 buckets an entry (early drop's 8-bucket scan mostly
			// finds nothing) must have refused SYNs.
			switch {
			case full == 0 && maxLen >= floodMaxFlows:
				t.Errorf("table seen full (%d of %d) but table-full drops: got 0, want > 0", maxLen, floodMaxFlows)
			case full == 0:
				t.Logf("no table-full drop: the sweep held the table at %d of %d at this flood rate", maxLen, floodMaxFlows)
			}
			// Every SYN that reached the pipeline is NEW and was either
			// inserted or dropped for a full table.
			// Frames the kernel dropped before the RX ring and frames a
			// worker could not hand to the owning worker (2 workers) never
			// reach a pipeline.
			handoffFull := after.Total(bridge.PortA).HandoffFull - before.Total(bridge.PortA).HandoffFull
			if lostBefore := kdrops + handoffFull; newPkts+lostBefore < uint64(sent) {
				t.Errorf("NEW packets: got %d, want >= %d (SYNs sent %d - kernel drops %d - hand-off ring full %d)", newPkts, uint64(sent)-lostBefore, sent, kdrops, handoffFull)
			}
			if d := int64(newPkts) - int64(inserts+full); d < 0 || d > 16 {
				t.Errorf("NEW %d - (inserted %d + table-full %d) = %d, want 0..16 (retransmitted SYNs only)", newPkts, inserts, full, d)
			}
			for i, x := range xfers {
				if e, ok := r.entryOf(t, x.Local, x.Remote); !ok {
					t.Logf("transfer %d after the flood: entry gone (closed: TIME_WAIT may be early-dropped)", i)
				} else {
					t.Logf("transfer %d entry after the flood: %v status %#x", i, e.Conn.State, e.Conn.Status)
				}
			}
		})
	}
}
