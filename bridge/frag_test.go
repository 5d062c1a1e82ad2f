package bridge

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// TestFragSlotAdd drives the byte-range arithmetic of one datagram's slot
// with the cases of the kernel's inet_frag_queue_insert and ip_frag_queue.
func TestFragSlotAdd(t *testing.T) {
	type frag struct {
		start, end uint32
		last       bool
		want       fragOutcome
	}
	cases := []struct {
		name  string
		frags []frag
	}{
		{"in order", []frag{{0, 24, false, fragFresh}, {24, 48, false, fragFresh}, {48, 50, true, fragFresh}}},
		{"reordered", []frag{{0, 24, false, fragFresh}, {48, 50, true, fragFresh}, {24, 48, false, fragFresh}}},
		{"exact duplicate", []frag{{0, 24, false, fragFresh}, {24, 48, false, fragFresh}, {24, 48, false, fragDup}, {48, 56, true, fragFresh}}},
		{"contained duplicate (RFC 3128 offset 8 inside)", []frag{{0, 24, false, fragFresh}, {8, 16, false, fragDup}, {24, 32, true, fragFresh}}},
		{"partial overlap at offset 8 (RFC 3128)", []frag{{0, 24, false, fragFresh}, {8, 40, false, fragOverlap}, {40, 48, true, fragOverlap}}},
		{"overlap across two runs", []frag{{0, 16, false, fragFresh}, {32, 48, false, fragFresh}, {8, 40, false, fragOverlap}}},
		{"overlap of the head", []frag{{0, 24, false, fragFresh}, {48, 64, false, fragFresh}, {40, 56, false, fragOverlap}}},
		{"two different ends", []frag{{0, 24, false, fragFresh}, {24, 32, true, fragFresh}, {32, 40, true, fragOverlap}}},
		{"bytes beyond the end", []frag{{0, 24, false, fragFresh}, {24, 32, true, fragFresh}, {40, 48, false, fragOverlap}}},
		{"last fragment before seen bytes", []frag{{0, 24, false, fragFresh}, {40, 48, false, fragFresh}, {24, 32, true, fragOverlap}}},
		{"too many holes", []frag{
			{0, 8, false, fragFresh}, {16, 24, false, fragFresh}, {32, 40, false, fragFresh}, {48, 56, false, fragFresh},
			{64, 72, false, fragFresh}, {80, 88, false, fragFresh}, {96, 104, false, fragFresh}, {112, 120, false, fragFresh},
			{128, 136, false, fragOverlap}}},
		{"holes fill and coalesce", []frag{
			{0, 8, false, fragFresh}, {16, 24, false, fragFresh}, {32, 40, false, fragFresh}, {8, 16, false, fragFresh},
			{24, 32, false, fragFresh}, {40, 48, true, fragFresh}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s fragDatagram
			for i, f := range c.frags {
				if got := s.add(f.start, f.end, f.last); got != f.want {
					t.Errorf("fragment %d [%d,%d) last=%v: got %v, want %v", i, f.start, f.end, f.last, got, f.want)
				}
			}
		})
	}
}

// TestFragSlotComplete: a datagram whose bytes all arrived is complete, and
// a new first fragment with the same IP ID starts a new datagram.
func TestFragSlotComplete(t *testing.T) {
	var s fragDatagram
	s.add(0, 24, false)
	s.add(48, 56, true)
	if s.complete() {
		t.Fatalf("complete with a hole [24,48): got true, want false")
	}
	s.add(24, 48, false)
	if !s.complete() {
		t.Fatalf("complete after every byte: got false, want true (runs %v, end %d)", s.runs[:s.nruns], s.end)
	}
}

// overlapCase is a fragment sequence and the outcome of every fragment.
type overlapCase struct {
	name   string
	frames [][]byte
	want   []packet.Reason // ReasonOK: forwarded; ReasonFragmentOverlap: dropped as overlapping
}

