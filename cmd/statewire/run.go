package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/ring"
)

// datapathFlags are the flags that size and place the AF_XDP datapath.
type datapathFlags struct {
	portA, portB  string
	cores, queues int
	ringSize      int
	rxSize        int
	txSize        int
	fillSize      int
	compSize      int
	frameSize     int
	frames        int
	batch         int
	busyPoll      bool
	socketBusy    ring.BusyPoll
	xdpMode       string
	attach        string
	cpus          string
	rtPriority    int
	idleSpin      time.Duration
	offload       string
	offloadFlows  int
	failMode      string
}

func addDatapathFlags(fs *flag.FlagSet, ports bool) *datapathFlags {
	d := bridge.DefaultDatapathConfig()
	df := &datapathFlags{}
	if ports {
		fs.StringVar(&df.portA, "port-a", "", "interface of port A (required)")
		fs.StringVar(&df.portB, "port-b", "", "interface of port B (required)")
	}
	fs.IntVar(&df.cores, "cores", d.Cores, "workers, one pinned OS thread and one flow-table shard each")
	fs.IntVar(&df.queues, "queues", 0, "device queues served on each port (default: --cores); worker i serves queues i, i+cores, ...")
	fs.IntVar(&df.ringSize, "ring-size", d.RXSize, "size of every AF_XDP ring (RX, TX, fill, completion); a power of two")
	fs.IntVar(&df.rxSize, "rx-size", 0, "RX ring size (default --ring-size)")
	fs.IntVar(&df.txSize, "tx-size", 0, "TX ring size (default --ring-size)")
	fs.IntVar(&df.fillSize, "fill-size", 0, "fill ring size (default --ring-size)")
	fs.IntVar(&df.compSize, "completion-size", 0, "completion ring size (default --ring-size)")
	fs.IntVar(&df.frameSize, "frame-size", d.FrameSize, "UMEM frame (buffer) size, 2048 or 4096; 0 derives it from the ports' MTU (4096 above MTU 1770). A frame longer than one buffer (MTU + 22 > frame-size - 256) travels as a chain of buffers (AF_XDP multi-buffer)")
	fs.IntVar(&df.frames, "frames", 0, "UMEM frames per queue, shared by both ports (default 4 x ring size); a power of two")
	fs.IntVar(&df.batch, "batch", d.Batch, "most descriptors taken from an RX ring at once")
	fs.BoolVar(&df.busyPoll, "busy-poll", false, "spin when idle instead of sleeping (until a frame or a wake-up) after a moment without frames (one full core per worker)")
	fs.IntVar(&df.socketBusy.Usecs, "busy-poll-usecs", 0, "SO_BUSY_POLL on every AF_XDP socket: microseconds a receive call may run the device's NAPI poll itself (0: off; see README, Latency)")
	fs.IntVar(&df.socketBusy.Budget, "busy-poll-budget", 0, "SO_BUSY_POLL_BUDGET: frames per busy-poll NAPI run (0: the kernel's default)")
	fs.BoolVar(&df.socketBusy.Prefer, "prefer-busy-poll", false, "SO_PREFER_BUSY_POLL: keep the device's interrupts off while the workers busy poll (with napi_defer_hard_irqs and gro_flush_timeout set; see README, Latency)")
	fs.StringVar(&df.xdpMode, "xdp-mode", "auto", "AF_XDP bind mode: auto (zero-copy, else copy), zerocopy or copy")
	fs.StringVar(&df.attach, "attach", "native", "XDP attach mode: native (driver) or generic (skb, any device)")
	fs.StringVar(&df.cpus, "cpus", "", "comma-separated CPU per worker to pin its thread to, e.g. 2,3 (default: unpinned threads)")
	fs.IntVar(&df.rtPriority, "rt-priority", 0, "run each worker's thread under SCHED_FIFO at this priority (1-99; 0: off): other tasks on its CPU no longer\n"+
		"take it for a scheduler slice (milliseconds) while frames wait; an idle worker then sleeps after 50 µs (see deploy/README.md, Latency)")
	fs.DurationVar(&df.idleSpin, "idle-spin", 0, "how long an idle worker keeps polling after its last frame before it sleeps (default 1ms, 50µs with\n"+
		"--rt-priority; a real-time worker never spins more than 85% of any 100 ms: the kernel would throttle it)")
	fs.StringVar(&df.offload, "offload", "auto", "XDP fast path for established flows (forwarded in the kernel, judged exactly as the\n"+
		"userspace tracker would): auto (on when the program attaches in native mode and the\n"+
		"ports can take XDP redirects: on veth the peer needs GRO on or an XDP program; else\n"+
		"off, and the log says why), on (fail to start without it) or off (every frame to AF_XDP)")
	fs.IntVar(&df.offloadFlows, "offload-flows", 0, "size of the fast-path flow map (default: the flow table's maximum entries)")
	if ports {
		fs.StringVar(&df.failMode, "fail-mode", "closed", "what passes while no statewire process serves the ports: closed (nothing; no\n"+
			"XDP program is left after exit) or open (the XDP program stays attached, pinned in\n"+
			"/sys/fs/bpf/statewire/NAME, after any exit including kill -9, and forwards every frame\n"+
			"unchanged and unjudged until the next start with the same --name takes over without a\n"+
			"gap; on veth the ports' peers need GRO on or an XDP program; statewire detach --name\n"+
			"NAME removes it)")
	}
	return df
}

