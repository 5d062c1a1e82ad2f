package bridge

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/sched"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/ring"
	"golang.org/x/sys/unix"
)

// ErrDatapathConfig is wrapped by every DatapathConfig validation error.
var ErrDatapathConfig = errors.New("bridge: invalid datapath config")

// DatapathConfig sizes and places the AF_XDP datapath. Zero fields take the
// defaults of DefaultDatapathConfig. It is a plain value: NewDatapath keeps a
// copy, so the caller may reuse or change its own afterwards.
type DatapathConfig struct {
	// PortA and PortB are the interface names of the two ports. Frames
	// accepted on one leave by the other.
	PortA, PortB string
	// Cores is the number of workers, each a goroutine locked to its OS
	// thread, and the number of flow-table shards (worker i owns shard i).
	Cores int
	// Queues is the number of device queues served on each port; worker i
	// serves queues i, i+Cores, i+2*Cores... of both ports. It must be at
	// least Cores and should cover every queue the NIC receives on: the XDP
	// program drops frames of queues without a socket.
	Queues int
	// RXSize, TXSize, FillSize and CompletionSize are the AF_XDP ring
	// sizes of every socket (powers of two).
	RXSize, TXSize, FillSize, CompletionSize int
	// FrameSize is the UMEM frame size (2048 or 4096): one buffer, of
	// which 256 bytes are headroom. 0 (the default) derives it from the
	// ports' MTU at Start: 2048 while a frame fits one buffer (MTU up to
	// 1770), else 4096. A frame longer than one buffer is received and
	// sent as a chain of buffers (AF_XDP multi-buffer); fewer, larger
	// buffers cost less per frame (each is a descriptor on four rings, and
	// copy-mode TX sends 32 descriptors per sendto).
	FrameSize int
	// Frames is the number of UMEM frames of each queue, shared by the
	// sockets of port A and port B of that queue (a power of two).
	Frames int
	// Batch is the most descriptors taken from an RX ring at once.
	Batch int
	// BusyPoll keeps workers spinning when idle; otherwise a worker
	// spins for a moment after its last frame and then sleeps (epoll)
	// until a frame, a wake-up or its next timer (datapath_idle.go).
	BusyPoll bool
	// SocketBusyPoll sets the kernel's busy-poll options on every AF_XDP
	// socket (SO_BUSY_POLL, SO_BUSY_POLL_BUDGET, SO_PREFER_BUSY_POLL);
	// with any set, a spinning worker calls recvfrom on its sockets,
	// which runs the device's NAPI poll. A kernel that refuses one is
	// logged and the datapath runs without it. See README, "Latency".
	SocketBusyPoll ring.BusyPoll
	// XDPMode is the AF_XDP bind mode: auto (zero-copy, else copy),
	// zerocopy (fail without it) or copy.
	XDPMode ring.Mode
	// Attach is the XDP attach mode: native (driver) or generic (skb).
	Attach offload.Mode
	// Offload selects the XDP fast path (package offload; DESIGN.md "Two
	// levels"): off (the zero value: every frame goes to the sockets), on
	// (Start fails when the fast path cannot load or attach) or auto (on
	// when it loads and attaches in native mode and redirects between the
	// ports work, else off with the reason logged).
	Offload OffloadMode
	// OffloadFlows sizes the fast-path flow map; 0: the flow table's
	// maximum entries.
	OffloadFlows int
	// Name is the bridge's name: its XDP program's pins live in
	// offload.PinDir(Name). A start adopts the pins an earlier run left
	// there (no gap). "" : no pins, nothing adopted.
	Name string
	// FailOpen (--fail-mode=open) keeps the XDP program attached and
	// pinned after the process exits, however it exits; while no worker
	// is registered it forwards every frame unchanged to the other port
	// and counts it. Needs Name. Off (closed): nothing passes without the
	// process, and no pin is left.
	FailOpen bool
	// Handoff is the size of each SPSC ring between two workers (a power of
	// two); unused with one worker.
	Handoff int
	// Settings are the pipeline knobs (rules, conntrack, non-IP); nil
	// means DefaultSettings.
	Settings *Settings
	// Table sizes the flow table; Shards is forced to Cores.
	Table flowtable.Config
	// CPUs, when set, pins worker i's OS thread to CPU CPUs[i] (one entry
	// per worker). Empty: workers are locked to their threads but the
	// scheduler places the threads.
	CPUs []int
	// RTPriority, when positive, runs each worker's OS thread under the
	// real-time policy SCHED_FIFO at this priority (1-99), and an idle
	// worker then sleeps in the kernel after rtIdleSpin instead of
	// idleSpinTime (datapath_sched.go). 0: the normal policy.
	RTPriority int
	// IdleSpin is how long an idle worker keeps polling after its last
	// frame before it sleeps (0: idleSpinTime, or rtIdleSpin with
	// RTPriority). Longer spins save wake-ups (tens of microseconds on a
	// VM) when frames come with gaps; a real-time worker's spin is
	// bounded by its budget (rtBudget) whatever this says.
	IdleSpin time.Duration
	// StateFile, when set, is the file the flow table lives in (package
	// flowtable, Open), e.g. /run/statewire/NAME.table: a later datapath
	// given the same file adopts the connections, expectations and helper
	// state this one leaves, after a graceful Stop or a crash. Empty: the
	// table lives in this process only.
	StateFile string
	// Logf receives notable events (bind mode obtained, stale programs
	// replaced). nil discards them.
	Logf func(format string, args ...any)

	// Set by checkInterfaces from the ports' MTU: a port whose frames do
	// not fit one buffer (FrameSize - 256) makes the datapath bind with
	// AF_XDP multi-buffer; wireMax is the largest frame either port can
	// carry (MTU + Ethernet header + two tags).
	multiBuffer bool
	wireMax     int
}