func overlapCases() []overlapCase {
	const l, r = "198.18.0.1", "198.18.0.2"
	const l6, r6 = "2001:2::1", "2001:2::2"
	ok, ov := packet.ReasonOK, packet.ReasonFragmentOverlap
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = byte(i)
	}
	// The benign datagram opens a connection with an ACK-less SYN; the evil
	// variant has other flags (RST) in the same header: RFC 1858's attack
	// rewrites the flags byte (TCP offset 13) with a fragment at offset 8.
	syn := pt.TCP4(l, r, 1000, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535, Payload: payload})
	rst := pt.TCP4(l, r, 1000, 22, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Seq: 1, Window: 65535, Payload: payload})
	syn6 := pt.TCP6(l6, r6, 1000, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535, Payload: payload})
	rst6 := pt.TCP6(l6, r6, 1000, 22, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Seq: 1, Window: 65535, Payload: payload})
	udp := pt.UDP4(l, r, 7, 9, payload)
	udpOther := pt.UDP4(l, r, 7, 9, make([]byte, 64))
	f4 := pt.Frag4
	f6 := func(fr []byte, off, n int, more bool) []byte { return pt.Frag6(fr, 77, off, n, more) }
	return []overlapCase{
		{"v4 in order", [][]byte{f4(syn, 0, 24, true), f4(syn, 24, 24, true), f4(syn, 48, 40, false)}, []packet.Reason{ok, ok, ok}},
		{"v4 RFC 3128 offset 8 rewriting flags, partial", [][]byte{f4(syn, 0, 24, true), f4(rst, 8, 32, true), f4(syn, 40, 48, false)}, []packet.Reason{ok, ov, ov}},
		{"v4 RFC 3128 offset 8 inside the first", [][]byte{f4(syn, 0, 24, true), f4(rst, 8, 8, true), f4(syn, 24, 64, false)}, []packet.Reason{ok, ov, ok}},
		{"v4 duplicate later fragment with other data", [][]byte{f4(udp, 0, 24, true), f4(udp, 24, 24, true), f4(udpOther, 24, 24, true), f4(udp, 48, 40, false)}, []packet.Reason{ok, ok, ov, ok}},
		{"v4 second first fragment", [][]byte{f4(syn, 0, 24, true), f4(rst, 0, 32, true), f4(syn, 32, 56, false)}, []packet.Reason{ok, ov, ov}},
		{"v6 in order", [][]byte{f6(syn6, 0, 24, true), f6(syn6, 24, 24, true), f6(syn6, 48, 40, false)}, []packet.Reason{ok, ok, ok}},
		{"v6 offset 8 partial (RFC 5722: datagram discarded)", [][]byte{f6(syn6, 0, 24, true), f6(rst6, 8, 32, true), f6(syn6, 40, 48, false)}, []packet.Reason{ok, ov, ov}},
		{"v6 duplicate inside", [][]byte{f6(syn6, 0, 24, true), f6(rst6, 8, 8, true), f6(syn6, 24, 64, false)}, []packet.Reason{ok, ov, ok}},
	}
}

// TestFragmentOverlaps runs RFC 1858/3128/5722 fragment sequences through
// a pipeline that accepts everything: overlapping fragments are dropped
// anyway (the kernel's defragmentation drops them before any rule), counted
// as packet.ReasonFragmentOverlap and INVALID.
func TestFragmentOverlaps(t *testing.T) {
	for _, c := range overlapCases() {
		t.Run(c.name, func(t *testing.T) {
			pl := newTestPipeline(t, nil, 64)
			var wantOverlaps uint64
			for i, f := range c.frames {
				r := pl.Process(f, 0, PortA, 100*sec)
				if r.Parse != c.want[i] {
					t.Errorf("fragment %d: parse got %v, want %v", i, r.Parse, c.want[i])
				}
				if c.want[i] == packet.ReasonFragmentOverlap {
					wantOverlaps++
					if r.Verdict != Drop || r.Drop != DropMalformed || r.State != statemachine.StateInvalid {
						t.Errorf("fragment %d: got %v/%v %v, want DROP/malformed INVALID", i, r.Verdict, r.Drop, r.State)
					}
				} else if r.Verdict != Accept {
					t.Errorf("fragment %d: got %v/%v %v, want ACCEPT", i, r.Verdict, r.Drop, r.State)
				}
			}
			st := pl.Stats()
			if got := st.Parse[packet.ReasonFragmentOverlap]; got != wantOverlaps {
				t.Errorf("Stats.Parse[fragment-overlap]: got %d, want %d", got, wantOverlaps)
			}
			var sum uint64
			for _, n := range st.Parse {
				sum += n
			}
			if want := uint64(len(c.frames)); sum != want {
				t.Errorf("Stats.Parse sums to %d, want %d (frames in)", sum, want)
			}
		})
	}
}

