package bridge

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/ring"
	"github.com/statewire/statewire/statemachine"
)

// steerFrame is one frame of a steering scenario: a fragment received on
// port in.
type steerFrame struct {
	frame []byte
	in    Port
	name  string
}

// newSteerDatapath returns a two-worker datapath that is never started: its
// workers' route and pipelines are what rxBatch and serveRequests use, and
// the tests play the rings. Rules: NEW only from port A, ESTABLISHED and
// RELATED both ways, INVALID dropped (so a fragment judged without its
// first fragment's verdict is lost).
func newSteerDatapath(t testing.TB) *Datapath {
	t.Helper()
	c := validConfig()
	c.Cores, c.Queues = 2, 2
	c.Table.Seed = 42
	c.Table.Buckets = 1024
	s := DefaultSettings()
	s.Rules = loadRules(t, newOnlyFromA)
	c.Settings = s
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	return dp
}

// withIPID returns an IPv4 frame with its IP ID set (Frag4 recomputes the
// header checksum of each fragment).
func withIPID(frame []byte, id uint16) []byte {
	binary.BigEndian.PutUint16(frame[14+4:], id)
	return frame
}

// steerDatagrams returns, for each UDP flow from sport 2000 upwards until
// flows of both owners are found (perOwner each), a fragmented request
// from the left (port A) and a fragmented reply from the right (port B),
// and how many of the flows worker 1 owns.
func steerDatagrams(t testing.TB, dp *Datapath, v6 bool, perOwner int) (frames []steerFrame, owned1 int) {
	t.Helper()
	l, r := "198.18.0.1", "198.18.0.2"
	if v6 {
		l, r = "2001:2::1", "2001:2::2"
	}
	payload := make([]byte, 3000)
	count := [2]int{}
	w := dp.workers[0]
	for sport := uint16(2000); count[0] < perOwner || count[1] < perOwner; sport++ {
		if sport > 3000 {
			t.Fatalf("1000 flows gave owners %v, want %d of each", count, perOwner)
		}
		var req, rep [][]byte
		if v6 {
			req = pt.Fragments6(pt.UDP6(l, r, sport, 9, payload), uint32(sport), 1232)
			rep = pt.Fragments6(pt.UDP6(r, l, 9, sport, payload), uint32(sport), 1232)
		} else {
			req = pt.Fragments4(withIPID(pt.UDP4(l, r, sport, 9, payload), sport), 1480)
			rep = pt.Fragments4(withIPID(pt.UDP4(r, l, 9, sport, payload), sport), 1480)
		}
		o := w.owner(req[0])
		if count[o] >= perOwner {
			continue
		}
		count[o]++
		if o == 1 {
			owned1++
		}
		for i, f := range req {
			frames = append(frames, steerFrame{f, PortA, fmt.Sprintf("sport %d (owner %d) request fragment %d", sport, o, i)})
		}
		for i, f := range rep {
			frames = append(frames, steerFrame{f, PortB, fmt.Sprintf("sport %d (owner %d) reply fragment %d", sport, o, i)})
		}
	}
	return frames, owned1
}

// checkSteerResults checks that every fragment was accepted and that no
// pipeline judged a later fragment without its first fragment's verdict.
func checkSteerResults(t *testing.T, dp *Datapath, frames []steerFrame, results []Result) {
	t.Helper()
	for i, f := range frames {
		if r := results[i]; r.Verdict != Accept || r.State == statemachine.StateInvalid {
			t.Errorf("%s: got %v/%v %v, want ACCEPT (not INVALID)", f.name, r.Verdict, r.Drop, r.State)
		}
	}
	for i, w := range dp.workers {
		if n := w.pl.Stats().FragUnknown; n != 0 {
			t.Errorf("worker %d: later fragments with no first fragment seen got %d, want 0", i, n)
		}
	}
	if t.Failed() {
		// A datagram forgotten in progress loses its later fragments'
		// verdict: say whether the cache had to forget any.
		ev, dups, ovs := dp.frags.FragCounters()
		t.Logf("FragCache: evictions %d, duplicates %d, overlaps %d, steered %d", ev, dups, ovs, dp.frags.Steered())
	}
}

