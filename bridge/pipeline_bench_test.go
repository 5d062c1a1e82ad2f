package bridge

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// flowFrames returns n established-TCP data frames of 64 bytes on the wire
// (no payload), one per connection, and a pipeline in which all n
// connections went through a real handshake.
func establishedFlows(b *testing.B, n int, checksum bool) (*Pipeline, [][]byte) {
	b.Helper()
	s := DefaultSettings()
	s.VerifyChecksum = checksum
	pl := newTestPipeline(b, s, n+n/4)
	frames := make([][]byte, n)
	for i := range n {
		src := fmt.Sprintf("198.18.%d.%d", 1+(i>>16)&0x7f, (i>>8)&0xff)
		dst := fmt.Sprintf("198.19.%d.%d", (i>>8)&0xff, i&0xff)
		sport, dport := uint16(1024+i%50000), uint16(80)
		syn := pt.TCP4(src, dst, sport, dport, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535})
		synack := pt.TCP4(dst, src, dport, sport, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535})
		ack := pt.TCP4(src, dst, sport, dport, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535})
		for _, f := range [][]byte{syn, synack, ack} {
			if r := pl.Process(f, 0, PortA, sec); r.Verdict != Accept {
				b.Fatalf("flow %d: handshake dropped: %+v", i, r)
			}
		}
		// Pad to the 64-byte minimum frame (60 + FCS) the datapath sees.
		frames[i] = append(ack, make([]byte, 60-len(ack))...)
	}
	if got := pl.Shard().Len(); got != n {
		b.Fatalf("table has %d flows, want %d", got, n)
	}
	return pl, frames
}

// arrivalStream lays the frames of all flows out back to back in one
// buffer, in a random order of flows, the way frames sit in a receive ring:
// the benchmark then reads frames sequentially (as the datapath does) while
// the flows, and so the table accesses, are random.
func arrivalStream(frames [][]byte) [][]byte {
	n := len(frames)
	buf := make([]byte, 64*n)
	out := make([][]byte, n)
	idx := uint32(12345)
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	for i := n - 1; i > 0; i-- {
		idx = idx*1664525 + 1013904223
		j := int(idx>>8) % (i + 1)
		perm[i], perm[j] = perm[j], perm[i]
	}
	for i, f := range perm {
		slot := buf[64*i : 64*i+64]
		copy(slot, frames[f])
		out[i] = slot[:len(frames[f])]
	}
	return out
}

// benchEstablished runs batches of 64 frames of flows in a random order (so
// the table is not walked in insertion order), one Process call a frame.
func benchEstablished(b *testing.B, flows int, checksum bool) {
	pl, frames := establishedFlows(b, flows, checksum)
	stream := arrivalStream(frames)
	const batch = 64
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	next := 0
	for i := 0; i < b.N; i += batch {
		for j := 0; j < batch; j++ {
			r := pl.Process(stream[next], 0, PortA, 2*sec)
			if next++; next == len(stream) {
				next = 0
			}
			if r.Verdict != Accept {
				b.Fatal("dropped an established packet")
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	// CPU time per frame: on a shared machine the wall-clock rate
	// moves with the neighbours (a frame waits while they run), the
	// CPU time much less; compare code changes on it.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/pkt")
}

// benchEstablishedBatch is benchEstablished through ProcessBatch, as the
// datapath calls it.
func benchEstablishedBatch(b *testing.B, flows int, checksum bool) {
	pl, frames := establishedFlows(b, flows, checksum)
	stream := arrivalStream(frames)
	var out [MaxBatch]Result
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	next := 0
	for i := 0; i < b.N; i += MaxBatch {
		if next+MaxBatch > len(stream) {
			next = 0
		}
		pl.ProcessBatch(stream[next:next+MaxBatch], PortA, 2*sec, out[:])
		next += MaxBatch
		for j := range out {
			if out[j].Verdict != Accept {
				b.Fatal("dropped an established packet")
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	// CPU time per frame: on a shared machine the wall-clock rate
	// moves with the neighbours (a frame waits while they run), the
	// CPU time much less; compare code changes on it.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/pkt")
}

func BenchmarkPipelineBatchEstablished10k(b *testing.B) { benchEstablishedBatch(b, 10_000, false) }
func BenchmarkPipelineBatchEstablished1M(b *testing.B)  { benchEstablishedBatch(b, 1_000_000, false) }

func BenchmarkPipelineEstablished10k(b *testing.B) { benchEstablished(b, 10_000, false) }
func BenchmarkPipelineEstablished10kChecksum(b *testing.B) {
	benchEstablished(b, 10_000, true)
}
func BenchmarkPipelineEstablished1M(b *testing.B) { benchEstablished(b, 1_000_000, false) }

// BenchmarkPipelineNewFlows measures connection creation: a UDP packet of a
// new flow each time, in a table large enough not to fill.
func BenchmarkPipelineNewFlows(b *testing.B) {
	s := DefaultSettings()
	s.VerifyChecksum = false
	n := b.N
	if n < 1024 {
		n = 1024
	}
	pl := newTestPipeline(b, s, n+n/4)
	f := pt.UDP4("198.18.0.1", "198.19.0.1", 1, 53, nil)
	f = append(f, make([]byte, 60-len(f))...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		binary.BigEndian.PutUint32(f[26:30], 0xc6120000|uint32(i>>16)) // source address
		binary.BigEndian.PutUint16(f[34:36], uint16(i))                // source port
		if r := pl.Process(f, 0, PortA, sec); r.State != 2 /* NEW */ {
			b.Fatalf("packet %d: %+v", i, r)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkPipelineBatchNewFlows is BenchmarkPipelineNewFlows through
// ProcessBatch, 64 new flows a batch, as the datapath receives them.
func BenchmarkPipelineBatchNewFlows(b *testing.B) {
	s := DefaultSettings()
	s.VerifyChecksum = false
	n := max(b.N, 1024)
	pl := newTestPipeline(b, s, n+n/4)
	var frames [MaxBatch][]byte
	for j := range frames {
		f := pt.UDP4("198.18.0.1", "198.19.0.1", 1, 53, nil)
		frames[j] = append(f, make([]byte, 60-len(f))...)
	}
	var out [MaxBatch]Result
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += MaxBatch {
		m := min(MaxBatch, b.N-i)
		for j := range m {
			f, id := frames[j], i+j
			binary.BigEndian.PutUint32(f[26:30], 0xc6120000|uint32(id>>16)) // source address
			binary.BigEndian.PutUint16(f[34:36], uint16(id))                // source port
		}
		pl.ProcessBatch(frames[:m], PortA, sec, out[:m])
		for j := range m {
			if out[j].State != 2 /* NEW */ {
				b.Fatalf("packet %d: %+v", i+j, out[j])
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}