// TestFragmentIDReuse: once a datagram is complete, a new datagram with the
// same IP ID (IDs wrap) is no overlap.
func TestFragmentIDReuse(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	a := pt.UDP4("198.18.0.1", "198.18.0.2", 7, 9, make([]byte, 100))
	b := pt.UDP4("198.18.0.1", "198.18.0.2", 7, 9, make([]byte, 60))
	for round, frame := range [][]byte{a, b} {
		for i, f := range pt.Fragments4(frame, 32) {
			if r := pl.Process(f, 0, PortA, 100*sec); r.Verdict != Accept || r.Parse != packet.ReasonOK {
				t.Errorf("datagram %d fragment %d: got %v %v, want ACCEPT ok", round, i, r.Verdict, r.Parse)
			}
		}
	}
	if _, dups, ovs := pl.frags.FragCounters(); dups != 0 || ovs != 0 {
		t.Errorf("FragCounters: duplicates %d, overlaps %d, want 0, 0", dups, ovs)
	}
}

// TestFragmentsAllocateNothing: the fragment path, overlaps included, is
// as allocation-free as the rest of Process.
func TestFragmentsAllocateNothing(t *testing.T) {
	pl := newTestPipeline(t, nil, 1024)
	var frames [][]byte
	for _, c := range overlapCases() {
		frames = append(frames, c.frames...)
	}
	i := 0
	n := testing.AllocsPerRun(500, func() {
		pl.Process(frames[i%len(frames)], 0, PortA, 100*sec)
		i++
	})
	if n != 0 {
		t.Errorf("fragments: %v allocations per packet, want 0", n)
	}
}