// DefaultDatapathConfig returns one worker on one queue, 2048-entry rings,
// 8192 frames per queue of a size derived from the MTU, batches of 64, auto bind mode and
// native attach. The ports must still be named.
func DefaultDatapathConfig() DatapathConfig {
	return DatapathConfig{
		Cores: 1, Queues: 1,
		RXSize: 2048, TXSize: 2048, FillSize: 2048, CompletionSize: 2048,
		Frames: 8192, Batch: 64,
		XDPMode: ring.ModeAuto, Attach: offload.Native, Handoff: 1024,
	}
}

// withDefaults fills zero fields.
func (c DatapathConfig) withDefaults() DatapathConfig {
	d := DefaultDatapathConfig()
	if c.Cores == 0 {
		c.Cores = d.Cores
	}
	if c.Queues == 0 {
		c.Queues = c.Cores
	}
	for _, f := range []struct{ v, def *int }{
		{&c.RXSize, &d.RXSize}, {&c.TXSize, &d.TXSize}, {&c.FillSize, &d.FillSize},
		{&c.CompletionSize, &d.CompletionSize},
		{&c.Frames, &d.Frames}, {&c.Batch, &d.Batch}, {&c.Handoff, &d.Handoff},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if c.Settings == nil {
		c.Settings = DefaultSettings()
	}
	return c
}

// maxBatch bounds Batch so the per-batch scratch arrays are fixed-size.
const maxBatch = 256

// l2Overhead is what a frame carries beyond the MTU: Ethernet header and
// two VLAN tags (802.1ad + 802.1Q).
const l2Overhead = 14 + 8

// xdpHeadroom is the kernel's XDP_PACKET_HEADROOM, reserved in every frame.
const xdpHeadroom = 256

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }

// ringConfig is the UMEM configuration of one queue.
func (c *DatapathConfig) ringConfig() ring.Config {
	return ring.Config{
		Frames: c.Frames, FrameSize: c.FrameSize,
		FillSize: c.FillSize, CompletionSize: c.CompletionSize,
		RXSize: c.RXSize, TXSize: c.TXSize, Mode: c.XDPMode,
	}
}