// TestFragmentsFollowFirstFragment reproduces the ordering of a two-worker
// datapath: every frame arrives on worker 0, which judges the frames it
// owns at once (rxBatch: in the same batch) while those of worker 1's
// flows wait on the SPSC ring until worker 1's next loop (serveRequests).
// The later fragments of a datagram whose first fragment went to worker 1
// must go there too, behind it; judged on worker 0 they overtook it, found
// no verdict and were dropped as INVALID.
func TestFragmentsFollowFirstFragment(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			dp := newSteerDatapath(t)
			frames, owned1 := steerDatagrams(t, dp, v6, 8)
			results := make([]Result, len(frames))
			w0, w1 := dp.workers[0], dp.workers[1]
			now := 100 * sec
			// A batch per datagram and direction: frames of one datagram
			// arrive together.
			var handed []int
			for i, f := range frames {
				o, _ := w0.route(f.frame, now)
				switch o {
				case 0:
					results[i] = w0.pl.Process(f.frame, 0, f.in, now)
				case 1:
					handed = append(handed, i)
				default:
					t.Fatalf("%s: route got worker %d, want 0 or 1", f.name, o)
				}
				if last := i+1 == len(frames) || frames[i+1].in != f.in; last {
					// The owner's next loop: the hand-offs, in ring order.
					for _, j := range handed {
						results[j] = w1.pl.Process(frames[j].frame, 0, frames[j].in, now)
					}
					handed = handed[:0]
				}
			}
			checkSteerResults(t, dp, frames, results)
			// Each datagram has 3 fragments: 2 later ones, both ways.
			var later uint64
			for _, w := range dp.workers {
				later += w.pl.Stats().FragCached
			}
			if want := uint64(2 * 2 * 16); later != want {
				t.Errorf("later fragments given their first fragment's verdict: got %d, want %d", later, want)
			}
			if got := w1.pl.Stats().FragCached; got != uint64(2*2*owned1) {
				t.Errorf("worker 1 judged %d later fragments, want %d (those of its %d flows)", got, 2*2*owned1, owned1)
			}
		})
	}
}

// TestFragmentsFollowFirstFragmentConcurrent runs the two workers as
// goroutines joined by SPSC rings, as the datapath does: worker 0 receives
// everything and judges what it owns at once, worker 1 judges what it is
// handed as it comes and sends the verdicts back. Whatever the timing,
// every fragment must get its first fragment's verdict. With -race it also
// checks that the pipelines share only what is safe to share (FragCache,
// table, settings).
func TestFragmentsFollowFirstFragmentConcurrent(t *testing.T) {
	dp := newSteerDatapath(t)
	frames, _ := steerDatagrams(t, dp, false, 64)
	results := make([]Result, len(frames))
	req, err := ring.NewSPSC[int](1024)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ring.NewSPSC[int](1024)
	if err != nil {
		t.Fatal(err)
	}
	w0, w1 := dp.workers[0], dp.workers[1]
	const now = 100 * sec
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // worker 1: serveRequests
		defer wg.Done()
		buf := make([]int, 64)
		for {
			n := req.Pop(buf)
			for _, j := range buf[:n] {
				if j < 0 {
					return
				}
				results[j] = w1.pl.Process(frames[j].frame, 0, frames[j].in, now)
			}
			for rest := buf[:n]; len(rest) > 0; {
				rest = rest[rep.Push(rest):]
			}
		}
	}()
	// Worker 0: rxBatch in batches of 4 frames, hand-offs pushed at the end
	// of each batch; replies drained as they come.
	pending, replies := 0, make([]int, 64)
	var out []int
	for base := 0; base < len(frames); base += 4 {
		for i := base; i < min(base+4, len(frames)); i++ {
			if o, _ := w0.route(frames[i].frame, now); o == 1 {
				out = append(out, i)
				continue
			}
			results[i] = w0.pl.Process(frames[i].frame, 0, frames[i].in, now)
		}
		for len(out) > 0 {
			n := req.Push(out)
			pending += n
			out = out[n:]
			pending -= rep.Pop(replies)
		}
		pending -= rep.Pop(replies)
	}
	for pending > 0 {
		pending -= rep.Pop(replies)
	}
	for req.Push([]int{-1}) == 0 {
	}
	wg.Wait()
	checkSteerResults(t, dp, frames, results)
}

