package hasync

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/rules"
)

const oneCPUEnv = "HASYNC_ONE_CPU"

// TestFloodOneCPU: a flood of new connections through a pipeline whose
// owner (the worker) keeps the one CPU of the process busy, with the sync
// at its default priority for statewire run (SCHED_IDLE) over a real FTFW
// link to a second service. The test binary runs itself again under
// taskset -c CPU: the whole process on one CPU, as perf's default layout
// and a one-core box.
//
// It asserts that the sync takes the worker no CPU (the sync thread's
// CPU time during the flood under 5% of the worker's; at a normal
// priority it takes ~40%, perf/RESULTS.md), that the worker and a
// request/response probe (standing for the control server) never wait for
// the sync thread (no gap over 3 seconds: GOMAXPROCS has room for a P the
// descheduled sync thread keeps), that the rings overflowed and the loss
// was counted, and that once the flood ends the peer's external cache
// holds exactly the connections the filter sends (ESTABLISHED; those
// reset during the flood closed, expired and deleted), through the walk of
// the table that follows an overrun.
func TestFloodOneCPU(t *testing.T) {
	if os.Getenv(oneCPUEnv) == "" {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			t.Fatal(err)
		}
		cpu := -1
		for i := range 1024 {
			if set.IsSet(i) {
				cpu = i
			}
		}
		cmd := exec.Command("taskset", "-c", strconv.Itoa(cpu), os.Args[0], "-test.run=^TestFloodOneCPU$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), oneCPUEnv+"="+strconv.Itoa(cpu))
		out, err := cmd.CombinedOutput()
		t.Logf("under taskset -c %d:\n%s", cpu, out)
		if err != nil {
			t.Fatalf("the one-CPU run failed: %v (taskset is util-linux's, in every Debian)", err)
		}
		return
	}
	floodOneCPU(t)
}