// Validate reports the first problem with c (defaults filled in) that can
// be found without touching the interfaces, wrapping ErrDatapathConfig.
func (c DatapathConfig) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrDatapathConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.PortA == "" || c.PortB == "":
		return bad("both ports must be named (port A %q, port B %q)", c.PortA, c.PortB)
	case c.PortA == c.PortB:
		return bad("port A and port B are both %q: they must differ", c.PortA)
	case c.Cores < 1:
		return bad("cores %d: must be at least 1", c.Cores)
	case c.Queues < c.Cores:
		return bad("queues %d fewer than cores %d: every worker needs a queue", c.Queues, c.Cores)
	case c.Queues > offload.DefaultQueues:
		return bad("queues %d: at most %d", c.Queues, offload.DefaultQueues)
	case c.Batch < 1 || c.Batch > maxBatch:
		return bad("batch %d: must be in [1, %d]", c.Batch, maxBatch)
	case !isPow2(c.Handoff):
		return bad("handoff ring size %d: must be a power of two", c.Handoff)
	case c.Attach != offload.Native && c.Attach != offload.Generic:
		return bad("attach mode %d: must be native or generic", int(c.Attach))
	case c.Offload > OffloadOn:
		return bad("offload mode %d: must be auto, on or off", int(c.Offload))
	case c.OffloadFlows < 0 || c.OffloadFlows > 1<<26:
		return bad("offload flows %d: must be in [0, %d]", c.OffloadFlows, 1<<26)
	case c.FailOpen && c.Name == "":
		return bad("fail-open needs the bridge's name: its XDP program is pinned under it (--name)")
	case c.Name != "" && pinDirErr(c.Name) != nil:
		return bad("%v", pinDirErr(c.Name))
	case c.RTPriority < 0 || c.RTPriority > 99:
		return bad("real-time priority %d: must be 0 (off) or 1-99 (SCHED_FIFO)", c.RTPriority)
	case c.IdleSpin < 0 || c.IdleSpin > time.Second:
		return bad("idle spin %v: must be in [0, 1s] (0: the default)", c.IdleSpin)
	case c.RTPriority > 0 && c.BusyPoll:
		return bad("busy polling with a real-time priority: a real-time worker that never sleeps takes its CPU from every other task; use one or the other")
	case len(c.CPUs) != 0 && len(c.CPUs) != c.Cores:
		return bad("%d CPUs listed for %d workers: list one per worker", len(c.CPUs), c.Cores)
	}
	seen := map[int]bool{}
	// The CPUs this process may use are its affinity (taskset, the
	// cgroup's cpuset), not 0..NumCPU-1: under taskset -c 2,3 NumCPU is
	// 2 and CPUs 2 and 3 are the right ones.
	allowed, err := sched.Allowed()
	if err != nil {
		allowed = make([]int, runtime.NumCPU())
		for i := range allowed {
			allowed[i] = i
		}
	}
	for _, cpu := range c.CPUs {
		if !slices.Contains(allowed, cpu) {
			return bad("CPU %d: not one this process may run on (CPUs %s, as taskset -c and the cgroup's cpuset allow)", cpu, sched.List(allowed))
		}
		if seen[cpu] {
			return bad("CPU %d listed twice: one worker per CPU", cpu)
		}
		seen[cpu] = true
	}
	rc := c.ringConfig()
	if rc.FrameSize == 0 {
		rc.FrameSize = 2048 // derived at Start; the rest must hold for either
	}
	if err := rc.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrDatapathConfig, err)
	}
	// Both sockets of a queue fill their fill rings from one UMEM and
	// frames sit in TX rings and hand-offs too: with fewer frames the fill
	// rings run dry under load.
	if need := 2 * (c.FillSize + c.TXSize); c.Frames < need {
		return bad("frames %d per queue: need at least 2*(fill %d + tx %d) = %d for the two ports",
			c.Frames, c.FillSize, c.TXSize, need)
	}
	if c.Batch > c.RXSize {
		return bad("batch %d larger than the RX ring (%d)", c.Batch, c.RXSize)
	}
	return nil
}

// maxFrameLen is the largest frame a UMEM frame can take.
func (c *DatapathConfig) maxFrameLen() int { return c.FrameSize - xdpHeadroom }

// maxMultiBufferMTU is the largest MTU a multi-buffer frame can carry: the
// kernel chains at most ring.MaxChain buffers.
func (c *DatapathConfig) maxMultiBufferMTU() int {
	return ring.MaxChain*c.maxFrameLen() - l2Overhead
}

// maxLen is the largest frame the workers take: one buffer, or with
// multi-buffer the largest the ports' MTU allows.
func (c *DatapathConfig) maxLen() int {
	if c.multiBuffer {
		return c.wireMax
	}
	return c.maxFrameLen()
}

// checkInterfaces verifies that the ports exist in the calling thread's
// namespace and sizes the frames from their MTU: a frame that does not fit
// one buffer of FrameSize - 256 bytes (MTU above 1770 with 2048-byte
// frames, 3818 with 4096) is received and sent as a chain of buffers
// (AF_XDP multi-buffer), up to ring.MaxChain of them.
func (c *DatapathConfig) checkInterfaces() ([2]int, error) {
	var idx [2]int
	var ifcs [2]*net.Interface
	c.multiBuffer, c.wireMax = false, 0
	for i, name := range []string{c.PortA, c.PortB} {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return idx, fmt.Errorf("%w: port %s %q: %w", ErrDatapathConfig, Port(i), name, err)
		}
		ifcs[i], idx[i] = ifc, ifc.Index
		if c.FrameSize != 0 {
			if err := c.checkMTU(Port(i), ifc); err != nil {
				return idx, err
			}
		}
	}
	if c.FrameSize == 0 {
		c.FrameSize = 2048
		if max(ifcs[0].MTU, ifcs[1].MTU)+l2Overhead > c.maxFrameLen() {
			c.FrameSize = 4096
		}
		for i, ifc := range ifcs {
			if err := c.checkMTU(Port(i), ifc); err != nil {
				return idx, err
			}
		}
	}
	return idx, nil
}

// checkMTU checks that port p's frames fit a chain of buffers and notes
// whether they need more than one.
func (c *DatapathConfig) checkMTU(p Port, ifc *net.Interface) error {
	if max := c.maxMultiBufferMTU(); ifc.MTU > max {
		return fmt.Errorf("%w: port %s %q: MTU %d is too large: frames of %d bytes need more than %d buffers of %d bytes (--frame-size %d); the largest MTU that works is %d (ip link set dev %s mtu %d)",
			ErrDatapathConfig, p, ifc.Name, ifc.MTU, ifc.MTU+l2Overhead, ring.MaxChain, c.maxFrameLen(), c.FrameSize, max, ifc.Name, max)
	}
	if ifc.MTU+l2Overhead > c.maxFrameLen() {
		c.multiBuffer = true
	}
	c.wireMax = max(c.wireMax, ifc.MTU+l2Overhead)
	return nil
}

