package offload_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
)

// runMarked runs frame on port A and returns the action and the Mark the
// program wrote in front of it (BPF_PROG_RUN's output starts at the XDP
// metadata).
func runMarked(t *testing.T, prog *offload.Program, frame []byte) (uint32, offload.Mark) {
	t.Helper()
	out := make([]byte, len(frame)+offload.MarkLen+64)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := prog.EBPF(offload.PortA).Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	out = opts.DataOut
	// DataOut is resliced to what the kernel wrote: metadata, then frame.
	meta := len(out) - len(frame)
	switch meta {
	case 0:
		return ret, offload.Mark{}
	case offload.MarkLen:
		return ret, offload.ReadMark(out[:meta])
	}
	t.Fatalf("output of %d bytes for a frame of %d", len(out), len(frame))
	return 0, offload.Mark{}
}

// TestOfferPending: a frame run before the offer is punted unmarked
// (miss); after OfferPending every frame is punted and numbered; Activate
// succeeds only with the count the program reached, and only then does
// the program take frames. TakeBack of a pending offer leaves the entry
// as it was.
func TestOfferPending(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)

	if ret, m := runMarked(t, prog, frame); ret != offload.ActionPass || m.Seq != 0 {
		t.Fatalf("before the offer: action %d, mark %+v; want pass, unmarked", ret, m)
	}
	pd, err := prog.OfferPending(e, vs, oc)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(1); i <= 3; i++ {
		ret, m := runMarked(t, prog, frame)
		if ret != offload.ActionPass || m != (offload.Mark{Pending: pd, Seq: i}) {
			t.Fatalf("pending frame %d: action %d, mark %+v; want pass, %+v seq %d", i, ret, m, pd, i)
		}
	}
	if n, ok := prog.Punted(pd); !ok || n != 3 {
		t.Fatalf("Punted = %d, %v; want 3, true", n, ok)
	}
	if ok, err := prog.Activate(e, vs, oc, pd, 2); ok || err != nil {
		t.Fatalf("Activate with a stale count: %v %v", ok, err)
	}
	if ret, _ := runMarked(t, prog, frame); ret != offload.ActionPass {
		t.Fatal("taken before activation")
	}
	if ok, err := prog.Activate(e, vs, oc, pd, 4); !ok || err != nil {
		t.Fatalf("Activate: %v %v", ok, err)
	}
	if _, ok := prog.Punted(pd); ok {
		t.Fatal("still pending after Activate")
	}
	if ret, m := runMarked(t, prog, frame); ret != offload.ActionRedirect || m.Seq != 0 {
		t.Fatalf("after activation: action %d mark %+v; want redirect", ret, m)
	}
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := st[offload.PortA].Punts[offload.PuntPending]; got != 4 {
		t.Errorf("pending punts %d, want 4", got)
	}
	var u offload.Usage
	if ok, err := prog.TakeBackUsage(e, &u); !ok || err != nil || u.Packets[0] != 1 {
		t.Fatalf("TakeBack: %v %v %+v", ok, err, u)
	}

	// A pending offer taken back (cancelled) changes nothing in e.
	pd, err = prog.OfferPending(e, vs, oc)
	if err != nil {
		t.Fatal(err)
	}
	before := e.Conn
	before.Expires++
	e.Conn.Expires = before.Expires
	if _, m := runMarked(t, prog, frame); m.Seq != 1 || m.Pending != pd {
		t.Fatalf("mark %+v", m)
	}
	if ok, err := prog.TakeBack(e); !ok || err != nil {
		t.Fatalf("TakeBack pending: %v %v", ok, err)
	}
	if e.Conn != before {
		t.Fatal("TakeBack of a pending offer changed the entry")
	}
	if ret, m := runMarked(t, prog, frame); ret != offload.ActionPass || m.Seq != 0 {
		t.Fatalf("after cancel: action %d mark %+v", ret, m)
	}
}