// TestFragCacheSteer walks the life of a steering record: it is made when
// a first fragment is handed off, kept when the owner records the verdict,
// read for the later fragments, and gone once it expires or another
// datagram takes its way; a later fragment never gets a verdict the
// owner has not recorded yet.
func TestFragCacheSteer(t *testing.T) {
	parse := func(f []byte) *packet.Packet {
		p := new(packet.Packet)
		if r := packet.Parse(f, 0, packet.Options{}, p); r != packet.ReasonOK {
			t.Fatalf("parse fragment: got %v, want ok", r)
		}
		return p
	}
	dgram := func(id uint16) (first, later *packet.Packet) {
		fr := pt.Fragments4(withIPID(pt.UDP4("198.18.0.1", "198.18.0.2", 7, 9, make([]byte, 64)), id), 48)
		return parse(fr[0]), parse(fr[1])
	}
	accept := Result{Verdict: Accept, State: statemachine.StateNew}
	const now = 100 * sec
	t.Run("handed off, then judged by the owner", func(t *testing.T) {
		c := NewFragCache(64, 1)
		first, later := dgram(1)
		c.Steer(first, now, 3)
		if got := c.SteeredTo(later, now); got != 3 {
			t.Errorf("SteeredTo before the verdict: got %d, want 3", got)
		}
		if _, _, ok := c.later(later, now); ok {
			t.Errorf("later before the verdict: got a verdict, want none (the first fragment is not judged yet)")
		}
		if out := c.store(first, now, &accept); out != fragFresh {
			t.Errorf("store of the steered first fragment: got %v, want fresh", out)
		}
		if got := c.SteeredTo(later, now); got != 3 {
			t.Errorf("SteeredTo after the verdict: got %d, want 3 (the record is kept)", got)
		}
		if res, out, ok := c.later(later, now); !ok || out != fragFresh || res.Verdict != Accept {
			t.Errorf("later after the verdict: got %v %v %v, want ACCEPT fresh true", res.Verdict, out, ok)
		}
		if ev, _, _ := c.FragCounters(); ev != 0 {
			t.Errorf("evictions: got %d, want 0 (the record is the same datagram's)", ev)
		}
	})
	t.Run("judged where it arrived", func(t *testing.T) {
		c := NewFragCache(64, 1)
		first, later := dgram(1)
		c.store(first, now, &accept)
		if got := c.SteeredTo(later, now); got != -1 {
			t.Errorf("SteeredTo: got %d, want -1", got)
		}
	})
	t.Run("expired", func(t *testing.T) {
		c := NewFragCache(64, 1)
		first, later := dgram(1)
		c.Steer(first, now, 1)
		if got := c.SteeredTo(later, now+fragTimeoutV4); got != -1 {
			t.Errorf("SteeredTo after the reassembly timeout: got %d, want -1", got)
		}
	})
	t.Run("way taken by another datagram", func(t *testing.T) {
		c := NewFragCache(1, 1) // one bucket: every datagram shares it
		first, later := dgram(1)
		c.Steer(first, now, 1)
		// The bucket's other ways take the next datagrams; the one after
		// them finds every way in progress and takes the least recently
		// used, the steered datagram's.
		for id := range uint16(fragWays) {
			other, _ := dgram(2 + id)
			c.store(other, now, &accept)
		}
		if got := c.SteeredTo(later, now); got != -1 {
			t.Errorf("SteeredTo after eviction: got %d, want -1", got)
		}
		if ev, _, _ := c.FragCounters(); ev != 1 {
			t.Errorf("evictions: got %d, want 1", ev)
		}
	})
	t.Run("second first fragment keeps the verdict", func(t *testing.T) {
		c := NewFragCache(64, 1)
		first, later := dgram(1)
		c.store(first, now, &accept)
		c.Steer(first, now, 1)
		if out := c.store(first, now, &Result{Verdict: Drop}); out != fragDup {
			t.Errorf("store of a duplicate first fragment: got %v, want duplicate", out)
		}
		if res, _, ok := c.later(later, now); !ok || res.Verdict != Accept {
			t.Errorf("later: got %v %v, want the first verdict ACCEPT", res.Verdict, ok)
		}
	})
	t.Run("ID reused after a complete datagram", func(t *testing.T) {
		c := NewFragCache(64, 1)
		first, later := dgram(1)
		c.store(first, now, &accept)
		later.MoreFrags = false // make it the last: the datagram is complete
		c.later(later, now)
		c.Steer(first, now, 1)
		if _, _, ok := c.later(later, now); ok {
			t.Errorf("later of the new datagram before its verdict: got one, want none")
		}
		if out := c.store(first, now, &accept); out != fragFresh {
			t.Errorf("store of the new datagram's first fragment: got %v, want fresh", out)
		}
	})
}

// TestRouteAllocatesNothing: routing fragments (the FragCache look-ups
// included) allocates nothing.
func TestRouteAllocatesNothing(t *testing.T) {
	dp := newSteerDatapath(t)
	frames, _ := steerDatagrams(t, dp, false, 4)
	w := dp.workers[0]
	i := 0
	if n := testing.AllocsPerRun(500, func() {
		w.route(frames[i%len(frames)].frame, 100*sec)
		i++
	}); n != 0 {
		t.Errorf("route: %v allocations per frame, want 0", n)
	}
}

// BenchmarkRoute compares the multi-worker steering decision of rxBatch
// (route) with the flow lookup alone (owner) on plain datagrams, where it
// adds only a branch, and on fragments, where it adds a FragCache look-up.
func BenchmarkRoute(b *testing.B) {
	dp := newSteerDatapath(b)
	frags, _ := steerDatagrams(b, dp, false, 8)
	var plain [][]byte
	for sport := range uint16(32) {
		plain = append(plain, pt.UDP4("198.18.0.1", "198.18.0.2", 1000+sport, 53, make([]byte, 64)))
	}
	var fragFrames [][]byte
	for _, f := range frags {
		fragFrames = append(fragFrames, f.frame)
	}
	w := dp.workers[0]
	for _, c := range []struct {
		name   string
		frames [][]byte
		route  bool
	}{
		{"plain/owner", plain, false},
		{"plain/route", plain, true},
		{"fragments/owner", fragFrames, false},
		{"fragments/route", fragFrames, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f := c.frames[i%len(c.frames)]
				if c.route {
					w.route(f, 100*sec)
				} else {
					w.owner(f)
				}
				i++
			}
		})
	}
}