// bindsWithout reports whether a socket with rc but without multi-buffer
// binds to queue of ifindex: then multi-buffer is what the driver or mode
// refused, not the bind as such. Only on the error path.
func bindsWithout(rc ring.Config, ifindex, queue int) bool {
	rc.MultiBuffer = false
	u, err := ring.NewUMEM(rc)
	if err != nil {
		return false
	}
	defer u.Close()
	s, err := u.Open(ifindex, queue)
	if err != nil {
		return false
	}
	s.Close()
	return true
}

// multiBufferError explains a failed multi-buffer start on port p: the
// port's MTU needs it, the driver or mode refused, and without it the
// largest MTU is one buffer's.
func (c *DatapathConfig) multiBufferError(p Port, what string, err error) error {
	name := [2]string{c.PortA, c.PortB}[p]
	one := c.maxFrameLen() - l2Overhead
	mtu := 0
	if ifc, e := net.InterfaceByName(name); e == nil {
		mtu = ifc.MTU
	}
	return fmt.Errorf("%s on port %s %q: %w; its MTU %d needs frames of %d bytes, more than one %d-byte buffer (--frame-size %d), and the driver or mode (AF_XDP %s, XDP %s) cannot chain buffers (multi-buffer); the largest MTU that works here is %d (ip link set dev %s mtu %d), or try --xdp-mode=copy and --attach=generic",
		what, p, name, err, mtu, mtu+l2Overhead, c.maxFrameLen(), c.FrameSize, c.XDPMode, c.Attach, one, name, one)
}

// Datapath is the AF_XDP bridge: XDP programs on both ports redirect every
// frame to the AF_XDP socket of its queue; pinned workers run the pipeline on
// RX batches and move accepted descriptors to the other port's TX ring.
//
// Ownership: NewDatapath, Start and Stop are called by one controlling
// goroutine. Each worker owns its pipeline, its flow-table shard, the UMEMs
// and sockets of its queues and its counters. Table (for Snapshot), Control,
// Stats and Now are safe from any goroutine while the datapath runs.
type Datapath struct {
	cfg   DatapathConfig
	table *flowtable.Table
	ctl   *Control
	frags *FragCache
	epoch time.Time
	base  int64 // Now at epoch: CLOCK_MONOTONIC then, plus clockBase
	// freshState: the table's state file was made by this datapath (not
	// adopted); a Start that fails removes it.
	freshState bool
	// tableAdopted: the table came from an earlier run's state file
	// (adoptFastPath settles its offloaded entries).
	tableAdopted bool
	adoptRep     AdoptReport // what Start did with the earlier run's fast-path flows
	// busyPollRefused: a socket refused SocketBusyPoll (logged once).
	busyPollRefused bool
	workers         []*worker

	// The XDP program (package offload) of every mode; it offers flows
	// (the fast path) when Offload is on or auto and it started (fastOn);
	// fastWhy says why auto left it off. fastStats (set when fastOn) and
	// failStats (set while loaded: the fail-open counters) are what Stats
	// reads from other goroutines.
	fast      *offload.Program
	fastOn    bool
	fastWhy   string
	fastStats atomic.Pointer[offload.Program]
	failStats atomic.Pointer[offload.Program]

	stop      atomic.Bool  // workers stop taking RX
	rxStopped atomic.Int32 // workers that saw stop and take no more RX
	inflight  atomic.Int64 // frames handed to another worker, reply not handled yet
	wg        sync.WaitGroup
	started   bool
	stopped   bool
	final     atomic.Pointer[DatapathStats] // set once by Stop; Stats serves it after
	// manual (tests only): Start runs no worker goroutines; the test
	// drives worker.step, and Stop steps the workers until they are done.
	manual bool
}

