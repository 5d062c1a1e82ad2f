package bridge

import (
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/rules"
)

// stepper drives a manual datapath's workers from a goroutine until
// paused, so that a test can own their shards in between.
type stepper struct {
	dp   *Datapath
	quit chan struct{}
	done chan struct{}
}

func stepAlong(dp *Datapath) *stepper {
	s := &stepper{dp: dp, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.quit:
				return
			default:
			}
			moved := 0
			for _, w := range dp.workers {
				m, _ := w.step(dp.Now())
				moved += m
			}
			if moved == 0 {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	return s
}

// pause stops the stepping goroutine and waits for it: the test owns the
// workers until the next stepAlong.
func (s *stepper) pause() {
	close(s.quit)
	<-s.done
}

// adoptFlows are the lab's UDP flows of TestDatapathAdoptFastPath, left
// 198.18.0.1:700i to right 198.18.0.2:800i, each with its receiver's
// count.
type adoptFlows struct {
	got [7]atomic.Int64 // by i, 1..6
}

// entry returns flow i's entry in dp's (one) shard, nil when none.
func (f *adoptFlows) entry(dp *Datapath, i int) *flowtable.Entry {
	var out *flowtable.Entry
	dp.workers[0].pl.shard.Range(func(e *flowtable.Entry) bool {
		if t := e.Tuple(); t.DstPort == uint16(8000+i) && t.SrcPort == uint16(7000+i) {
			out = e
			return false
		}
		return true
	})
	return out
}

// TestDatapathAdoptFastPath: a fail-open datapath with a state file and
// the fast path leaves six UDP flows in the pinned map, set up as the
// cases the next start reconciles (by hand, as a kill -9 at the wrong
// moment or a restart with other rules would leave them):
//
//  1. active in the map, entry offloaded: kept in the fast path, entry
//     offloaded, its counters carried over, never taken back;
//  2. active in the map, entry not offloaded (an orphan): revoked;
//  3. a pending offer, entry offloaded: revoked, mark cleared;
//  4. no flow in the map, entry offloaded: taken back liberally;
//  5. active, entry offloaded, but the next run's rules drop it: taken
//     back (exactly) and its datagrams dropped;
//  6. active, entry offloaded, but the entry is another connection than
//     the map's (created at another time): revoked unread, the entry
//     taken back liberally.
//
// The map's flows are forwarded during the gap (its counters grow). After
// the start the kept flow's datagrams keep being taken by the fast path.
func TestDatapathAdoptFastPath(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	hostGRO(t, l, "on")
	name := l.Prefix + "-adopt"
	dir, err := offload.PinDir(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offload.DetachPinned(dir) })
	c := DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.Offload, c.FailOpen, c.Name = OffloadOn, true, name
	c.StateFile = filepath.Join(t.TempDir(), "adopt.table")
	c.Table.MaxEntries = 4096
	c.Logf = t.Logf
	start := func(c DatapathConfig) *Datapath {
		t.Helper()
		dp, err := NewDatapath(c)
		if err != nil {
			t.Fatal(err)
		}
		dp.manual = true
		if err := l.Do(l.BridgeNS, dp.Start); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { dp.Stop() })
		return dp
	}

	var f adoptFlows
	var send [7]*net.UDPConn
	for i := 1; i <= 6; i++ {
		send[i] = udpInNS(t, l, l.LeftNS, fmt.Sprintf("198.18.0.1:%d", 7000+i))
		rx := udpInNS(t, l, l.RightNS, fmt.Sprintf("198.18.0.2:%d", 8000+i))
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := rx.ReadFromUDP(buf); err != nil {
					return
				}
				f.got[i].Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for i := 1; i <= 6; i++ {
				send[i].WriteToUDP([]byte("adopt"), &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2), Port: 8000 + i})
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// The first run: every flow offered and active.
	dp1 := start(c)
	st := stepAlong(dp1)
	if !testenv.WaitFor(10*time.Second, func() bool {
		fs := dp1.Stats().Pipeline.Fast
		return fs.Activated >= 6 && fs.InFastPath() == 6
	}) {
		st.pause()
		t.Fatalf("first run: fast path %+v, want the 6 flows offered and active", dp1.Stats().Pipeline.Fast)
	}
	st.pause()
	pl := dp1.workers[0].pl
	if len(pl.fast.pend) != 0 {
		t.Fatalf("first run: %d offers still pending", len(pl.fast.pend))
	}
	var e [7]*flowtable.Entry
	for i := 1; i <= 6; i++ {
		if e[i] = f.entry(dp1, i); e[i] == nil || !e[i].Offloaded() {
			t.Fatalf("first run: flow %d entry %v, want offloaded", i, e[i])
		}
	}
	var u1 offload.Usage
	if ok, err := dp1.fast.Peek(e[1], &u1); !ok || err != nil {
		t.Fatalf("Peek flow 1: %v %v", ok, err)
	}
	// 2: an orphan in the map.
	e[2].SetOffloaded(false)
	// 3: a pending offer.
	s1 := dp1.ctl.Load()
	oc := offload.OfferConfig{Conntrack: &s1.Conntrack, VerifyChecksum: s1.VerifyChecksum}
	if _, err := dp1.fast.TakeBack(e[3]); err != nil {
		t.Fatal(err)
	}
	vs3, _ := fastVerdicts(e[3], s1.Rules.Generation())
	if _, err := dp1.fast.OfferPending(e[3], vs3, oc); err != nil {
		t.Fatal(err)
	}
	// 4: gone from the map, still marked.
	if _, err := dp1.fast.TakeBack(e[4]); err != nil {
		t.Fatal(err)
	}
	// 6: the entry's connection created at another time than the map's
	// (UDP keeps its creation time in LastSeq, LastAck).
	e[6].Conn.TCP.LastSeq++
	if _, err := dp1.Stop(); err != nil {
		t.Fatalf("first run: Stop: %v", err)
	}

	// The gap: the pinned program forwards, the map's flows (1, 2, 5)
	// through the fast path.
	_, atStop, err := offload.PinnedFlows(dir)
	if err != nil {
		t.Fatal(err)
	}
	var inGap uint64
	gotAtStop := f.got[1].Load()
	if !testenv.WaitFor(5*time.Second, func() bool {
		_, inGap, _ = offload.PinnedFlows(dir)
		return inGap >= atStop+300 && f.got[1].Load() >= gotAtStop+100
	}) {
		t.Fatalf("gap: pinned flow packets %d -> %d, flow 1 datagrams %d -> %d; want the fast path to go on", atStop, inGap, gotAtStop, f.got[1].Load())
	}

	// The next run, whose rules drop flow 5.
	rs, err := rules.FromText("adopt.rules", "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p udp --dport 8005 -j DROP\nCOMMIT\n", [2]string{l.PortA, l.PortB})
	if err != nil {
		t.Fatal(err)
	}
	s2 := DefaultSettings()
	s2.Rules = rs
	c.Settings = s2
	dp2 := start(c)
	want := AdoptReport{Kept: 1, Refit: 1, Pending: 1, Orphans: 2, Resumed: 2}
	if dp2.adoptRep != want {
		t.Errorf("adoption: %+v, want %+v", dp2.adoptRep, want)
	}
	if n, _, err := offload.PinnedFlows(dir); n != 1 || err != nil {
		t.Errorf("pinned map after the start: %d flows (%v), want the kept one", n, err)
	}
	for i := 1; i <= 6; i++ {
		if e[i] = f.entry(dp2, i); e[i] == nil {
			t.Fatalf("second run: no entry for flow %d", i)
		}
		if got := e[i].Offloaded(); got != (i == 1) {
			t.Errorf("second run: flow %d offloaded %v, want %v", i, got, i == 1)
		}
	}
	var u2 offload.Usage
	if ok, err := dp2.fast.Peek(e[1], &u2); !ok || err != nil {
		t.Fatalf("second run: Peek flow 1: %v %v, want it in the fast path", ok, err)
	}
	if u2.Packets[0] < u1.Packets[0]+100 {
		t.Errorf("flow 1 fast-path packets: %d before the stop, %d after the start; want the gap's on top", u1.Packets[0], u2.Packets[0])
	}
	if g := dp2.workers[0].pl.stats.Fast; g.Adopted != 1 || g.InFastPath() != 1 {
		t.Errorf("second run: fast path counters %+v, want 1 adopted, 1 in the fast path", g)
	}
	st = stepAlong(dp2)
	fast0 := dp2.Stats().Fast.Ports[PortA].FastPackets
	got1, got5 := f.got[1].Load(), f.got[5].Load()
	// The flow's own fast-path count too: u2 was read before got1, so
	// datagrams in flight then count in u2 and arrive after got1 (a run
	// saw 300 more arrive and 299 more counted).
	var uw offload.Usage
	if !testenv.WaitFor(5*time.Second, func() bool {
		ok, _ := dp2.fast.Peek(e[1], &uw)
		return f.got[1].Load() >= got1+300 && dp2.Stats().Fast.Ports[PortA].FastPackets >= fast0+300 &&
			ok && uw.Packets[0] >= u2.Packets[0]+300
	}) {
		st.pause()
		t.Fatalf("second run: flow 1 datagrams %d -> %d, fast-path packets %d -> %d", got1, f.got[1].Load(), fast0, dp2.Stats().Fast.Ports[PortA].FastPackets)
	}
	st.pause()
	if !e[1].Offloaded() {
		t.Errorf("second run: flow 1 taken back")
	}
	var u3 offload.Usage
	if ok, _ := dp2.fast.Peek(e[1], &u3); !ok || u3.Packets[0] < u2.Packets[0]+300 {
		t.Errorf("second run: flow 1 fast-path packets %d -> %d (%v), want it still taken", u2.Packets[0], u3.Packets[0], ok)
	}
	fs := dp2.workers[0].pl.stats.Fast
	if fs.TakenBack != [NumTakeBackReasons]uint64{} || fs.Errors != 0 {
		t.Errorf("second run: taken back %v, errors %d; want none", fs.TakenBack, fs.Errors)
	}
	if n := f.got[5].Load(); n > got5+5 {
		t.Errorf("flow 5, dropped by the second run's rules: %d -> %d datagrams arrived", got5, n)
	}
	if d := dp2.workers[0].pl.stats.Drops[DropRule]; d < 100 {
		t.Errorf("second run: %d rule drops, want flow 5's", d)
	}
	t.Logf("gap: pinned packets %d -> %d; second run: %+v, fast path %+v", atStop, inGap, dp2.adoptRep, fs)
	if _, err := dp2.Stop(); err != nil {
		t.Errorf("second run: Stop: %v", err)
	}
}