// config turns the flags into a datapath configuration.
func (df *datapathFlags) config() (bridge.DatapathConfig, error) {
	c := bridge.DefaultDatapathConfig()
	c.PortA, c.PortB = df.portA, df.portB
	c.Cores, c.Queues = df.cores, df.queues
	pick := func(v int) int {
		if v != 0 {
			return v
		}
		return df.ringSize
	}
	c.RXSize, c.TXSize = pick(df.rxSize), pick(df.txSize)
	c.FillSize, c.CompletionSize = pick(df.fillSize), pick(df.compSize)
	c.FrameSize, c.Batch, c.BusyPoll = df.frameSize, df.batch, df.busyPoll
	c.SocketBusyPoll = df.socketBusy
	c.RTPriority = df.rtPriority
	c.IdleSpin = df.idleSpin
	if df.socketBusy.Usecs < 0 || df.socketBusy.Budget < 0 {
		return c, fmt.Errorf("--busy-poll-usecs %d and --busy-poll-budget %d: must be 0 (off) or positive", df.socketBusy.Usecs, df.socketBusy.Budget)
	}
	c.Frames = df.frames
	if c.Frames == 0 {
		// Enough for both ports' fill and TX rings, rounded up to a power
		// of two so that a bad ring size is what the error names.
		c.Frames = 1
		for c.Frames < 2*(c.FillSize+c.TXSize) {
			c.Frames <<= 1
		}
	}
	if df.cpus != "" {
		for _, f := range strings.Split(df.cpus, ",") {
			cpu, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return c, fmt.Errorf("--cpus: %q is not a CPU number", f)
			}
			c.CPUs = append(c.CPUs, cpu)
		}
	}
	m, err := ring.ParseMode(df.xdpMode)
	if err != nil {
		return c, fmt.Errorf("--xdp-mode: %w", err)
	}
	c.XDPMode = m
	if c.Offload, err = bridge.ParseOffloadMode(df.offload); err != nil {
		return c, fmt.Errorf("--offload: %w", err)
	}
	c.OffloadFlows = df.offloadFlows
	switch df.failMode {
	case "closed", "":
	case "open":
		c.FailOpen = true
	default:
		return c, fmt.Errorf("--fail-mode must be closed or open, got %q", df.failMode)
	}
	switch df.attach {
	case "native":
		c.Attach = offload.Native
	case "generic":
		c.Attach = offload.Generic
	default:
		return c, fmt.Errorf("--attach must be native or generic, got %q", df.attach)
	}
	return c, nil
}

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	df := addDatapathFlags(fs, true)
	cf := addConntrackFlags(fs, true)
	ctlf := control.AddFlags(fs)
	syncf := addSyncFlags(fs)
	interval := fs.Duration("stats-interval", 0, "print a throughput line this often (e.g. 1s); 0: only the totals at exit")
	stateFile := fs.String("state-file", "", "file the connection table, expectations and helper state live in; the next start with the\n"+
		"same --name adopts them, after a graceful stop or a crash (default /run/statewire/NAME.table;\n"+
		"\"none\": in this process only, a restart forgets every connection)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire run --port-a IF --port-b IF [flags]\n\n"+
			"Bridges two interfaces over AF_XDP: every frame is tracked with Linux conntrack\n"+
			"semantics, judged by the FORWARD rules and, when accepted, sent out of the other\n"+
			"port unchanged. SIGINT or SIGTERM detaches the XDP programs (with --fail-mode=open\n"+
			"they stay and forward every frame until the next start) and prints the totals.\n\n"+
			"The connection table lives in --state-file: started again with the same --name\n"+
			"(after SIGTERM, systemctl restart or a crash), statewire adopts its connections.\n\n"+
			"The control socket (--name, --control-socket) serves statewire conntrack,\n"+
			"sysctl, rules and sync; SIGHUP reloads the --rules files.\n\n"+
			"With --sync-listen and --sync-peer it keeps a peer bridge's table in step\n"+
			"(conntrackd's protocol): see statewire sync -h and deploy/README.md.\n\n"+
			"Example:\n  statewire run --port-a enp1s0f0 --port-b enp1s0f1 --cores 4 --queues 4 \\\n"+
			"      --rules fw.rules --stats-interval 1s\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || df.portA == "" || df.portB == "" {
		fmt.Fprintf(stderr, "statewire run: --port-a and --port-b are required\n\n")
		fs.Usage()
		return errUsage
	}
	cfg, err := df.config()
	if err != nil {
		return err
	}
	settings, tcfg, err := cf.settings([2]string{df.portA, df.portB})
	if err != nil {
		return err
	}
	cfg.Settings, cfg.Table = settings, tcfg
	cfg.StateFile = stateFilePath(*stateFile, ctlf.Name, [2]string{df.portA, df.portB})
	cfg.Name = ctlf.InstanceName([2]string{df.portA, df.portB})
	logger, err := ctlf.Logger(stderr)
	if err != nil {
		return err
	}
	cfg.Logf = func(format string, args ...any) { logger.Info(fmt.Sprintf(format, args...)) }
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		return err
	}
	// LOG lines (and INVALID ones) go to statewire's log, control socket
	// or not.
	dp.Control().SetLogger(logger)
	for _, ifc := range []string{df.portA, df.portB} {
		if n := rxQueues(ifc); n > dp.Config().Queues {
			fmt.Fprintf(stderr, "statewire: warning: %s has %d RX queues but --queues is %d: frames on queues %d..%d are dropped "+
				"(raise --queues or reduce the NIC's queues with ethtool -L %s combined %d)\n",
				ifc, n, dp.Config().Queues, dp.Config().Queues, n-1, ifc, dp.Config().Queues)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	if err := dp.Start(); err != nil {
		return err
	}
	// The state sync reads the workers' events and commits through them:
	// it starts after the datapath and stops before it.
	syncer, err := syncf.start(dp, logger)
	if err != nil {
		dp.Stop()
		return err
	}
	// The control socket (conntrack -L/-D/-F, sysctl, rules; SIGHUP reloads
	// the rule files) and metrics need running workers: they start after
	// the datapath and stop before it.
	opts := control.Options{
		Ports:     [2]string{df.portA, df.portB},
		RulesPath: cf.rules, Rules6Path: cf.rules6, IPSetPaths: cf.ipsets,
		ReloadOnSIGHUP: true, Logger: logger,
	}
	if syncer != nil {
		opts.Sync = syncer
		defer syncer.Close()
	}
	stopCtl, err := ctlf.Start(dp, opts)
	if err != nil {
		dp.Stop()
		return err
	}
	var tick <-chan time.Time
	if *interval > 0 {
		t := time.NewTicker(*interval)
		defer t.Stop()
		tick = t.C
	}
	meter := newMeter(dp.Stats())
	for {
		select {
		case <-tick:
			fmt.Fprintln(stdout, meter.line(dp.Stats(), dp.Table().Len()))
		case s := <-sig:
			fmt.Fprintf(stderr, "statewire: %v: stopping\n", s)
			stopCtl()
			if syncer != nil {
				syncer.Close()
			}
			st, err := dp.Stop()
			printTotals(stdout, &st)
			if cerr := st.CheckConservation(); cerr != nil {
				fmt.Fprintf(stderr, "statewire: frame accounting: %v\n", cerr)
			}
			return err
		}
	}
}

// stateFilePath returns the state file the --state-file flag selects ("" for
// none): by default NAME.table beside the control socket, NAME being the
// instance name (--name, default PORTA-PORTB), so a restart with the same
// name finds it.
func stateFilePath(flagValue, name string, ports [2]string) string {
	switch flagValue {
	case "none":
		return ""
	case "":
		if name == "" {
			name = ports[0] + "-" + ports[1]
		}
		return filepath.Join(control.SocketDir, name+".table")
	}
	return flagValue
}

// rxQueues returns the number of RX queues sysfs shows for ifc (0 when it
// cannot tell).
func rxQueues(ifc string) int {
	ents, err := os.ReadDir(filepath.Join("/sys/class/net", ifc, "queues"))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "rx-") {
			n++
		}
	}
	return n
}

