package bridge

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
)

// BenchmarkDumpDip1M measures what a full `conntrack -L` of a 1M-entry
// table costs forwarding. A worker goroutine (locked to its thread) runs
// the datapath loop's table work: ProcessBatch of established frames in a
// random flow order, Expire and ServeRequests with the datapath's budgets.
// Each iteration measures the worker's rate for as long as one dump takes
// with nobody reading, then during a Table.Snapshot whose callback formats
// every entry as the control server does for -L. Reported: pkts/s idle
// and during the dump, the dip in percent, the dump's entries/s. Run with
// -benchtime=Nx (each iteration is two dumps' time, about a second).
// BenchmarkDumpDip1MCopyOnly is the same with a reader that only counts,
// to separate the worker's copying from the formatter's competition for
// cores and memory.
func BenchmarkDumpDip1M(b *testing.B) { benchDumpDip(b, true) }

// BenchmarkDumpDip1MCopyOnly: see BenchmarkDumpDip1M.
func BenchmarkDumpDip1MCopyOnly(b *testing.B) { benchDumpDip(b, false) }

func benchDumpDip(b *testing.B, format bool) {
	const flows = 1_000_000
	pl, frames := establishedFlows(b, flows, false)
	stream := arrivalStream(frames)
	var count atomic.Uint64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(done)
		var out [MaxBatch]Result
		next := 0
		for !stop.Load() {
			if next+MaxBatch > len(stream) {
				next = 0
			}
			pl.ProcessBatch(stream[next:next+MaxBatch], PortA, 2*sec, out[:])
			next += MaxBatch
			pl.Shard().Expire(2*sec, expireBudget)
			pl.Shard().ServeRequests(readBudget)
			count.Add(MaxBatch)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	rate := func(fn func()) (float64, time.Duration) {
		c0, t0 := count.Load(), time.Now()
		fn()
		d := time.Since(t0)
		return float64(count.Load()-c0) / d.Seconds(), d
	}
	var idle, dumping, dumpRate float64
	b.ResetTimer()
	for range b.N {
		n := 0
		var sink int
		pd, d := rate(func() {
			err := pl.table.Snapshot(context.Background(), func(es *flowtable.EntrySnapshot) {
				if format {
					sink += len(ctlist.Line(es, 2*sec, ctlist.Conntrack))
				} else {
					sink += int(es.Orig.Proto)
				}
				n++
			})
			if err != nil {
				b.Fatal(err)
			}
		})
		if n != flows || sink == 0 {
			b.Fatalf("dump listed %d entries, want %d", n, flows)
		}
		pi, _ := rate(func() { time.Sleep(d) })
		idle += pi
		dumping += pd
		dumpRate += float64(n) / d.Seconds()
	}
	b.StopTimer()
	k := float64(b.N)
	b.ReportMetric(idle/k, "pkts/s-idle")
	b.ReportMetric(dumping/k, "pkts/s-dump")
	b.ReportMetric(100*(1-dumping/idle), "dip-%")
	b.ReportMetric(dumpRate/k, "entries/s")
}