func floodOneCPU(t *testing.T) {
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS %d under taskset to one CPU, want 1 (the runtime sizes it from the affinity)", n)
	}
	t0 := time.Now()
	const base = int64(time.Hour)
	// The test's time runs 8 times faster than the wall clock: a reset
	// connection (CLOSE, 10 s) expires during the flood.
	clock := func() int64 { return base + 8*int64(time.Since(t0)) }

	a := bigBox(t)
	b := bigBox(t)
	addrA, addrB := freeUDP(t), freeUDP(t)
	la, err := NewLink(ModeFTFW, addrA, addrB, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := NewLink(ModeFTFW, addrB, addrA, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb := New(Config{Link: lb, Filter: DefaultFilter, Peer: addrA, Table: b.tb, Now: clock})
	sb.Start()
	defer sb.Close()
	sa := New(Config{Link: la, Filter: DefaultFilter, Peer: addrB, Table: a.tb, Now: clock,
		Events: a.ctl.Events(), Shards: 1, Priority: PriorityIdle, ReconcileInterval: time.Second, CacheSize: 1 << 16})
	sa.Start()
	defer sa.Close()
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Fatalf("GOMAXPROCS %d with an idle sync thread and one worker, want 3", n)
	}
	if !testenv.WaitFor(10*time.Second, func() bool { return sa.Stats().Link.PeerHello && sb.Stats().Link.PeerHello }) {
		t.Fatalf("no FTFW handshake: %+v / %+v", sa.Stats().Link, sb.Stats().Link)
	}

	// The flood: n handshakes from the left, every fifth reset by the
	// right host once established, then established traffic until
	// floodMin has passed.
	const n = 12000
	const floodMin = 3 * time.Second
	type conn struct{ frames [][]byte }
	conns := make([]conn, n)
	var want []string
	for k := range conns {
		sport := uint16(10000 + k)
		segs := []seg{
			{fromLeft: true, sport: sport, dport: 80, seq: 1, syn: true, win: 64240, wscale: 7},
			{sport: 80, dport: sport, seq: 100, ack: 2, syn: true, ack_: true, win: 65160, wscale: 7},
			{fromLeft: true, sport: sport, dport: 80, seq: 2, ack: 101, ack_: true, win: 502, wscale: -1},
		}
		if k%5 == 4 {
			segs = append(segs, seg{sport: 80, dport: sport, seq: 101, ack: 2, rst: true, ack_: true, wscale: -1})
		} else {
			want = append(want, fmt.Sprintf("198.18.0.1:%d>198.18.0.2:80", sport))
		}
		for _, s := range segs {
			conns[k].frames = append(conns[k].frames, s.frame(t))
		}
	}
	sort.Strings(want)

	// The worker: locked to its thread, spinning through the flood, then
	// serving the table's requests (the walk's reads) as an idle worker
	// does, woken by the poster.
	wake := make(chan struct{}, 1)
	a.tb.SetNotify(func(int) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	var (
		wtid      atomic.Int32
		stop      atomic.Bool
		workerGap atomic.Int64 // longest wall time between two loops during the flood
		floodEnd  = make(chan struct{})
		done      = make(chan struct{})
		rejected  atomic.Int64
	)
	tFlood := time.Now()
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		wtid.Store(int32(unix.Gettid()))
		sh := a.tb.Shard(0)
		last := time.Now()
		for k := range conns {
			now := clock()
			for i, f := range conns[k].frames {
				in := bridge.PortA
				if i%2 == 1 {
					in = bridge.PortB
				}
				if r := a.pl.Process(f, 0, in, now); r.Verdict != bridge.Accept {
					rejected.Add(1)
				}
			}
			sh.Expire(now, 64)
			sh.ServeRequests(4096)
			if d := time.Since(last); int64(d) > workerGap.Load() {
				workerGap.Store(int64(d))
			}
			last = time.Now()
		}
		// Then forwarding only, for at least floodMin in all: the
		// established connections' last ACK again (no event), with the
		// sync's work still waiting in the full rings.
		for k := 0; time.Since(tFlood) < floodMin; k = (k + 1) % n {
			if k%5 == 4 {
				continue
			}
			now := clock()
			if r := a.pl.Process(conns[k].frames[2], 0, bridge.PortA, now); r.Verdict != bridge.Accept {
				rejected.Add(1)
			}
			sh.Expire(now, 64)
			sh.ServeRequests(4096)
			if d := time.Since(last); int64(d) > workerGap.Load() {
				workerGap.Store(int64(d))
			}
			last = time.Now()
		}
		close(floodEnd)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !stop.Load() {
			select {
			case <-wake:
			case <-tick.C:
			}
			now := clock()
			a.pl.WatchEvents(now)
			sh.Expire(now, 4096)
			sh.ServeRequests(4096)
		}
	}()
	defer func() { stop.Store(true); <-done }()

	// The probe: a UDP echo, as the control server answers a request,
	// timed every 10 ms during the flood.
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP{127, 0, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 16)
		for {
			m, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:m], from)
		}
	}()
	probe, err := net.DialUDP("udp4", nil, echo.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for wtid.Load() == 0 {
		runtime.Gosched()
	}
	cpu0w, cpu0s := threadCPU(t, int(wtid.Load())), threadCPU(t, sa.ThreadID())
	var gc0 debug.GCStats
	debug.ReadGCStats(&gc0)
	var rtts []time.Duration
	buf := make([]byte, 16)
	for flooding := true; flooding; {
		select {
		case <-floodEnd:
			flooding = false
			continue
		case <-time.After(10 * time.Millisecond):
		}
		start := time.Now()
		probe.SetDeadline(start.Add(5 * time.Second))
		if _, err := probe.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := probe.Read(buf); err != nil {
			t.Fatalf("the probe got no answer within 5 s during the flood: %v", err)
		}
		rtts = append(rtts, time.Since(start))
	}
	cpuW, cpuS := threadCPU(t, int(wtid.Load()))-cpu0w, threadCPU(t, sa.ThreadID())-cpu0s
	flood := time.Since(tFlood)
	var gc1 debug.GCStats
	gc1.PauseQuantiles = make([]time.Duration, 2)
	debug.ReadGCStats(&gc1)
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	st := sa.Stats()
	t.Logf("flood of %d connections in %v (wall): worker thread %d ticks of CPU, sync thread %d; longest worker loop %v; probe %d round trips, median %v, max %v; ring lost %d, reconciliations %d; %d GCs, longest pause %v",
		n, flood.Round(time.Millisecond), cpuW, cpuS, time.Duration(workerGap.Load()).Round(time.Microsecond), len(rtts), median(rtts), maxDur(rtts), st.RingLost, st.Reconciles, gc1.NumGC-gc0.NumGC, gc1.PauseQuantiles[1])
	if r := rejected.Load(); r != 0 {
		t.Fatalf("%d flood frames not accepted, want 0", r)
	}
	if cpuW < 20 {
		t.Fatalf("the worker used %d ticks of CPU during the flood, too few to compare with (want >= 20)", cpuW)
	}
	if cpuS*20 > cpuW {
		t.Errorf("the sync thread used %d ticks of CPU during the flood against the worker's %d: over 5%%", cpuS, cpuW)
	}
	// Generous bounds: on a loaded 2-CPU machine under -race the worker's
	// CPU is shared with other processes (gaps of ~0.9 s seen); what they
	// catch is a P held by the descheduled sync thread, which stops the
	// rest of the process until the kernel runs that thread again.
	if g := time.Duration(workerGap.Load()); g > 3*time.Second {
		t.Errorf("the worker waited %v between two loops during the flood, want < 3s", g)
	}
	if len(rtts) > 0 && maxDur(rtts) > 3*time.Second {
		t.Errorf("the probe waited up to %v for an answer during the flood, want < 3s", maxDur(rtts))
	}
	if st.RingLost == 0 {
		t.Fatalf("the event rings lost nothing during the flood (stats %+v): the sync thread kept up, so this run proves nothing about the resync", st)
	}

	// Once the flood is over the sync thread gets the CPU: the walk of the
	// table resends what the rings lost, and deletes the reset connections
	// whose destroy was lost.
	extKeys := func() []string {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		var ks []string
		for tup := range sb.ext[addrA] {
			ks = append(ks, tupleKey(tup))
		}
		sort.Strings(ks)
		return ks
	}
	if !testenv.WaitFor(60*time.Second, func() bool { return strings.Join(extKeys(), ",") == strings.Join(want, ",") }) {
		got := extKeys()
		t.Fatalf("peer's external cache holds %d connections, want the %d established ones (first got %v); sync %+v; peer %+v",
			len(got), len(want), got[:min(3, len(got))], sa.Stats(), sb.Stats())
	}
	st = sa.Stats()
	t.Logf("after the flood: %+v", st)
	if st.Reconciles == 0 || st.ReconcileSent == 0 {
		t.Errorf("reconciliations %d sending %d: want both > 0 (the walk after the overrun)", st.Reconciles, st.ReconcileSent)
	}
	if st.SendFailed != 0 || st.Link.QueueDrops != 0 {
		t.Errorf("send failed %d, link queue drops %d: want 0", st.SendFailed, st.Link.QueueDrops)
	}
	if st.Internal != len(want) {
		t.Errorf("internal cache %d, want %d", st.Internal, len(want))
	}
}

// bigBox is newBox with room for the flood.
func bigBox(t *testing.T) *box {
	t.Helper()
	tb, err := flowtable.New(flowtable.Config{Shards: 1, Buckets: 1 << 15, MaxEntries: 1 << 16, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := bridge.DefaultSettings()
	if s.Rules, err = rules.FromText("fw", fwRules, [2]string{"pa", "pb"}); err != nil {
		t.Fatal(err)
	}
	ctl := bridge.NewControl(s)
	return &box{t: t, tb: tb, ctl: ctl, pl: bridge.NewPipeline(tb, 0, ctl, nil), now: int64(time.Hour)}
}

func tupleKey(t flowtable.Tuple) string {
	return fmt.Sprintf("%v:%d>%v:%d", t.Src, t.SrcPort, t.Dst, t.DstPort)
}

// threadCPU is the user and system time of thread tid of this process, in
// clock ticks (/proc/self/task/TID/stat fields 14 and 15).
func threadCPU(t *testing.T, tid int) int64 {
	t.Helper()
	return int64(testenv.CPUTicks(t, fmt.Sprintf("/proc/self/task/%d/stat", tid)))
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)/2]
}

func maxDur(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}