// meter turns successive counter snapshots into rates.
type meter struct {
	last bridge.DatapathStats
	at   time.Time
}

func newMeter(s bridge.DatapathStats) *meter { return &meter{last: s, at: time.Now()} }

// line returns one throughput line since the previous call.
func (m *meter) line(s bridge.DatapathStats, flows int) string {
	now := time.Now()
	dt := now.Sub(m.at).Seconds()
	if dt <= 0 {
		dt = 1
	}
	var b [2]string
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		cur, prev := s.Total(p), m.last.Total(p)
		b[p] = fmt.Sprintf("%s->%s %.0f pps %.1f Mbit/s fwd %.0f pps drop %.0f pps",
			p, p.Other(), float64(cur.RX-prev.RX)/dt, float64(cur.RXBytes-prev.RXBytes)*8/dt/1e6,
			float64(cur.Forwarded-prev.Forwarded)/dt, float64(cur.Dropped()-prev.Dropped())/dt)
	}
	fast := ""
	if s.Fast.On {
		var cur, prev uint64
		for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
			cur += s.Fast.Packets(p)
			prev += m.last.Fast.Packets(p)
		}
		fast = fmt.Sprintf(" | fast path %.0f pps", float64(cur-prev)/dt)
	}
	m.last, m.at = s, now
	return fmt.Sprintf("%s | %s%s | flows %d", b[0], b[1], fast, flows)
}