// TestFragCacheConcurrent: workers share the cache. Fragments of one
// datagram arriving on several workers at once are judged one at a time
// (exactly one of many copies of a fragment is new, the rest duplicates),
// while datagrams in other buckets go their own way; the counters lose
// nothing. Run with -race, it also checks the per-slot locking.
func TestFragCacheConcurrent(t *testing.T) {
	const workers, copies, perWorker = 4, 500, 64
	c := NewFragCache(4096, 1)
	payload := make([]byte, 64)
	frame := pt.UDP6("2001:2::1", "2001:2::2", 7, 9, payload)
	parse := func(f []byte) *packet.Packet {
		p := new(packet.Packet)
		if r := packet.Parse(f, 0, packet.Options{}, p); r != packet.ReasonOK {
			t.Fatalf("parse fragment: got %v, want ok", r)
		}
		return p
	}
	// A datagram: its first fragment, a middle one (sent twice) and one
	// overlapping the middle one, each in a bucket of its own.
	type datagram struct{ first, mid, overlap *packet.Packet }
	used := map[*fragBucket]bool{}
	next := uint32(1)
	newDatagram := func() datagram {
		for ; ; next++ {
			d := datagram{
				first:   parse(pt.Frag6(frame, next, 0, 24, true)),
				mid:     parse(pt.Frag6(frame, next, 24, 24, true)),
				overlap: parse(pt.Frag6(frame, next, 40, 16, true)),
			}
			k := keyOfFragment(d.first)
			if s, _ := c.bucket(&k); !used[s] {
				used[s] = true
				next++
				return d
			}
		}
	}
	var first Result
	first.Verdict = Accept
	shared := newDatagram()
	if out := c.store(shared.first, 0, &first); out != fragFresh {
		t.Fatalf("shared first fragment: got %v, want fresh", out)
	}
	own := make([][]datagram, workers)
	for w := range own {
		for range perWorker {
			own[w] = append(own[w], newDatagram())
		}
	}
	var fresh atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range copies {
				if _, out, ok := c.later(shared.mid, 1); ok && out == fragFresh {
					fresh.Add(1)
				}
				if i >= perWorker {
					continue
				}
				d := own[w][i]
				want := []fragOutcome{fragFresh, fragFresh, fragDup, fragOverlap}
				var got [4]fragOutcome
				got[0] = c.store(d.first, 1, &first)
				_, got[1], _ = c.later(d.mid, 1)
				_, got[2], _ = c.later(d.mid, 1)
				_, got[3], _ = c.later(d.overlap, 1)
				for j := range want {
					if got[j] != want[j] {
						t.Errorf("worker %d datagram %d fragment %d: got %v, want %v", w, i, j, got[j], want[j])
					}
				}
			}
		}()
	}
	wg.Wait()
	if got := fresh.Load(); got != 1 {
		t.Errorf("shared middle fragment, %d copies: got %d new, want 1", workers*copies, got)
	}
	ev, dups, ovs := c.FragCounters()
	if want := uint64(workers*copies - 1 + workers*perWorker); dups != want {
		t.Errorf("duplicates: got %d, want %d", dups, want)
	}
	if want := uint64(workers * perWorker); ovs != want {
		t.Errorf("overlaps: got %d, want %d", ovs, want)
	}
	if ev != 0 {
		t.Errorf("evictions: got %d, want 0 (every datagram has its own bucket)", ev)
	}
}

