package offload_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/replay"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// udpFlow creates an unreplied UDP flow from frame in a fresh pipeline,
// arriving on port, and returns its entry and the Offer arguments.
func udpFlow(t *testing.T, prog *offload.Program, frame []byte, port int) (*flowtable.Entry, [2]uint8, offload.OfferConfig) {
	return udpFlowTB(t, prog, frame, port)
}

func udpFlowB(b *testing.B, prog *offload.Program, frame []byte) (*flowtable.Entry, [2]uint8, offload.OfferConfig) {
	return udpFlowTB(b, prog, frame, offload.PortA)
}

func udpFlowTB(t testing.TB, prog *offload.Program, frame []byte, port int) (*flowtable.Entry, [2]uint8, offload.OfferConfig) {
	t.Helper()
	s := bridge.DefaultSettings()
	rp, err := replay.New(replay.Options{Settings: s})
	if err != nil {
		t.Fatal(err)
	}
	// The first packet creates the entry; the second caches the verdict.
	for range 2 {
		r := rp.Pipeline.Process(frame, 0, bridge.Port(port), prog.Now())
		if r.Verdict != bridge.Accept || r.State != statemachine.StateNew {
			t.Fatalf("packet: %+v", r)
		}
	}
	var p packet.Packet
	packet.Parse(frame, 0, packet.Options{}, &p)
	k, _ := flowtable.KeyOf(&p)
	e := rp.Pipeline.Shard().Lookup(&k, rp.Table.HashKey(&k), 0)
	v, ok := e.CachedVerdict(statemachine.Original, s.Rules.Generation())
	if !ok {
		t.Fatal("no cached verdict")
	}
	fp := rules.CachedVerdict(v).FastPath()
	if fp == 0 {
		t.Fatalf("cached verdict %#x may not go to the fast path", v)
	}
	return e, [2]uint8{fp | uint8(port)<<6, 0}, offload.OfferConfig{Conntrack: &s.Conntrack, VerifyChecksum: true}
}