// printTotals prints the final counters per direction and drop reason.
func printTotals(w io.Writer, s *bridge.DatapathStats) {
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		t := s.Total(p)
		fmt.Fprintf(w, "%s->%s: %d frames in (%d bytes), %d forwarded, %d dropped", p, p.Other(),
			t.RX, t.RXBytes, t.Forwarded, t.Dropped())
		if d := t.DropList(); d != "" {
			fmt.Fprintf(w, " %s", d)
		}
		if t.HandedOff > 0 {
			fmt.Fprintf(w, "; %d via another core", t.HandedOff)
		}
		if k := s.KernelDrops(p); k > 0 {
			fmt.Fprintf(w, "; kernel dropped %d before RX", k)
		}
		if u := s.Unsent(p.Other()); u > 0 {
			fmt.Fprintf(w, "; %d of the forwarded never left %s (still on its TX ring at stop)", u, p.Other())
		}
		fmt.Fprintln(w)
	}
	if s.Fast.On {
		// Fast-path frames never reach the sockets: they are not in the
		// frames in/forwarded above, nor in the frame accounting.
		f := &s.Pipeline.Fast
		fmt.Fprintf(w, "fast path (XDP, not counted above): A->B %d frames, B->A %d frames; flows offered %d, taken back",
			s.Fast.Packets(bridge.PortA), s.Fast.Packets(bridge.PortB), f.Offered)
		for i, n := range f.TakenBack {
			fmt.Fprintf(w, " %s=%d", bridge.TakeBackNames[i], n)
		}
		fmt.Fprintf(w, ", refused %d; activated %d (forced %d), handover drops %d\n", f.Refused, f.Activated, f.Forced, f.Handover)
	}
	fmt.Fprintf(w, "states:")
	for i, n := range s.Pipeline.States {
		if n > 0 {
			fmt.Fprintf(w, " %s=%d", bridge.StateNames[i], n)
		}
	}
	fmt.Fprintln(w)
	printTargets(w, &s.Pipeline.Targets)
	if n := s.Pipeline.CsumCompleted; n > 0 {
		// Hosts that offload checksums (a veth's default) send partial
		// ones; say that they were seen and fixed, not dropped.
		fmt.Fprintf(w, "partial checksums (sender offloads them) completed in %d forwarded frames\n", n)
	}
}
