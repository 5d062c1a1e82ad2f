package flowtable

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/statewire/statewire/packet"
)

// benchTable fills one shard with n UDP flows and returns it with the keys
// and hashes in a random order (so lookups miss the cache as traffic does).
// The tables are built once per size and shared by the benchmarks, which
// only look up (expiry is far in the future).
func benchTable(b *testing.B, n int) (*Table, *Shard, []Key, []uint64) {
	b.Helper()
	if bt, ok := benchTables[n]; ok {
		return bt.tb, bt.tb.Shard(0), bt.keys, bt.hashes
	}
	tb := newTable(b, Config{MaxEntries: n, Buckets: n, Shards: 1, Prefault: true})
	s := tb.Shard(0)
	keys := make([]Key, n)
	hashes := make([]uint64, n)
	for i, j := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		k, tu := udpFlow(j)
		h := tb.HashKey(&k)
		e, _ := s.Insert(&k, h, &tu, 0)
		e.Conn.Expires = 1 << 62
		keys[i], hashes[i] = k, h
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(n, func(i, j int) {
		keys[i], keys[j] = keys[j], keys[i]
		hashes[i], hashes[j] = hashes[j], hashes[i]
	})
	benchTables[n] = benchTableData{tb, keys, hashes}
	return tb, s, keys, hashes
}

type benchTableData struct {
	tb     *Table
	keys   []Key
	hashes []uint64
}

var benchTables = map[int]benchTableData{}

func pktsPerSec(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "pkts/s")
}

var sizes = []int{10_000, 1_000_000}

// nextBatch advances i past one batch of the n keys, wrapping before a
// batch would run off the end.
func nextBatch(i, n int) int {
	if i += batchChunk; i+batchChunk > n {
		return 0
	}
	return i
}

// lookupLoop64 is the baseline LookupBatch is measured against: Lookup on
// each key of one batch in turn.
func lookupLoop64(s *Shard, keys []Key, hashes []uint64, out *[batchChunk]*Entry) {
	for j := range batchChunk {
		out[j] = s.Lookup(&keys[j], hashes[j], 1)
	}
}

// benchPackets returns the parsed packets of the first flows of keys (at
// most 64k, a multiple of batchChunk), sent by the flows' B side.
func benchPackets(keys []Key) []packet.Packet {
	pkts := make([]packet.Packet, min(len(keys), 1<<16)&^(batchChunk-1))
	for i := range pkts {
		k := &keys[i]
		pkts[i] = packet.Packet{IPVersion: 4, Proto: k.Proto, Src: k.B, Dst: k.A, SrcPort: k.PortB, DstPort: k.PortA}
	}
	return pkts
}

// BenchmarkLookupHit: Lookup with the hash already computed.
func BenchmarkLookupHit(b *testing.B) {
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			_, s, keys, hashes := benchTable(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for range b.N {
				if s.Lookup(&keys[i], hashes[i], 1) == nil {
					b.Fatal("miss")
				}
				if i++; i == n {
					i = 0
				}
			}
			pktsPerSec(b, b.N)
		})
	}
}

// BenchmarkLookupPath: what the pipeline does per packet: key from the
// parsed packet, hash, lookup, direction.
func BenchmarkLookupPath(b *testing.B) {
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			tb, s, keys, _ := benchTable(b, n)
			pkts := benchPackets(keys)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for range b.N {
				p := &pkts[i]
				k, _ := KeyOf(p)
				e := s.Lookup(&k, tb.HashKey(&k), 1)
				if e == nil {
					b.Fatal("miss")
				}
				_ = e.DirOf(p)
				if i++; i == len(pkts) {
					i = 0
				}
			}
			pktsPerSec(b, b.N)
		})
	}
}

// BenchmarkLookupBatch: LookupBatch over batches of 64.
func BenchmarkLookupBatch(b *testing.B) {
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			_, s, keys, hashes := benchTable(b, n)
			var out [batchChunk]*Entry
			b.ReportAllocs()
			b.ResetTimer()
			i, pkts := 0, 0
			for pkts < b.N {
				s.LookupBatch(keys[i:i+batchChunk], hashes[i:i+batchChunk], out[:], 1)
				if out[0] == nil {
					b.Fatal("miss")
				}
				pkts += batchChunk
				i = nextBatch(i, n)
			}
			pktsPerSec(b, pkts)
		})
	}
}