// TestRedirectTarget checks that a frame taken on port A is redirected
// through DEVMAP slot B and one on port B through slot A: with only slot B
// set, port A's frames are taken and port B's punted (no egress).
func TestRedirectTarget(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.DevMap().Put(uint32(offload.PortB), uint32(1)); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	for _, port := range []int{offload.PortA, offload.PortB} {
		e, vs, oc := udpFlow(t, prog, frame, port)
		if err := prog.Offer(e, vs, oc); err != nil {
			t.Fatal(err)
		}
		ret, err := prog.EBPF(port).Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		want := uint32(offload.ActionRedirect)
		if port == offload.PortB {
			want = offload.ActionPass
		}
		if ret != want {
			t.Errorf("port %d: got action %d, want %d", port, ret, want)
		}
		if _, err := prog.TakeBack(e); err != nil {
			t.Fatal(err)
		}
	}
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st[offload.PortA].FastPackets != 1 || st[offload.PortB].Punts[offload.PuntNoDev] != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// TestTakeBackExact races BPF_PROG_RUN on two goroutines against
// TakeBack: every frame the program took must be in the state TakeBack
// read (its packet count), and no frame run after TakeBack returned may be
// taken.
func TestTakeBackExact(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	mid := 0 // rounds where TakeBack landed between taken frames and punted ones
	for round := range 50 {
		e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
		if err := prog.Offer(e, vs, oc); err != nil {
			t.Fatal(err)
		}
		var redirected, after atomic.Int64
		var back atomic.Bool
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 400; i++ {
					done := back.Load()
					ret, err := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame})
					if err != nil {
						t.Error(err)
						return
					}
					if ret == offload.ActionRedirect {
						redirected.Add(1)
						if done {
							after.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		var u offload.Usage
		ok, err := prog.TakeBackUsage(e, &u)
		if err != nil || !ok {
			t.Fatalf("TakeBack: %v %v", ok, err)
		}
		back.Store(true)
		wg.Wait()
		if after.Load() != 0 {
			t.Fatalf("round %d: %d frames taken after TakeBack returned", round, after.Load())
		}
		if got := int64(u.Packets[0] + u.Packets[1]); got != redirected.Load() {
			t.Fatalf("round %d: %d frames redirected, TakeBack's state counts %d", round, redirected.Load(), got)
		}
		if n := redirected.Load(); n > 0 && n < 800 {
			mid++
		}
	}
	t.Logf("%d of 50 rounds took back mid-stream", mid)
	if mid == 0 {
		t.Error("TakeBack never raced the program")
	}
}

// TestClock checks the conversion between the program's clock and the
// datapath's (bridge Datapath.Now: time.Since(epoch) + 1 s).
func TestClock(t *testing.T) {
	epoch := time.Now()
	now := func() int64 { return int64(time.Since(epoch)) + int64(time.Second) }
	prog := load(t, offload.Options{MaxFlows: 16, Now: now})
	a := now()
	b := prog.Now()
	c := now()
	if b < a-int64(50*time.Microsecond) || b > c+int64(50*time.Microsecond) {
		t.Errorf("program clock %d outside [%d, %d]", b, a, c)
	}
	if got := prog.GoTime(prog.KernelTime(12345)); got != 12345 {
		t.Errorf("round trip: %d", got)
	}
}

// TestOfferRefuses checks that flows the fast path must never take are
// refused.
func TestOfferRefuses(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16})
	frame := packettest.TCP4("198.18.0.1", "198.19.0.1", 4000, 80, packettest.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000})
	s := bridge.DefaultSettings()
	rp, err := replay.New(replay.Options{Settings: s})
	if err != nil {
		t.Fatal(err)
	}
	rp.Pipeline.Process(frame, 0, bridge.PortA, prog.Now())
	var p packet.Packet
	packet.Parse(frame, 0, packet.Options{}, &p)
	k, _ := flowtable.KeyOf(&p)
	e := rp.Pipeline.Shard().Lookup(&k, rp.Table.HashKey(&k), 0)
	if err := prog.Offer(e, [2]uint8{9, 9}, offload.OfferConfig{Conntrack: &s.Conntrack}); err != offload.ErrNotEligible {
		t.Errorf("SYN_SENT flow: Offer = %v, want ErrNotEligible", err)
	}
	ue, vs, oc := udpFlow(t, prog, packettest.UDP4("198.18.0.1", "198.19.0.1", 69, 1069, []byte("x")), 0)
	ue.Helper = 2
	if err := prog.Offer(ue, vs, oc); err != offload.ErrNotEligible {
		t.Errorf("flow with a helper: Offer = %v, want ErrNotEligible", err)
	}
	ue.Helper = 0
	if err := prog.Offer(ue, vs, oc); err != nil {
		t.Fatal(err)
	}
	if err := prog.Offer(ue, vs, oc); err != offload.ErrOffered {
		t.Errorf("second Offer = %v, want ErrOffered", err)
	}
}

// TestPeekConsistent runs the program on two goroutines while Peek reads
// the flow: every read is a state some number of taken frames left
// (bytes = packets x IP length), the counts never go back, and TakeBack
// counts every frame taken. Peek reads without a kernel lock (the flow's
// lock is its revoked word), so this is what keeps it honest.
func TestPeekConsistent(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("peek"))
	const iplen = 20 + 8 + 4
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
	if err := prog.Offer(e, vs, oc); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, _, err := prog.EBPF(offload.PortA).Benchmark(frame, 64, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var last uint64
	peeks := 0
	deadline := time.Now().Add(10 * time.Second)
	for ; peeks < 2000 || (last < 20000 && time.Now().Before(deadline)); peeks++ {
		var u offload.Usage
		ok, err := prog.Peek(e, &u)
		if err != nil || !ok {
			t.Fatalf("Peek: %v %v", ok, err)
		}
		if u.Bytes[0] != u.Packets[0]*iplen {
			t.Fatalf("torn read: %d packets, %d bytes", u.Packets[0], u.Bytes[0])
		}
		if u.Packets[0] < last {
			t.Fatalf("packets went back: %d after %d", u.Packets[0], last)
		}
		last = u.Packets[0]
	}
	stop.Store(true)
	wg.Wait()
	var u offload.Usage
	if ok, err := prog.TakeBackUsage(e, &u); err != nil || !ok {
		t.Fatalf("TakeBack: %v %v", ok, err)
	}
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if u.Packets[0] != st[offload.PortA].FastPackets {
		t.Errorf("TakeBack counts %d packets, the program forwarded %d", u.Packets[0], st[offload.PortA].FastPackets)
	}
	t.Logf("%d Peeks, %d frames taken, punts %v", peeks, u.Packets[0], st[offload.PortA].Punts)
}
