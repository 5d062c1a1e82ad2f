package bridge

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/statewire/statewire/offload"
	pt "github.com/statewire/statewire/packet/packettest"
)

// handoffFlows returns one 64-byte UDP frame from port A for each of n
// flows that worker 1 of dp owns, every flow already in its table (one
// frame each judged by worker 1).
func handoffFlows(b *testing.B, dp *Datapath, n int) [][]byte {
	b.Helper()
	w0, w1 := dp.workers[0], dp.workers[1]
	var frames [][]byte
	for i := 0; len(frames) < n; i++ {
		if i > 4*n {
			b.Fatalf("%d flows gave %d owned by worker 1, want %d", i, len(frames), n)
		}
		src := fmt.Sprintf("198.18.%d.%d", 1+(i>>16)&0x7f, (i>>8)&0xff)
		f := pt.UDP4(src, "198.19.0.2", uint16(1024+i&0xff), 53, make([]byte, 18))
		f = append(f, make([]byte, max(0, 60-len(f)))...)
		if w0.owner(f) == 1 {
			frames = append(frames, f)
		}
	}
	var res [MaxBatch]Result
	var marks [MaxBatch]offload.Mark
	opt := w1.pl.parseOptions()
	for base := 0; base < n; base += MaxBatch {
		batch := frames[base:min(base+MaxBatch, n)]
		for j, f := range batch {
			w1.pl.prepare(j, f, opt)
		}
		w1.pl.runPrepared(batch, marks[:len(batch)], PortA, sec, res[:len(batch)])
		for j := range batch {
			if res[j].Verdict != Accept {
				b.Fatalf("flow %d: first frame dropped: %+v", base+j, res[j])
			}
		}
	}
	return frames
}

// BenchmarkHandoff measures what a frame costs when the worker that
// received it does not own its flow, against the owner judging it itself
// (local): the receiver parses and steers it, saves the parse in its
// handoffRing and pushes the hand-off in batches (SPSC); the owner, on its
// own goroutine, pops the batch, judges it on the saved parses
// (runPrepared) and pushes the verdicts back; the receiver pops them. The
// UMEM, the TX rings and the kicks are left out (the same for both), so
// the difference is the hand-off itself: the steering parse that local
// needs too, one parse copy each way, two SPSC trips and the cache lines
// of the frame and its parse moving between CPUs. handoff runs both sides
// on one goroutine, batch after batch: its ns/op is the CPU a handed-off
// frame costs in all (receiver and owner together), without the cache
// lines changing CPUs. handoff-pair runs the owner on a goroutine of its
// own, both spinning on the rings as the workers do: pkts/s is frames
// through the pair, which on a loaded machine measures the scheduler as
// much as the hand-off (two spinning threads on 2 CPUs).
func BenchmarkHandoff(b *testing.B) {
	for _, flows := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("local/%d", flows), func(b *testing.B) { benchLocal(b, flows) })
		b.Run(fmt.Sprintf("handoff/%d", flows), func(b *testing.B) { benchHandoff(b, flows, false) })
		b.Run(fmt.Sprintf("handoff-pair/%d", flows), func(b *testing.B) { benchHandoff(b, flows, true) })
	}
}

func handoffDatapath(b *testing.B, flows int) *Datapath {
	b.Helper()
	c := validConfig()
	c.Cores, c.Queues = 2, 2
	c.Table.Seed = 42
	c.Table.Buckets = 1 << 18
	s := DefaultSettings()
	s.Rules = loadRules(b, newOnlyFromA)
	c.Settings = s
	dp, err := NewDatapath(c)
	if err != nil {
		b.Fatal(err)
	}
	return dp
}

func benchLocal(b *testing.B, flows int) {
	dp := handoffDatapath(b, flows)
	frames := arrivalStream(handoffFlows(b, dp, flows))
	w1 := dp.workers[1]
	opt := w1.pl.parseOptions()
	var res [MaxBatch]Result
	var marks [MaxBatch]offload.Mark
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for n := 0; n < b.N; n += MaxBatch {
		k := min(MaxBatch, len(frames)-i, b.N-n)
		batch := frames[i : i+k]
		for j, f := range batch {
			w1.pl.prepare(j, f, opt)
		}
		w1.pl.runPrepared(batch, marks[:k], PortA, 2*sec, res[:k])
		if i += k; i == len(frames) {
			i = 0
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

func benchHandoff(b *testing.B, flows int, pair bool) {
	dp := handoffDatapath(b, flows)
	frames := arrivalStream(handoffFlows(b, dp, flows))
	w0, w1 := dp.workers[0], dp.workers[1]
	total := (b.N + MaxBatch - 1) / MaxBatch * MaxBatch
	// The owner: serveRequests without the UMEM (h.addr is the frame's
	// index) and without its wake-ups.
	parses := w0.parsedOut[1].slots
	buf := make([]handoff, MaxBatch)
	var fr [MaxBatch][]byte
	var res [MaxBatch]Result
	var marks [MaxBatch]offload.Mark
	served := 0
	serve := func() {
		n := w1.reqIn[0].Pop(buf)
		if n == 0 {
			return
		}
		for m := range n {
			h := &buf[m]
			fr[m] = frames[h.addr]
			w1.pl.loadParsed(m, &parses[h.slot])
		}
		w1.pl.runPrepared(fr[:n], marks[:n], PortA, 2*sec, res[:n])
		for m := range n {
			buf[m].verdict, buf[m].drop = res[m].Verdict, res[m].Drop
		}
		for rest := buf[:n]; len(rest) > 0; {
			rest = rest[w1.repOut[0].Push(rest):]
		}
		served += n
	}
	var stop atomic.Bool
	done := make(chan int, 1)
	if pair {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for served < total && !stop.Load() {
				serve()
			}
			done <- served
		}()
	}
	opt := w0.pl.parseOptions()
	rep := make([]handoff, MaxBatch)
	r := &w0.parsedOut[1]
	ring := w0.reqOut[1]
	limit := dp.cfg.Handoff - MaxBatch
	pending, accepted := 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for sent := 0; sent < total; {
		for pending > limit {
			n := w0.repIn[1].Pop(rep)
			for _, h := range rep[:n] {
				if h.verdict == Accept {
					accepted++
				}
			}
			pending -= n
		}
		out := w0.outBuf[1][:0]
		for j := range MaxBatch {
			w0.pl.prepare(j, frames[i], opt)
			if o, _ := w0.steer(j, 2*sec); o != 1 {
				stop.Store(true)
				b.Fatalf("frame %d: owner %d, want 1", i, o)
			}
			slot := r.next & uint32(len(r.slots)-1)
			r.next++
			w0.pl.saveParsed(j, &r.slots[slot])
			out = append(out, handoff{addr: uint64(i), len: uint32(len(frames[i])), in: PortA, slot: slot})
			if i++; i == len(frames) {
				i = 0
			}
		}
		for rest := out; len(rest) > 0; {
			rest = rest[ring.Push(rest):]
		}
		pending += len(out)
		sent += len(out)
		w0.outBuf[1] = out[:0]
		if !pair {
			serve()
		}
	}
	if !pair {
		done <- served
	}
	for pending > 0 {
		n := w0.repIn[1].Pop(rep)
		for _, h := range rep[:n] {
			if h.verdict == Accept {
				accepted++
			}
		}
		pending -= n
	}
	b.StopTimer()
	if served := <-done; served != total || accepted != total {
		b.Fatalf("served %d, accepted %d of %d frames handed off", served, accepted, total)
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "pkts/s")
}