// TestActivateNow: a forced activation makes the flow active at the count
// the program has reached, whatever it is, and returns it: the frames
// numbered up to it were punted before the activation, every later frame
// is taken, and none is numbered after it. Run with the program marking
// frames on two other goroutines (two CPUs under BPF_PROG_RUN) while the
// activation swaps the count away: the numbers punted are exactly 1..cut,
// each once, and on each goroutine no marked punt follows a taken frame.
func TestActivateNow(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)

	// Sequentially: five numbered, then cut 5 and taken.
	pd, err := prog.OfferPending(e, vs, oc)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(1); i <= 5; i++ {
		if ret, m := runMarked(t, prog, frame); ret != offload.ActionPass || m.Seq != i {
			t.Fatalf("pending frame %d: action %d mark %+v", i, ret, m)
		}
	}
	cut, ok, err := prog.ActivateNow(e, vs, oc, pd)
	if !ok || err != nil || cut != 5 {
		t.Fatalf("ActivateNow = %d, %v, %v; want 5, true", cut, ok, err)
	}
	if ret, m := runMarked(t, prog, frame); ret != offload.ActionRedirect || m.Seq != 0 {
		t.Fatalf("after ActivateNow: action %d mark %+v; want redirect, unmarked", ret, m)
	}
	if _, ok, err := prog.ActivateNow(e, vs, oc, pd); ok || err != nil {
		t.Fatalf("ActivateNow of an active flow: %v %v; want false", ok, err)
	}
	if ok, err := prog.TakeBack(e); !ok || err != nil {
		t.Fatal(ok, err)
	}

	// Concurrently.
	pd, err = prog.OfferPending(e, vs, oc)
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		ret uint32
		seq uint32
	}
	// Each goroutine runs frames until 100 after the activation (a loaded
	// machine may run ActivateNow late: a fixed count could all be done
	// before it), at most maxPerG.
	const maxPerG, afterActivation = 1 << 20, 100
	var activated atomic.Bool
	var runs [2][]run
	var started sync.WaitGroup
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := range runs {
		started.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]byte, len(frame)+offload.MarkLen+64)
			left := afterActivation
			for i := range maxPerG {
				if i == 100 {
					started.Done()
				}
				if activated.Load() {
					if left == 0 && i > 100 {
						return
					}
					left--
				}
				opts := &ebpf.RunOptions{Data: frame, DataOut: out}
				ret, err := prog.EBPF(offload.PortA).Run(opts)
				if err != nil {
					errs <- err
					if i < 100 {
						started.Done()
					}
					return
				}
				r := run{ret: ret}
				if meta := len(opts.DataOut) - len(frame); meta == offload.MarkLen {
					r.seq = offload.ReadMark(opts.DataOut[:meta]).Seq
				}
				runs[g] = append(runs[g], r)
			}
		}()
	}
	started.Wait() // both goroutines are numbering frames
	cut, ok, err = prog.ActivateNow(e, vs, oc, pd)
	activated.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !ok || err != nil {
		t.Fatalf("ActivateNow under load: %v %v", ok, err)
	}
	seen := make(map[uint32]int)
	var taken, lateBusy uint64
	for g, rs := range runs {
		after := false
		for i, r := range rs {
			switch r.ret {
			case offload.ActionRedirect:
				after = true
				taken++
			case offload.ActionPass:
				// After the switch the only punt allowed is an
				// unmarked one of a lock that stayed held (the other
				// goroutine's CPU preempted inside the program):
				// PuntBusy, counted and checked below.
				if after && r.seq == 0 {
					lateBusy++
					continue
				}
				if after {
					t.Fatalf("goroutine %d run %d: punted (mark %d) after a taken frame", g, i, r.seq)
				}
				if r.seq == 0 || r.seq > cut {
					t.Fatalf("goroutine %d run %d: mark %d, cut %d", g, i, r.seq, cut)
				}
				seen[r.seq]++
			default:
				t.Fatalf("goroutine %d run %d: action %d", g, i, r.ret)
			}
		}
	}
	for s := uint32(1); s <= cut; s++ {
		if seen[s] != 1 {
			t.Fatalf("mark %d punted %d times (cut %d)", s, seen[s], cut)
		}
	}
	if lateBusy > 0 {
		st, err := prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if busy := st[offload.PortA].Punts[offload.PuntBusy]; lateBusy > busy {
			t.Fatalf("%d unmarked punts after taken frames, %d counted busy: the others had no reason", lateBusy, busy)
		}
		t.Logf("%d punts after the switch, each a busy lock (counted)", lateBusy)
	}
	if uint32(len(seen)) != cut || cut < 200 || taken == 0 {
		t.Fatalf("%d marks, cut %d, %d taken: want 1..cut, at least the 200 before the activation, some taken after", len(seen), cut, taken)
	}
	var u offload.Usage
	if ok, err := prog.TakeBackUsage(e, &u); !ok || err != nil || u.Packets[0] != taken {
		t.Fatalf("TakeBack: %v %v, %d packets; want %d taken", ok, err, u.Packets[0], taken)
	}
	t.Logf("cut at %d of %d frames, %d taken after", cut, len(runs[0])+len(runs[1]), taken)
}
