package ring

import (
	"sync"
	"testing"
)

func TestSPSCSizes(t *testing.T) {
	for _, tc := range []struct {
		size int
		ok   bool
	}{{1, true}, {2, true}, {1024, true}, {0, false}, {3, false}, {-4, false}, {1000, false}} {
		_, err := NewSPSC[int](tc.size)
		if (err == nil) != tc.ok {
			t.Errorf("NewSPSC(%d): got err %v, want ok=%v", tc.size, err, tc.ok)
		}
	}
}

func TestSPSCBatchesAndWrap(t *testing.T) {
	r, _ := NewSPSC[uint64](8)
	out := make([]uint64, 8)
	next, want := uint64(0), uint64(0)
	// Many laps with batch sizes that do not divide the ring size.
	for round := 0; round < 1000; round++ {
		in := make([]uint64, round%11)
		for i := range in {
			in[i] = next + uint64(i)
		}
		n := r.Push(in)
		if free := 8 - r.Len() + n; n != min(len(in), free) {
			t.Fatalf("round %d: Push(%d) got %d with %d free", round, len(in), n, free)
		}
		next += uint64(n)
		m := r.Pop(out[:round%5+1])
		for i := 0; i < m; i++ {
			if out[i] != want {
				t.Fatalf("round %d: popped %d, want %d", round, out[i], want)
			}
			want++
		}
	}
	if r.Len() != int(next-want) {
		t.Fatalf("Len got %d, want %d", r.Len(), next-want)
	}
}

// TestSPSCRace runs a producer and a consumer concurrently; run with -race.
func TestSPSCRace(t *testing.T) {
	r, _ := NewSPSC[*int](64)
	const total = 50000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		batch := make([]*int, 16)
		for sent := 0; sent < total; {
			k := min(len(batch), total-sent)
			for i := 0; i < k; i++ {
				v := sent + i
				batch[i] = &v
			}
			sent += r.Push(batch[:k])
		}
	}()
	out := make([]*int, 32)
	for got := 0; got < total; {
		n := r.Pop(out)
		for i := 0; i < n; i++ {
			if *out[i] != got {
				t.Fatalf("popped %d, want %d", *out[i], got)
			}
			got++
		}
	}
	wg.Wait()
}

func TestSPSCNoAlloc(t *testing.T) {
	r, _ := NewSPSC[uint64](64)
	in := make([]uint64, 16)
	out := make([]uint64, 16)
	if a := testing.AllocsPerRun(100, func() { r.Push(in); r.Pop(out) }); a != 0 {
		t.Fatalf("Push+Pop allocs got %v, want 0", a)
	}
}

func BenchmarkSPSC(b *testing.B) {
	r, _ := NewSPSC[uint64](1024)
	const batch = 32
	done := make(chan struct{})
	go func() {
		out := make([]uint64, batch)
		for got := 0; got < b.N*batch; {
			got += r.Pop(out)
		}
		close(done)
	}()
	in := make([]uint64, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for s := 0; s < batch; {
			s += r.Push(in[s:])
		}
	}
	<-done
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "items/s")
}