// NewDatapath validates cfg and allocates the table and pipelines. Nothing
// touches the interfaces until Start.
func NewDatapath(cfg DatapathConfig) (*Datapath, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	dp := &Datapath{cfg: cfg, ctl: NewControl(cfg.Settings)}
	dp.epoch, dp.base = monotonicEpoch()
	tc := cfg.Table
	tc.Shards = cfg.Cores
	tc.AuxSize = helperSlotSize
	var t *flowtable.Table
	var err error
	if cfg.StateFile == "" {
		t, err = flowtable.New(tc)
	} else {
		var a flowtable.Adoption
		t, a, err = flowtable.Open(tc, flowtable.Persist{Path: cfg.StateFile, Now: dp.Now(), ClockBase: clockBase})
		if err == nil {
			dp.logf("%s", a.String())
			dp.freshState = !a.Adopted
			dp.tableAdopted = a.Adopted
			if a.NotTmpfs {
				dp.logf("state file %s is not on tmpfs: the kernel writes the table back to its disk every few seconds; put it on tmpfs (/run usually is)", cfg.StateFile)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	dp.table, dp.frags = t, NewFragCache(1024, t.Config().Seed)
	for i := range cfg.Cores {
		w := newWorker(dp, i)
		newWaiter := ring.NewWaiter
		if cfg.RTPriority > 0 {
			newWaiter = ring.NewThreadWaiter // datapath_sched.go
		}
		if w.waiter, err = newWaiter(); err != nil {
			dp.closeWaiters()
			t.Close(dp.Now())
			return nil, err
		}
		dp.workers = append(dp.workers, w)
	}
	// Work from other goroutines wakes a sleeping worker
	// (datapath_idle.go): control requests on its shard, new Settings.
	t.SetNotify(func(shard int) { dp.workers[shard].waiter.Wake() })
	dp.ctl.wake = dp.wakeAll
	for q := range cfg.Queues {
		w := dp.workers[q%cfg.Cores]
		w.queues = append(w.queues, &dpQueue{id: q, idx: len(w.queues)})
	}
	if cfg.Cores > 1 {
		if err := dp.linkWorkers(); err != nil {
			dp.closeWaiters()
			t.Close(dp.Now())
			return nil, err
		}
	}
	return dp, nil
}

// linkWorkers makes the request and reply SPSC rings between every ordered
// pair of workers.
func (dp *Datapath) linkWorkers() error {
	n := len(dp.workers)
	for _, w := range dp.workers {
		w.reqOut = make([]*ring.SPSC[handoff], n)
		w.reqIn = make([]*ring.SPSC[handoff], n)
		w.repOut = make([]*ring.SPSC[handoff], n)
		w.repIn = make([]*ring.SPSC[handoff], n)
		w.pending = make([]int, n)
		w.outBuf = make([][]handoff, n)
		w.repSent = make([]uint64, n)
		w.repHandled = make([]uint64, n)
		w.repSentOut = make([]atomic.Uint64, n)
		w.parsedOut = make([]handoffRing, n)
	}
	for _, from := range dp.workers {
		for _, to := range dp.workers {
			if from == to {
				continue
			}
			req, err := ring.NewSPSC[handoff](dp.cfg.Handoff)
			if err != nil {
				return err
			}
			rep, err := ring.NewSPSC[handoff](dp.cfg.Handoff)
			if err != nil {
				return err
			}
			from.reqOut[to.id], to.reqIn[from.id] = req, req
			to.repOut[from.id], from.repIn[to.id] = rep, rep
			from.outBuf[to.id] = make([]handoff, 0, maxBatch)
			from.parsedOut[to.id].slots = make([]parsed, dp.cfg.Handoff)
		}
	}
	return nil
}

// Config returns the configuration with defaults filled in.
func (dp *Datapath) Config() DatapathConfig { return dp.cfg }

// Table returns the connection table (Snapshot and Stats are safe from any
// goroutine while the workers run).
func (dp *Datapath) Table() *flowtable.Table { return dp.table }

// Control returns the settings publisher: Store a new *Settings to change
// rules or knobs while running.
func (dp *Datapath) Control() *Control { return dp.ctl }

// Now returns the datapath's clock (monotonic nanoseconds), the time base
// of every entry in the table: pass it to ctlist.Line. It is
// CLOCK_MONOTONIC plus clockBase, the same in every process of one boot,
// so the timeouts of a table adopted from a state file keep running across
// the restart; it is read through Go's monotonic clock (the same clock,
// from the vDSO) from a base taken once.
func (dp *Datapath) Now() int64 { return int64(time.Since(dp.epoch)) + dp.base }

// clockBase keeps the datapath clock away from zero, which some code reads
// as "never" (CLOCK_MONOTONIC starts near zero at boot). A state file
// records it: one written under another base is refused.
const clockBase = int64(time.Second)

// monotonicEpoch returns now and the datapath clock at that instant
// (CLOCK_MONOTONIC + clockBase).
func monotonicEpoch() (time.Time, int64) {
	var ts unix.Timespec
	epoch := time.Now()
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return epoch, ts.Nano() + clockBase
}

// offloadResumeGrace is the expiry given to an adopted offloaded entry
// whose stored expiry passed: the fast path, gone, may have kept it alive.
const offloadResumeGrace = 30 * time.Second

func (dp *Datapath) logf(format string, args ...any) {
	if dp.cfg.Logf != nil {
		dp.cfg.Logf(format, args...)
	}
}

// Start opens the sockets of every queue on both ports, loads and attaches
// one XDP program per port and starts the workers. It must run on an OS
// thread in the ports' network namespace (sockets and XDP links keep their
// namespace afterwards; the workers may run anywhere). On error everything
// opened is closed again.
func (dp *Datapath) Start() error {
	if dp.started {
		return errors.New("bridge: datapath already started")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	idx, err := dp.cfg.checkInterfaces()
	if err != nil {
		dp.releaseState()
		return err
	}
	if err := dp.open(idx); err != nil {
		dp.closeAll()
		dp.releaseState()
		return err
	}
	dp.started = true
	for _, w := range dp.workers {
		w.publish(dp.Now())
	}
	if dp.manual {
		return nil
	}
	// One P more than workers. A worker holds its P while it spins, and
	// while it is inside a sendto the runtime's sysmon finds that P in a
	// syscall with no idle P anywhere: it retakes it, and because it
	// retook something it keeps polling every 20 µs instead of backing
	// off to 10 ms. Under taskset to the workers' CPUs (GOMAXPROCS ==
	// workers) that thread then preempts the worker thousands of times a
	// second (11% of the device CPU in the CPS profile, perf/RESULTS.md).
	// With a spare P, sysmon leaves short syscalls alone.
	if n := len(dp.workers) + 1; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
	dp.wg.Add(len(dp.workers))
	for _, w := range dp.workers {
		go w.run()
	}
	return nil
}

// open makes the program, the UMEMs and the sockets, and attaches the
// program (or adopts the one an earlier run pinned).
func (dp *Datapath) open(idx [2]int) error {
	rc := dp.cfg.ringConfig()
	rc.MultiBuffer = dp.cfg.multiBuffer
	names := [2]string{dp.cfg.PortA, dp.cfg.PortB}
	for _, w := range dp.workers {
		w.maxLen = uint32(dp.cfg.maxLen())
		if dp.cfg.multiBuffer {
			w.scratch = make([]byte, int(max(w.batch, ring.MaxChain))*dp.cfg.maxLen())
			w.one = make([]byte, dp.cfg.maxLen())
		}
		for _, q := range w.queues {
			q.bufSize = uint64(dp.cfg.FrameSize)
			if dp.cfg.multiBuffer {
				q.next = make([]ring.Desc, dp.cfg.Frames)
			}
		}
	}
	if dp.cfg.FailOpen {
		if err := dp.checkFailOpen(names); err != nil {
			return err
		}
	}
	fast := dp.cfg.Offload != OffloadOff
	if dp.cfg.Offload == OffloadAuto {
		var err error
		if dp.cfg.Attach != offload.Native {
			err = fmt.Errorf("attach mode is %s; auto uses the fast path in native mode only", dp.cfg.Attach)
		}
		for p := range names {
			if err == nil {
				err = checkRedirect(names[p])
			}
		}
		if err != nil {
			dp.fallBack(err)
			fast = false
		}
	}
	if err := dp.openProgram(idx, fast); err != nil {
		if dp.cfg.Offload == OffloadOn {
			return fmt.Errorf("--offload=on: %w", err)
		}
		if !fast {
			return err
		}
		dp.fallBack(err)
		fast = false
		if err := dp.openProgram(idx, false); err != nil {
			return err
		}
	}
	for _, w := range dp.workers {
		for _, q := range w.queues {
			u, err := ring.NewUMEM(rc)
			if err != nil {
				return err
			}
			q.umem = u
			for p := range q.sock {
				s, err := dp.openSocket(u, idx[p], q.id, names[p])
				if err != nil && dp.cfg.multiBuffer && bindsWithout(rc, idx[p], q.id) {
					return dp.cfg.multiBufferError(Port(p), fmt.Sprintf("open AF_XDP socket (queue %d)", q.id), err)
				}
				if err != nil {
					return fmt.Errorf("open AF_XDP socket on %s queue %d: %w", names[p], q.id, err)
				}
				q.sock[p] = s
			}
			for _, s := range q.sock {
				if err := w.waiter.Watch(s); err != nil {
					return fmt.Errorf("worker %d: wait on the AF_XDP socket of queue %d: %w", w.id, q.id, err)
				}
				dp.setBusyPoll(w, s)
			}
			q.mode = q.sock[0].Mode()
			// Fill before the sockets are registered: the first frames
			// must find receive buffers (an adopted program is already
			// attached and sends frames to a socket the moment it is in
			// its XSKMAP).
			for _, sk := range q.sock {
				sk.Refill(uint32(dp.cfg.FillSize))
			}
		}
	}
	if err := dp.registerAll(); err != nil {
		return err
	}
	err := dp.attach(names)
	if err != nil && fast && dp.cfg.Offload == OffloadAuto {
		dp.fallBack(err)
		fast = false
		if err = dp.openProgram(idx, false); err == nil {
			if err = dp.registerAll(); err == nil {
				err = dp.attach(names)
			}
		}
	}
	if err != nil {
		if dp.cfg.Offload == OffloadOn {
			return fmt.Errorf("--offload=on: %w", err)
		}
		if ap, ok := err.(attachError); ok && dp.cfg.multiBuffer {
			return dp.cfg.multiBufferError(ap.port, "attach XDP", ap.err)
		}
		return fmt.Errorf("attach XDP (%s): %w", dp.cfg.Attach, err)
	}
	if fo, err := dp.fast.FailOpen(); err == nil && fo[0].Packets+fo[1].Packets > 0 {
		dp.logf("datapath: fail-open forwarded %d frames from %s and %d from %s unjudged while no worker ran",
			fo[0].Packets, names[0], fo[1].Packets, names[1])
	}
	dp.failStats.Store(dp.fast)
	if fast {
		dp.fastOn = true
		dp.fastStats.Store(dp.fast)
		for _, w := range dp.workers {
			w.pl.SetFastPath(dp.fast)
			w.pl.DeferActivation(true)
		}
	}
	// The flows the earlier run left in the fast path: kept where the
	// adopted table and this run's settings agree with the adopted map,
	// else taken back (adoptFastPath). Before the workers run.
	rep, err := dp.adoptFastPath(dp.tableAdopted, fast)
	if err != nil {
		return fmt.Errorf("settle the fast-path flows of the earlier run (statewire detach --name %s starts the next run without them): %w", dp.cfg.Name, err)
	}
	dp.adoptRep = rep
	dp.logAdoption(rep)
	if dp.cfg.Attach == offload.Generic {
		// Say at start what will drop frames in this mode (the sender's
		// super-frames), naming the command that fixes it.
		for p := range names {
			if err := checkGenericSegments(names[p]); err != nil {
				dp.logf("datapath: %v", err)
			}
		}
	}
	fp := "off"
	switch {
	case dp.fastOn:
		fp = "on"
	case dp.fastWhy != "":
		fp = "off (" + dp.fastWhy + ")"
	}
	mode := "closed"
	if dp.cfg.FailOpen {
		mode = "open (program pinned in " + dp.pinDir() + ")"
	}
	dp.logf("datapath %s <-> %s: %d workers, %d queues, AF_XDP %s, XDP %s, fast path %s, fail mode %s",
		names[0], names[1], dp.cfg.Cores, dp.cfg.Queues, dp.workers[0].queues[0].mode, dp.cfg.Attach, fp, mode)
	return nil
}

// socketBusyWait bounds how long open waits, beyond ring's own second,
// for a queue still held by a socket closed a moment ago. The kernel
// unbinds the closed socket's buffer pool from the queue in a workqueue
// item that takes the RTNL lock (xp_release_deferred); on a host busy
// creating and deleting network namespaces (each deletion holds RTNL
// while it tears its devices down) that took over 10 s here, and a
// restart that gives up then leaves the link down until someone starts
// it again.
const socketBusyWait = 30 * time.Second

// openSocket opens the socket of queue on port ifindex. EBUSY means a
// socket closed a moment ago still holds the queue: the kernel releases
// its buffer pool from a workqueue after the process exits, which on a
// loaded machine takes longer than ring's one-second retry after a kill -9
// (with --fail-mode=open the restart follows at once: the program keeps
// forwarding meanwhile).
func (dp *Datapath) openSocket(u *ring.UMEM, ifindex, queue int, name string) (*ring.Socket, error) {
	deadline := time.Now().Add(socketBusyWait)
	for logged := false; ; {
		s, err := u.Open(ifindex, queue)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return s, err
		}
		if !logged {
			dp.logf("datapath: %s queue %d is still held by a socket closed a moment ago (an earlier run's, released by the kernel after it exits): waiting up to %v",
				name, queue, socketBusyWait)
			logged = true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fallBack records why auto runs without the fast path and closes the
// program that was to offer flows, if any.
func (dp *Datapath) fallBack(err error) {
	dp.fastWhy = err.Error()
	dp.logf("datapath: --offload=auto: fast path off: %v", err)
	if dp.fast != nil {
		dp.failStats.Store(nil)
		dp.fast.Close()
		dp.fast = nil
	}
}

// registerAll points every queue of both ports at its socket.
func (dp *Datapath) registerAll() error {
	names := [2]string{dp.cfg.PortA, dp.cfg.PortB}
	for _, w := range dp.workers {
		for _, q := range w.queues {
			for p, s := range q.sock {
				if err := dp.fast.Register(p, q.id, s.FD()); err != nil {
					return fmt.Errorf("register %s queue %d: %w", names[p], q.id, err)
				}
			}
		}
	}
	return nil
}

// unregisterAll removes every socket from the XSKMAPs: with FailOpen the
// program forwards the frames of every queue from then on.
func (dp *Datapath) unregisterAll() error {
	var errs []error
	for _, w := range dp.workers {
		for _, q := range w.queues {
			for p := range q.sock {
				errs = append(errs, dp.fast.Unregister(p, q.id))
			}
		}
	}
	return errors.Join(errs...)
}

// attach attaches (or adopts) the program on both ports; an error is an
// attachError naming the port.
func (dp *Datapath) attach(names [2]string) error {
	for p := range names {
		if err := dp.fast.Attach(p, names[p], dp.cfg.Attach); err != nil {
			return attachError{port: Port(p), err: err}
		}
	}
	return nil
}

// attachError is an attach failure on port.
type attachError struct {
	port Port
	err  error
}

func (e attachError) Error() string { return e.err.Error() }
func (e attachError) Unwrap() error { return e.err }

// closeAll detaches the programs and closes sockets and UMEMs. Only after
// the workers stopped (or before they started).
func (dp *Datapath) closeAll() error {
	var errs []error
	if dp.fast != nil {
		dp.fastStats.Store(nil)
		dp.failStats.Store(nil)
		errs = append(errs, dp.fast.Close())
		dp.fast = nil
	}
	for _, w := range dp.workers {
		for _, q := range w.queues {
			for p, s := range q.sock {
				if s != nil {
					errs = append(errs, s.Close())
					q.sock[p] = nil
				}
			}
			if q.umem != nil {
				errs = append(errs, q.umem.Close())
				q.umem = nil
			}
		}
	}
	errs = append(errs, dp.closeWaiters())
	return errors.Join(errs...)
}

// closeWaiters closes the workers' wake-up eventfds (ring.Waiter).
func (dp *Datapath) closeWaiters() error {
	var errs []error
	for _, w := range dp.workers {
		if w.waiter != nil {
			errs = append(errs, w.waiter.Close())
		}
	}
	return errors.Join(errs...)
}

// releaseState closes the table after a failed Start: a state file this
// datapath made is removed (nothing was ever served from it), an adopted
// one is kept for the next start.
func (dp *Datapath) releaseState() {
	if dp.freshState {
		dp.table.Discard()
		return
	}
	dp.table.Close(dp.Now())
}

// stopDrainTimeout bounds how long Stop waits for frames in flight (TX rings,
// hand-offs) to complete.
const stopDrainTimeout = 2 * time.Second

// Stop detaches the XDP programs (no new frame reaches the sockets), lets the
// workers finish the hand-offs and transmissions in flight, stops them,
// closes sockets and UMEMs and returns the final totals. It is idempotent.
func (dp *Datapath) Stop() (DatapathStats, error) {
	if dp.stopped || !dp.started {
		if f := dp.final.Load(); f != nil {
			return *f, nil
		}
		return DatapathStats{}, nil
	}
	dp.stopped = true
	var errs []error
	if dp.fast != nil {
		if dp.cfg.FailOpen {
			// The program stays: without the sockets it forwards every
			// frame to the other port from now on.
			errs = append(errs, dp.unregisterAll())
		} else {
			// Detach only: the workers still take offered flows back
			// from the map as they finish; closeAll closes it.
			errs = append(errs, dp.fast.Detach())
		}
	}
	dp.stop.Store(true)
	dp.wakeAll()
	if dp.manual {
		dp.stepUntilDone()
	}
	dp.wg.Wait()
	final := dp.Stats()
	errs = append(errs, dp.settleTX(&final))
	dp.final.Store(&final)
	errs = append(errs, dp.closeAll())
	// The workers are done: the state file is left consistent and marked
	// cleanly stopped for the next process.
	errs = append(errs, dp.table.Close(dp.Now()))
	return final, errors.Join(errs...)
}

// stepUntilDone drives the workers of a manual datapath round-robin from the
// calling goroutine until every one is done.
func (dp *Datapath) stepUntilDone() {
	done := make([]bool, len(dp.workers))
	for left := len(done); left > 0; {
		for i, w := range dp.workers {
			if done[i] {
				continue
			}
			if _, d := w.step(dp.Now()); d {
				done[i] = true
				left--
			}
		}
	}
}

// settleTX runs in Stop once the workers are done (their sockets and UMEMs
// are ours now): it reaps the last completions, records in final the frames
// still on each TX ring as Unsent (forwarded, never sent: the port could
// not take them before the drain deadline), marks the totals Final and
// checks every UMEM's frame accounting.
func (dp *Datapath) settleTX(final *DatapathStats) error {
	final.Final = true
	var errs []error
	for _, w := range dp.workers {
		for _, q := range w.queues {
			qs := &final.Queues[q.id]
			for p, s := range q.sock {
				if s == nil {
					continue
				}
				s.Complete(^uint32(0))
				st, err := s.Stats()
				if err != nil {
					errs = append(errs, err)
					continue
				}
				qs.Socket[p] = st
				if st.TXBuffers > st.Completed {
					qs.Unsent[p] = st.TXBuffers - st.Completed
				}
			}
			if err := q.umem.Check(); err != nil {
				errs = append(errs, fmt.Errorf("bridge: queue %d: %w", q.id, err))
			}
		}
	}
	return errors.Join(errs...)
}