// BenchmarkLookupLoop64 is the baseline for LookupBatch: the same batches
// of 64 with one Lookup after another.
func BenchmarkLookupLoop64(b *testing.B) {
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			_, s, keys, hashes := benchTable(b, n)
			var out [batchChunk]*Entry
			b.ReportAllocs()
			b.ResetTimer()
			i, pkts := 0, 0
			for pkts < b.N {
				lookupLoop64(s, keys[i:], hashes[i:], &out)
				if out[0] == nil {
					b.Fatal("miss")
				}
				pkts += batchChunk
				i = nextBatch(i, n)
			}
			pktsPerSec(b, pkts)
		})
	}
}

// BenchmarkInsert: new flows per second (hash + insert) into a table of 1M
// slots; the table is emptied (untimed) when full.
func BenchmarkInsert(b *testing.B) {
	const n = 1 << 20
	tb := newTable(b, Config{MaxEntries: n, Buckets: n, Shards: 1, Prefault: true})
	s := tb.Shard(0)
	keys := make([]Key, n)
	tuples := make([]Tuple, n)
	for i := range n {
		keys[i], tuples[i] = udpFlow(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for range b.N {
		if i == n {
			b.StopTimer()
			s.Expire(1<<62, n)
			i = 0
			b.StartTimer()
		}
		e, _ := s.Insert(&keys[i], tb.HashKey(&keys[i]), &tuples[i], 0)
		e.Conn.Expires = 1 << 61
		i++
	}
	pktsPerSec(b, b.N)
}

func benchHash(b *testing.B, hash func(uint64, *Key) uint64) {
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i], _ = udpFlow(i)
	}
	var sink uint64
	b.ReportAllocs()
	for i := range b.N {
		sink += hash(1, &keys[i&1023])
	}
	_ = sink
}

func BenchmarkHashKey(b *testing.B)       { benchHash(b, hashKey) }
func BenchmarkHashKeyDigest(b *testing.B) { benchHash(b, hashKeyDigest) }

// BenchmarkServeReadsIdle is the owner's per-loop ServeRequests with
// nothing posted (named when it served reads only; the baseline keeps the
// name).
func BenchmarkServeReadsIdle(b *testing.B) {
	_, s, _, _ := benchTable(b, 10_000)
	b.ReportAllocs()
	for range b.N {
		s.ServeRequests(64)
	}
}

// BenchmarkLookupPathBatch is the pipeline's per-batch use: keys and hashes
// for 64 parsed packets, one LookupBatch, then the direction of each.
func BenchmarkLookupPathBatch(b *testing.B) {
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			tb, s, keys, _ := benchTable(b, n)
			pkts := benchPackets(keys)
			var (
				bk  [batchChunk]Key
				bh  [batchChunk]uint64
				out [batchChunk]*Entry
			)
			b.ReportAllocs()
			b.ResetTimer()
			i, done := 0, 0
			for done < b.N {
				batch := pkts[i : i+batchChunk]
				for j := range batch {
					bk[j], _ = KeyOf(&batch[j])
					bh[j] = tb.HashKey(&bk[j])
				}
				s.LookupBatch(bk[:], bh[:], out[:], 1)
				for j, e := range out {
					if e == nil {
						b.Fatal("miss")
					}
					_ = e.DirOf(&batch[j])
				}
				done += batchChunk
				i = nextBatch(i, len(pkts))
			}
			pktsPerSec(b, done)
		})
	}
}

// BenchmarkBatchVsLoop interleaves LookupBatch and a loop of Lookup in
// short alternating rounds over the same keys and reports both per-packet
// costs: on a shared machine the load shifts between runs, and
// interleaving makes the comparison fair.
func BenchmarkBatchVsLoop(b *testing.B) {
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			_, s, keys, hashes := benchTable(b, n)
			var out [batchChunk]*Entry
			const rounds = 32 // batches per timed round
			var tLoop, tBatch time.Duration
			i, pkts := 0, 0
			b.ResetTimer()
			// Each round looks up keys the other method did not just touch,
			// so neither finds the other's entries in the cache.
			for pkts < b.N {
				t0 := time.Now()
				for range rounds {
					lookupLoop64(s, keys[i:], hashes[i:], &out)
					i = nextBatch(i, n)
				}
				t1 := time.Now()
				for range rounds {
					s.LookupBatch(keys[i:i+batchChunk], hashes[i:i+batchChunk], out[:], 1)
					i = nextBatch(i, n)
				}
				tBatch += time.Since(t1)
				tLoop += t1.Sub(t0)
				pkts += 2 * rounds * batchChunk
			}
			per := float64(pkts / 2)
			b.ReportMetric(float64(tLoop.Nanoseconds())/per, "loop-ns/pkt")
			b.ReportMetric(float64(tBatch.Nanoseconds())/per, "batch-ns/pkt")
			b.ReportMetric(float64(tLoop)/float64(tBatch), "speedup")
		})
	}
}