// TestFragCacheReplacement: a datagram in progress keeps its way while its
// bucket has a free, expired or complete way for a newcomer; only a bucket
// full of datagrams in progress forgets one, the least recently used, and
// counts it.
func TestFragCacheReplacement(t *testing.T) {
	parse := func(f []byte) *packet.Packet {
		p := new(packet.Packet)
		if r := packet.Parse(f, 0, packet.Options{}, p); r != packet.ReasonOK {
			t.Fatalf("parse fragment: got %v, want ok", r)
		}
		return p
	}
	// dgram returns the two fragments of datagram id: the second one,
	// MF clear, completes it.
	dgram := func(id uint16) (first, last *packet.Packet) {
		fr := pt.Fragments4(withIPID(pt.UDP4("198.18.0.1", "198.18.0.2", 7, 9, make([]byte, 64)), id), 48)
		return parse(fr[0]), parse(fr[1])
	}
	remembered := func(c *FragCache, p *packet.Packet) bool {
		k := keyOfFragment(p)
		b, tag := c.bucket(&k)
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.find(&k, tag) != nil
	}
	accept := Result{Verdict: Accept, State: statemachine.StateNew}
	const now = 100 * sec
	t.Run("complete datagrams go first", func(t *testing.T) {
		c := NewFragCache(1, 1) // one bucket: every datagram shares it
		judged, _ := dgram(1)
		steered, _ := dgram(2)
		c.store(judged, now, &accept)
		c.Steer(steered, now, 1)
		// A stream of datagrams completing one after the other, in the
		// ways the two in progress leave.
		for id := uint16(3); id < 100; id++ {
			first, last := dgram(id)
			c.store(first, now, &accept)
			if _, out, ok := c.later(last, now); !ok || out != fragFresh {
				t.Fatalf("datagram %d: later fragment got %v %v, want fresh true", id, out, ok)
			}
		}
		if !remembered(c, judged) || !remembered(c, steered) {
			t.Errorf("datagrams in progress remembered: judged %v, steered %v, want both", remembered(c, judged), remembered(c, steered))
		}
		if got := c.SteeredTo(steered, now); got != 1 {
			t.Errorf("SteeredTo: got %d, want 1", got)
		}
		if ev, _, _ := c.FragCounters(); ev != 0 {
			t.Errorf("evictions: got %d, want 0 (only complete datagrams gave way)", ev)
		}
	})
	t.Run("expired datagrams go first", func(t *testing.T) {
		c := NewFragCache(1, 1)
		old, _ := dgram(1)
		c.store(old, now, &accept)
		var live []*packet.Packet
		for id := range uint16(fragWays - 1) {
			p, _ := dgram(2 + id)
			c.store(p, now+10*sec, &accept)
			live = append(live, p)
		}
		newcomer, _ := dgram(100)
		c.store(newcomer, now+fragTimeoutV4, &accept) // old has just expired
		for i, p := range append(live, newcomer) {
			if !remembered(c, p) {
				t.Errorf("datagram %d in progress: forgotten, want remembered", i)
			}
		}
		if remembered(c, old) {
			t.Errorf("expired datagram: remembered, want its way taken")
		}
		if ev, _, _ := c.FragCounters(); ev != 0 {
			t.Errorf("evictions: got %d, want 0 (an expired datagram gave way)", ev)
		}
	})
	t.Run("full: the least recently used goes", func(t *testing.T) {
		c := NewFragCache(1, 1)
		var ps []*packet.Packet
		for id := range uint16(fragWays) {
			p, _ := dgram(1 + id)
			c.store(p, now, &accept)
			ps = append(ps, p)
		}
		c.SteeredTo(ps[0], now) // a use: datagram 0 is now the most recent, 1 the least
		newcomer, _ := dgram(100)
		c.store(newcomer, now, &accept)
		for i, p := range ps {
			if got, want := remembered(c, p), i != 1; got != want {
				t.Errorf("datagram %d: remembered %v, want %v", i, got, want)
			}
		}
		if !remembered(c, newcomer) {
			t.Errorf("newcomer: forgotten, want remembered")
		}
		if ev, _, _ := c.FragCounters(); ev != 1 {
			t.Errorf("evictions: got %d, want 1", ev)
		}
	})
}

// BenchmarkFragments is the pipeline's fragment path: the first fragment of
// each datagram stores its verdict in the FragCache, the later ones read
// it. 64 datagrams (32 flows, both ways, three fragments each) in a cache
// of the datapath's size, sent again and again (the IP IDs are reused once
// each datagram is complete).
func BenchmarkFragments(b *testing.B) {
	tb, err := flowtable.New(flowtable.Config{MaxEntries: 1024, Buckets: 1024, Shards: 1, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	s := DefaultSettings()
	s.Rules = loadRules(b, newOnlyFromA)
	pl := NewPipeline(tb, 0, NewControl(s), NewFragCache(1024, 1))
	payload := make([]byte, 3000)
	var frames [][]byte
	var ins []Port
	for sport := range uint16(32) {
		for _, f := range pt.Fragments4(withIPID(pt.UDP4("198.18.0.1", "198.18.0.2", 2000+sport, 9, payload), 2000+sport), 1480) {
			frames, ins = append(frames, f), append(ins, PortA)
		}
		for _, f := range pt.Fragments4(withIPID(pt.UDP4("198.18.0.2", "198.18.0.1", 9, 2000+sport, payload), 2000+sport), 1480) {
			frames, ins = append(frames, f), append(ins, PortB)
		}
	}
	for i, f := range frames { // the flows exist: the loop measures fragments, not entry creation
		if r := pl.Process(f, 0, ins[i], 100*sec); r.Verdict != Accept {
			b.Fatalf("frame %d: got %v, want ACCEPT", i, r.Verdict)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		pl.Process(frames[i%len(frames)], 0, ins[i%len(frames)], 100*sec)
		i++
	}
}
