package bridge

import (
	"encoding/binary"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
	"golang.org/x/sys/unix"
)

// handshakeFrames is the three frames of a TCP handshake (SYN from port
// A, SYN/ACK from port B, ACK from port A) of 60 bytes each, for
// connection 0; setHandshakeConn makes them connection i's.
type handshakeFrames struct {
	syn, synack, ack []byte
}

func newHandshakeFrames() handshakeFrames {
	pad := func(f []byte) []byte { return append(f, make([]byte, 60-len(f))...) }
	src, dst := "198.18.0.0", "198.19.0.1"
	return handshakeFrames{
		syn:    pad(pt.TCP4(src, dst, 1024, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535})),
		synack: pad(pt.TCP4(dst, src, 80, 1024, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535})),
		ack:    pad(pt.TCP4(src, dst, 1024, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535})),
	}
}

// handshakeConn writes connection i's client address and port (198.18.x.x,
// 1024 + i mod 60 000) into the frames of one handshake. The checksums are
// left stale: the benchmarks run without checksum verification, as
// BenchmarkPipelineNewFlows.
func handshakeConn(syn, synack, ack []byte, i int) {
	addr, port := 0xc6120000|uint32(i/60000), uint16(1024+i%60000)
	binary.BigEndian.PutUint32(syn[26:30], addr)
	binary.BigEndian.PutUint16(syn[34:36], port)
	binary.BigEndian.PutUint32(ack[26:30], addr)
	binary.BigEndian.PutUint16(ack[34:36], port)
	binary.BigEndian.PutUint32(synack[30:34], addr)
	binary.BigEndian.PutUint16(synack[36:38], port)
}

// BenchmarkPipelineBatchHandshake measures new TCP connections per second
// through one pipeline, as the datapath sees them: batches of 64 SYNs from
// port A, then their 64 SYN/ACKs from port B, then the 64 ACKs from port A,
// every connection a fresh 5-tuple (parse, miss, insert, first verdict by
// the rules, then two updates of the new entry). One op is one connection
// (three frames); conns/s is the figure against the 5 M/s target.
func BenchmarkPipelineBatchHandshake(b *testing.B) {
	benchHandshake(b, false)
}

// BenchmarkPipelineBatchHandshakeEvents is BenchmarkPipelineBatchHandshake
// with the event ring on (statewire run's default: the control socket's
// event stream and the conntrackd sync read it): a NEW event per SYN and an
// update per state change.
func BenchmarkPipelineBatchHandshakeEvents(b *testing.B) {
	benchHandshake(b, true)
}

func benchHandshake(b *testing.B, events bool) {
	s := DefaultSettings()
	s.VerifyChecksum = false
	n := max(b.N, 1024) + MaxBatch
	pl := newTestPipeline(b, s, n+n/4)
	var ev *Events
	if events {
		ev = enableTestEvents(b, pl)
	}
	evBuf := make([]Event, 256)
	var syn, synack, ack [MaxBatch][]byte
	for j := range MaxBatch {
		h := newHandshakeFrames()
		syn[j], synack[j], ack[j] = h.syn, h.synack, h.ack
	}
	var out [MaxBatch]Result
	check := func(m int, what string, want statemachine.CtState) {
		for j := range m {
			if out[j].Verdict != Accept || out[j].State != want {
				b.Fatalf("%s %d: %+v", what, j, out[j])
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i += MaxBatch {
		m := min(MaxBatch, b.N-i)
		for j := range m {
			handshakeConn(syn[j], synack[j], ack[j], i+j)
		}
		pl.ProcessBatch(syn[:m], PortA, sec, out[:m])
		check(m, "SYN", statemachine.StateNew)
		pl.ProcessBatch(synack[:m], PortB, sec, out[:m])
		check(m, "SYN/ACK", statemachine.StateEstablished)
		pl.ProcessBatch(ack[:m], PortA, sec, out[:m])
		check(m, "ACK", statemachine.StateEstablished)
		if ev != nil {
			// The reader (the control server, on another core in
			// statewire run) drains here, inside the timing: the
			// figure is conservative.
			ev.Drain(evBuf, func([]Event) {})
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
	b.ReportMetric(3*float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	// CPU time per connection (user and system, the page faults of a
	// fresh table included): on a shared machine the wall-clock rate
	// moves with the neighbours, the CPU time much less.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/conn")
}

// processCPU returns the process's user and system CPU time in ns.
func processCPU() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// enableTestEvents subscribes a listener to pl's events for the test.
func enableTestEvents(tb testing.TB, pl *Pipeline) *Events {
	ev := pl.ctl.Events()
	ev.Subscribe(1)
	tb.Cleanup(ev.Unsubscribe)
	return ev
}

// TestHandshakeAllocs guards the NEW path: a fresh connection's three
// handshake frames allocate nothing, frame by frame and in batches, with
// and without the event ring.
func TestHandshakeAllocs(t *testing.T) {
	for _, events := range []bool{false, true} {
		s := DefaultSettings()
		s.VerifyChecksum = false
		pl := newTestPipeline(t, s, 1<<16)
		if events {
			enableTestEvents(t, pl)
		}
		h := newHandshakeFrames()
		i := 0
		if n := testing.AllocsPerRun(1000, func() {
			handshakeConn(h.syn, h.synack, h.ack, i)
			i++
			for _, f := range []struct {
				f  []byte
				in Port
			}{{h.syn, PortA}, {h.synack, PortB}, {h.ack, PortA}} {
				if r := pl.Process(f.f, 0, f.in, sec); r.Verdict != Accept {
					t.Fatalf("connection %d: %+v", i, r)
				}
			}
		}); n != 0 {
			t.Errorf("events %v: Process: %.1f allocations per connection, want 0", events, n)
		}
		var syn, synack, ack [MaxBatch][]byte
		for j := range MaxBatch {
			h := newHandshakeFrames()
			syn[j], synack[j], ack[j] = h.syn, h.synack, h.ack
		}
		var out [MaxBatch]Result
		if n := testing.AllocsPerRun(100, func() {
			for j := range MaxBatch {
				handshakeConn(syn[j], synack[j], ack[j], i)
				i++
			}
			pl.ProcessBatch(syn[:], PortA, sec, out[:])
			pl.ProcessBatch(synack[:], PortB, sec, out[:])
			pl.ProcessBatch(ack[:], PortA, sec, out[:])
			for j := range out {
				if out[j].Verdict != Accept || out[j].State != statemachine.StateEstablished {
					t.Fatalf("batch: %+v", out[j])
				}
			}
		}); n != 0 {
			t.Errorf("events %v: ProcessBatch: %.1f allocations per 64 connections, want 0", events, n)
		}
		if got, want := pl.Shard().Len(), i; got != want {
			t.Errorf("events %v: table holds %d connections, want %d", events, got, want)
		}
	}
}
