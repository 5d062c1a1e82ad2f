package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/statewire/statewire/lab"
)

// Options configure Run.
type Options struct {
	// Devices to compare (default AllDevices).
	Devices []string
	// FrameSizes in bytes including FCS (64, 512, 1518), or IMIX.
	FrameSizes []int
	// Flows are the flow counts (1, 1000, 100000, ...).
	Flows []int
	// Trial is the length of one trial.
	Trial time.Duration
	// NDRSteps and PDRSteps are the binary-search iterations (0: no search,
	// throughput at the generator's full rate only).
	NDRSteps, PDRSteps int
	// PDRLoss is the loss ratio PDR tolerates (0.005).
	PDRLoss float64
	// Latency measures latency percentiles at LatencyLoads of NDR.
	Latency bool
	// LatencyLoads are the fractions of NDR for latency (0.1, 0.5, 0.9).
	LatencyLoads []float64
	// LatencyInterval is the shortest time between the stamped
	// generator's calls (0: DefaultLatencyInterval; see there).
	LatencyInterval time.Duration
	// LatencyGenerator is the latency trials' generator: LatencyPaced
	// (default, ""), GenLive or GenPacket (see LatencyPaced).
	LatencyGenerator string
	// NoFloor skips the machine's latency floor (Floor) that the latency
	// trials measure first.
	NoFloor bool
	// RTPriority, when positive, runs statewire with --rt-priority and,
	// during the latency trials, ksoftirqd of the generator and device
	// CPUs under SCHED_FIFO at this priority (realtime.go), and the CPS
	// endpoints' NAPI threads one above it (they share the generator's
	// CPU with its pacing spin); 0 leaves every thread under the normal
	// policy. Quick and full options use DefaultRTPriority.
	RTPriority int
	// Statewire is the statewire binary; StatewireArgs are passed to
	// `statewire run` after --port-a/--port-b (and --rules, unless given).
	Statewire     string
	StatewireArgs []string
	// StatewireCPUs is the taskset CPU list for statewire ("" leaves it
	// unpinned).
	StatewireCPUs string
	// GenCPU is the generator's CPU; DUTCPU the CPU the kernel devices'
	// port A steers its packets to with RPS (-1: no pinning, no RPS).
	GenCPU, DUTCPU int
	// Steer is where port A's receive work runs: SteerRPS (default),
	// SteerNAPI or SteerInline (see their doc comments).
	Steer string
	// Proto is the traffic: "udp" (default) or "tcp" (every flow opened
	// with a three-way handshake first, then data segments, so they are
	// ESTABLISHED in every device; no latency: a 64-byte TCP frame has no
	// room for the stamp).
	Proto string
	// Queues is the veth queue count of every lab (0: 1).
	Queues int
	// Workers, when set, runs each statewire device once per worker count
	// K, as device NAME/wK with `--cores K --queues Queues` (workers.go).
	Workers []int
	// GenCPUs, with more than one CPU, runs the UDP flood generator as one
	// thread per CPU, the flows split between them; veth then puts them
	// on port A's queue CPU mod Queues (genmulti.go). GenCPU stays the
	// CPU of everything else that generates (probes, handshakes, CPS).
	GenCPUs []int
	// ReadyTimeout bounds the wait for statewire to forward its first frame.
	ReadyTimeout time.Duration
	// ProfileDir, when set, gets a `perf record -g` of the device CPU during
	// one extra full-rate trial per device at the first frame size (files
	// DEVICE-SIZE-FLOWS.perf.data), and of the generator CPU, where port
	// A's receive runs (DEVICE-SIZE-FLOWS.gen.perf.data); the top symbols
	// go into the report.
	// The profiled trial is not one of the measurements.
	ProfileDir string
	// Progress receives one line per trial (nil: silent).
	Progress io.Writer
	// Mode is ModeAll (default), ModeFlood or ModeCPS.
	Mode string
	// CPSTrial is the length of one connections-per-second trial and
	// CPSSteps its binary-search steps (0: the overload trial only).
	CPSTrial time.Duration
	CPSSteps int
	// CPSComplete is the share of connections that must complete for a
	// CPS trial to pass (0.995).
	CPSComplete float64
	// MTU is the MTU of every link of every lab (0: 1500). Frame sizes up
	// to MaxFrame(MTU) are allowed; statewire sizes its buffers from the
	// ports' MTU as `statewire run` does (a chain of buffers above one).
	MTU int
	// Generator is GenLive, GenPacket or "" (GenLive when every frame
	// size fits LiveMaxFrame, else GenPacket for every size of the run,
	// so that its figures compare like with like).
	Generator string
}

// MinMTU and MaxMTU bound Options.MTU: IPv6's minimum, and the largest
// MTU whose frames fit a slot of the packet generator's TX ring.
const (
	MinMTU = 1280
	MaxMTU = pktMaxData - 14
)

// MaxFrame returns the largest untagged Ethernet frame, FCS included, a
// link of the given MTU carries: MTU + 14 (header) + 4 (FCS).
func MaxFrame(mtu int) int { return mtu + 18 }

// CheckFrames is checkFrames for the command line, before any lab is built
// (Run checks again).
func CheckFrames(o *Options) error {
	if o.Mode == "" {
		o.Mode = ModeAll
	}
	return o.checkFrames()
}

// checkFrames validates o.MTU, o.FrameSizes and o.Generator, filling in the
// defaults (MTU 1500, the generator kind).
func (o *Options) checkFrames() error {
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.MTU < MinMTU || o.MTU > MaxMTU {
		return fmt.Errorf("perf: MTU %d out of range %d..%d", o.MTU, MinMTU, MaxMTU)
	}
	if o.MTU > 1500 && o.Mode != ModeFlood {
		return fmt.Errorf("perf: MTU %d: connections per second are measured at MTU 1500 only (their XDP endpoints write 60-byte frames and were only measured at 1500); use mode %s", o.MTU, ModeFlood)
	}
	live := true
	for _, size := range o.FrameSizes {
		big := size
		if size == IMIX {
			big = IMIXSizes[len(IMIXSizes)-1]
		}
		if big > MaxFrame(o.MTU) {
			what := fmt.Sprintf("frame size %d", size)
			if size == IMIX {
				what = fmt.Sprintf("IMIX (frames up to %d)", big)
			}
			return fmt.Errorf("perf: %s exceeds MTU %d: the largest frame it allows is %d bytes (MTU + 14-byte Ethernet header + 4-byte FCS); use MTU %d or more", what, o.MTU, MaxFrame(o.MTU), big-18)
		}
		if big > LiveMaxFrame {
			live = false
		}
	}
	switch o.Generator {
	case "":
		o.Generator = GenLive
		if !live {
			o.Generator = GenPacket
		}
	case GenLive:
		if !live {
			return fmt.Errorf("perf: generator %s: frames above %d bytes need the packet generator (BPF_PROG_RUN refuses live frames beyond one page)", GenLive, LiveMaxFrame)
		}
	case GenPacket:
	default:
		return fmt.Errorf("perf: generator %q: want %s or %s", o.Generator, GenLive, GenPacket)
	}
	if o.Generator == GenPacket && slices.Contains(o.FrameSizes, IMIX) {
		return fmt.Errorf("perf: IMIX needs the live-frames generator, which sends frames up to %d bytes only", LiveMaxFrame)
	}
	return nil
}

// QuickOptions is the one-minute comparison.
func QuickOptions() Options {
	return Options{
		Devices:    AllDevices,
		FrameSizes: []int{64, 1518},
		Flows:      []int{1, 1000},
		Trial:      200 * time.Millisecond,
		NDRSteps:   4, PDRSteps: 3,
		PDRLoss: 0.005,
		GenCPU:  0, DUTCPU: 1, StatewireCPUs: "1",
		ReadyTimeout: 15 * time.Second,
		LatencyLoads: []float64{0.1, 0.5, 0.9},
		RTPriority:   DefaultRTPriority,
		Mode:         ModeAll,
		CPSTrial:     200 * time.Millisecond, CPSSteps: 5, CPSComplete: 0.995,
	}
}

// FullOptions is the standard set for RESULTS.md.
func FullOptions() Options {
	o := QuickOptions()
	o.FrameSizes = []int{64, 512, 1518}
	o.Flows = []int{1, 1000, 100000}
	o.Trial = time.Second
	o.NDRSteps, o.PDRSteps = 7, 5
	o.CPSTrial, o.CPSSteps = time.Second, 7
	o.Latency = true
	return o
}

// Trial is one measurement: the target rate, what the generator offered
// and what the sink counted.
type Trial struct {
	// Target is the rate asked of the generator (0: as fast as it can), pps.
	Target float64 `json:"target_pps"`
	// Offered is what the generator sent per second.
	Offered float64 `json:"offered_pps"`
	// Delivered is what the sink counted per second.
	Delivered float64 `json:"delivered_pps"`
	// Sent and Received are the frame counts of the generator and the sink.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// Loss is 1 - received/sent.
	Loss float64 `json:"loss"`
	// DUTCPUNsPerPkt is busy time of the device CPU per delivered packet
	// (/proc/stat, all processes on that CPU); UserShare its user part.
	DUTCPUNsPerPkt float64 `json:"dut_cpu_ns_per_pkt"`
	UserShare      float64 `json:"dut_cpu_user_share"`
	// SoftirqShare is the softirq+system part of the device CPU's busy time.
	SoftirqShare float64 `json:"dut_cpu_kernel_share"`
	// CPUs is how busy each CPU of the run (generator and device CPUs)
	// was during the trial, from /proc/stat: with two workers and a
	// generator on two CPUs this is where the time went.
	CPUs []CPUSplit `json:"cpus,omitempty"`
}

// CPUSplit is one CPU's time during a trial, as shares of the trial's
// ticks: user (statewire's workers, the generator's thread), system and
// softirq (port A's NAPI: the XDP program and the copy into the AF_XDP
// ring; the veth transmits), idle the rest.
type CPUSplit struct {
	CPU     int     `json:"cpu"`
	User    float64 `json:"user"`
	System  float64 `json:"system"`
	Softirq float64 `json:"softirq"`
	Idle    float64 `json:"idle"`
}

// Latency is one latency point.
type Latency struct {
	Load    float64 `json:"load_of_ndr"`
	RatePPS float64 `json:"rate_pps"`
	Samples uint64  `json:"samples"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	P999us  float64 `json:"p99_9_us"`
	// Generator is the generator of the trial (GenLive or GenPacket) and
	// Burst the most frames one of its calls sent back to back at this
	// rate (the rest of the time frames were spaced at the rate).
	Generator string  `json:"generator,omitempty"`
	Burst     float64 `json:"burst_frames,omitempty"`
}

// Result is one device at one frame size and flow count.
type Result struct {
	Device    string `json:"device"`
	FrameSize int    `json:"frame_size"`
	Flows     int    `json:"flows"`
	// Throughput is the trial at the generator's full rate.
	Throughput Trial `json:"throughput"`
	// NDR and PDR are the best passing trials (zero when none passed or
	// not searched).
	NDR      Trial     `json:"ndr"`
	PDR      Trial     `json:"pdr"`
	Searched bool      `json:"searched"`
	Latency  []Latency `json:"latency,omitempty"`
	Trials   []Trial   `json:"trials"`
	Error    string    `json:"error,omitempty"`
	// Profile is the top of `perf report` for the device CPU during a
	// full-rate trial: shares by command and DSO, then by symbol.
	Profile   []string `json:"profile,omitempty"`
	GenLimits int      `json:"generator_limited_trials"`
	// ThroughputGbps, NDRGbps and PDRGbps are the delivered rates in
	// Gbit/s at layer 2 (frames with FCS; the IMIX mean for IMIX).
	ThroughputGbps float64 `json:"throughput_gbps"`
	NDRGbps        float64 `json:"ndr_gbps"`
	PDRGbps        float64 `json:"pdr_gbps"`
}

// Report is the outcome of Run.
type Report struct {
	Date    time.Time `json:"date"`
	Host    string    `json:"host"`
	Kernel  string    `json:"kernel"`
	CPUs    int       `json:"cpus"`
	Command string    `json:"command"`
	Steer   string    `json:"steer"`
	Proto   string    `json:"proto"`
	// RTPriority and LatencyIntervalUs are the latency trials' SCHED_FIFO
	// priority (0: normal policy) and the stamped generator's shortest
	// time between calls (Options).
	RTPriority        int     `json:"rt_priority"`
	LatencyIntervalUs float64 `json:"latency_interval_us,omitempty"`
	// Floor is the machine's latency floor on the device CPU, measured
	// before the first latency trial (floor.go).
	Floor *Floor `json:"floor,omitempty"`
	// PacketGeneratorPPS is the packet generator's ceiling per frame size,
	// measured when the latency trials may use it (LatencyPaced).
	PacketGeneratorPPS map[int]float64 `json:"packet_generator_pps,omitempty"`
	Devices            []string        `json:"devices"`
	// GeneratorPPS is the generator's rate into a sink on port A itself
	// (no device), per frame size: the offered-load ceiling.
	GeneratorPPS map[int]float64 `json:"generator_pps"`
	Results      []Result        `json:"results"`
	// Errors are devices that could not be measured, with the reason.
	Errors map[string]string `json:"errors,omitempty"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end:
	// on a shared machine, other processes' load is part of the figures.
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
	// CPS are the connections-per-second results, CPSGenerator the
	// endpoints' own ceiling with no device between them, CPSComplete the
	// share of connections a passing trial completes.
	CPS             []CPSResult `json:"cps,omitempty"`
	CPSGenerator    *CPSTrial   `json:"cps_generator,omitempty"`
	CPSComplete     float64     `json:"cps_complete_ratio,omitempty"`
	CPSTrialSeconds float64     `json:"cps_trial_seconds,omitempty"`
	// TrialSeconds is the trial length.
	TrialSeconds float64 `json:"trial_seconds"`
	// Queues is the veth queue count of every lab; Workers the worker
	// counts of the statewire devices (devices NAME/wK, none without
	// --workers); GenCPUs the CPUs of the flood generator's threads.
	Queues  int   `json:"queues"`
	Workers []int `json:"workers,omitempty"`
	GenCPUs []int `json:"generator_cpus"`
	// MTU is every lab link's MTU; Generator the generator kind
	// (GenLive or GenPacket) that sent every frame of the run.
	MTU       int    `json:"mtu,omitempty"`
	Generator string `json:"generator,omitempty"`
}

// Result returns the result of device at size and flows, or nil.
func (r *Report) Result(device string, size, flows int) *Result {
	for i := range r.Results {
		x := &r.Results[i]
		if x.Device == device && x.FrameSize == size && x.Flows == flows {
			return x
		}
	}
	return nil
}

type runner struct {
	o       Options
	devs    []*device
	rep     *Report
	n       int
	total   int // trials expected, for the progress lines
	settle  time.Duration
	clkTck  float64
	nullDev *device
}

// Run measures every device in o at every frame size and flow count,
// interleaving the devices trial by trial, and returns the report. A device
// that cannot be set up (statewire binary missing, datapath failing) is
// recorded in Report.Errors and the others are still measured.
func Run(ctx context.Context, o Options) (*Report, error) {
	if len(o.Devices) == 0 {
		o.Devices = AllDevices
	}
	switch o.Proto {
	case "":
		o.Proto = "udp"
	case "udp":
	case "tcp":
		o.Latency = false
		if slices.Contains(o.FrameSizes, IMIX) {
			return nil, errors.New("perf: IMIX is UDP only (the TCP generator does not resize its segments)")
		}
	default:
		return nil, fmt.Errorf("perf: proto %q: want udp or tcp", o.Proto)
	}
	switch o.Steer {
	case "":
		o.Steer = SteerRPS
	case SteerNAPI, SteerRPS, SteerInline:
	default:
		return nil, fmt.Errorf("perf: steering %q: want %s, %s or %s", o.Steer, SteerNAPI, SteerRPS, SteerInline)
	}
	if o.PDRLoss == 0 {
		o.PDRLoss = 0.005
	}
	switch o.Mode {
	case "":
		o.Mode = ModeAll
	case ModeAll, ModeFlood, ModeCPS:
	default:
		return nil, fmt.Errorf("perf: mode %q: want %s, %s or %s", o.Mode, ModeAll, ModeFlood, ModeCPS)
	}
	if o.CPSComplete <= 0 || o.CPSComplete > 1 {
		o.CPSComplete = 0.995
	}
	if o.Mode != ModeFlood && o.CPSTrial <= 0 {
		return nil, errors.New("perf: CPSTrial must be positive")
	}
	if o.Trial <= 0 {
		return nil, errors.New("perf: Trial must be positive")
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 15 * time.Second
	}
	if o.Mode != ModeCPS && (len(o.FrameSizes) == 0 || len(o.Flows) == 0) {
		return nil, errors.New("perf: need at least one frame size and one flow count")
	}
	if err := o.checkFrames(); err != nil {
		return nil, err
	}
	if err := CheckWorkers(&o); err != nil {
		return nil, err
	}
	o.Devices = ExpandWorkers(o.Devices, o.Workers)
	host, _ := os.Hostname()
	rep := &Report{
		Date: time.Now().UTC(), Host: host, Kernel: kernelRelease(), CPUs: runtime.NumCPU(),
		GeneratorPPS: map[int]float64{}, Errors: map[string]string{},
		TrialSeconds: o.Trial.Seconds(), LoadBefore: loadavg(), Steer: o.Steer, Proto: o.Proto,
		MTU: o.MTU, Generator: o.Generator, RTPriority: o.RTPriority,
		Queues: max(o.Queues, 1), Workers: o.Workers, GenCPUs: o.genCPUs(),
	}
	if o.Latency {
		rep.LatencyIntervalUs = float64(DefaultLatencyInterval) / 1e3
		if o.LatencyInterval > 0 {
			rep.LatencyIntervalUs = float64(o.LatencyInterval) / 1e3
		}
	}
	defer func() { rep.LoadAfter = loadavg() }()
	r := &runner{o: o, rep: rep, settle: 30 * time.Millisecond, clkTck: 100}
	if _, err := lab.RemoveStale(); err != nil {
		r.logf("perf: removing stale labs: %v", err)
	}
	defer r.closeAll()
	if restore, err := reniceAutogroup(Nice); err != nil {
		r.logf("perf: %v", err)
	} else {
		defer restore()
	}
	if restore, err := reniceKsoftirqd(append(o.genCPUs(), o.DUTCPU), Nice); err != nil {
		r.logf("perf: %v", err)
	} else {
		defer restore()
	}
	var err error
	if r.nullDev, err = newDevice(ctx, generatorDevice, &o); err != nil {
		return nil, fmt.Errorf("perf: generator calibration lab: %w", err)
	}
	for _, name := range o.Devices {
		if slices.ContainsFunc(r.devs, func(d *device) bool { return d.name == name }) {
			continue
		}
		d, err := newDevice(ctx, name, &o)
		if err != nil {
			rep.Errors[name] = err.Error()
			r.logf("%s: not measured: %v", name, err)
			continue
		}
		d.pause()
		r.devs = append(r.devs, d)
		rep.Devices = append(rep.Devices, name)
	}
	if len(r.devs) == 0 {
		return rep, errors.New("perf: no device could be set up")
	}
	per := 1 + o.NDRSteps + o.PDRSteps
	if o.Latency {
		per += len(o.LatencyLoads)
	}
	if o.Mode != ModeCPS {
		r.total = per * len(r.devs) * len(o.FrameSizes) * len(o.Flows)
	}
	if o.Mode != ModeFlood {
		r.total += (1 + o.CPSSteps) * len(r.devs)
	}
	if o.Mode == ModeCPS {
		r.cps(ctx)
		return rep, ctx.Err()
	}
	for _, size := range o.FrameSizes {
		for _, flows := range o.Flows {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			if err := r.config(ctx, size, flows); err != nil {
				return rep, err
			}
		}
	}
	if o.Mode == ModeAll {
		r.cps(ctx)
	}
	return rep, ctx.Err()
}

// genCPUs returns the flood generator's CPUs.
func (o *Options) genCPUs() []int {
	if len(o.GenCPUs) > 1 {
		return o.GenCPUs
	}
	return []int{o.GenCPU}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func kernelRelease() string {
	var u [65]byte
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return string(u[:0])
	}
	return strings.TrimSpace(string(b))
}

func (r *runner) logf(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, format+"\n", args...)
	}
}

func (r *runner) closeAll() {
	for _, d := range r.devs {
		err := d.close()
		if d.out != nil {
			// Whether --offload selected the fast path, and its totals,
			// whatever the tail below holds.
			for _, line := range strings.Split(d.out.String(), "\n") {
				if strings.Contains(line, "fast path") {
					r.logf("%s: %s", d.name, strings.TrimSpace(line))
				}
			}
			r.logf("statewire output (tail):\n%s", tail(d.out.String(), 2000))
		}
		if err != nil {
			r.logf("perf: close %s: %v", d.name, err)
		}
	}
	if r.nullDev != nil {
		if err := r.nullDev.close(); err != nil {
			r.logf("perf: close generator lab: %v", err)
		}
	}
}

func (r *runner) genFor(d *device, size, flows int, stamp bool) (*Generator, error) {
	return r.genKind(d, size, flows, stamp, r.o.Generator)
}

// genKind is genFor with the generator kind given.
func (r *runner) genKind(d *device, size, flows int, stamp bool, kind string) (*Generator, error) {
	l := d.lab
	cfg := GenConfig{
		NS: l.LeftNS, Ifname: l.LeftIf, Src: l.LeftMAC, Dst: l.RightMAC,
		FrameSize: size, Flows: flows, Stamp: stamp, CPU: r.o.GenCPU, Kind: kind,
	}
	if len(r.o.GenCPUs) > 1 && r.o.Proto == "udp" && kind != GenPacket {
		// The packet generator (the paced latency trials) spreads its
		// flows over the queues by itself (the skb's flow hash), from
		// one CPU.
		cfg.CPUs = r.o.GenCPUs
	}
	if stamp {
		cfg.Interval = r.o.LatencyInterval
		if cfg.Interval <= 0 {
			cfg.Interval = DefaultLatencyInterval
		}
		if kind == GenPacket && r.o.LatencyGenerator != GenPacket {
			// Paced (LatencyPaced): frames when they are due, one call
			// each at low rates.
			cfg.Interval, cfg.MinBatch = PacedInterval, 1
		}
	}
	if r.o.Proto == "tcp" && d != r.nullDev {
		lay := tcpLayout(false)
		cfg.tmpl = tcpFrame(l.LeftMAC, l.RightMAC, lab.LeftIPv4.Addr(), lab.RightIPv4.Addr(), size,
			tcpACK|tcpPSH, isnLeft+1, isnRight+1, true)
		cfg.lay = &lay
	}
	return NewGenerator(cfg)
}

// active is a device in the current configuration.
type active struct {
	d   *device
	g   *Generator
	res *Result
	err error
}

// config measures every device at one frame size and flow count.
func (r *runner) config(ctx context.Context, size, flows int) error {
	o := r.o
	// Generator ceiling, once per frame size.
	if _, ok := r.rep.GeneratorPPS[size]; !ok {
		g, err := r.genFor(r.nullDev, size, flows, false)
		if err != nil {
			return err
		}
		t, err := r.trial(r.nullDev, g, 0)
		g.Close()
		if err != nil {
			return err
		}
		r.rep.GeneratorPPS[size] = t.Delivered
		r.logf("generator %sB: %.3f Mpps offered, %.3f Mpps counted at port A", SizeLabel(size), t.Offered/1e6, t.Delivered/1e6)
	}
	var as []*active
	defer func() {
		for _, a := range as {
			if a.g != nil {
				a.g.Close()
			}
			if a.err != nil {
				a.res.Error = a.err.Error()
			}
			if len(a.res.Trials) == 0 && a.res.Error == "" {
				continue // cancelled before its first trial
			}
			a.res.ThroughputGbps = Gbps(a.res.Throughput.Delivered, size)
			a.res.NDRGbps = Gbps(a.res.NDR.Delivered, size)
			a.res.PDRGbps = Gbps(a.res.PDR.Delivered, size)
			r.rep.Results = append(r.rep.Results, *a.res)
		}
	}()
	for _, d := range r.devs {
		a := &active{d: d, res: &Result{Device: d.name, FrameSize: size, Flows: flows}}
		as = append(as, a)
		if a.g, a.err = r.genFor(d, size, flows, false); a.err != nil {
			continue
		}
		a.err = r.warm(ctx, a, flows)
	}
	ok := func(a *active) bool { return a.err == nil && ctx.Err() == nil }
	// Throughput at the generator's full rate.
	for _, a := range as {
		if !ok(a) {
			continue
		}
		t, err := r.trial(a.d, a.g, 0)
		if err != nil {
			a.err = err
			continue
		}
		a.res.Throughput = t
		r.record(a, t, "throughput")
	}
	// NDR then PDR: every device takes one trial per step, in turn.
	for _, phase := range []struct {
		name  string
		steps int
		loss  float64
		best  func(*Result) *Trial
	}{
		{"NDR", o.NDRSteps, 0, func(x *Result) *Trial { return &x.NDR }},
		{"PDR", o.PDRSteps, o.PDRLoss, func(x *Result) *Trial { return &x.PDR }},
	} {
		if phase.steps <= 0 {
			continue
		}
		type bounds struct{ lo, hi float64 }
		b := make([]bounds, len(as))
		for i, a := range as {
			hi := min(a.res.Throughput.Offered, 1.5*a.res.Throughput.Delivered)
			lo := 0.0
			if phase.name == "PDR" && a.res.NDR.Delivered > 0 {
				lo = a.res.NDR.Target
				*phase.best(a.res) = a.res.NDR
			}
			b[i] = bounds{lo, hi}
			a.res.Searched = true
		}
		for step := 0; step < phase.steps; step++ {
			for i, a := range as {
				if !ok(a) || b[i].hi <= 0 {
					continue
				}
				rate := (b[i].lo + b[i].hi) / 2
				t, err := r.trial(a.d, a.g, rate)
				if err != nil {
					a.err = err
					continue
				}
				r.record(a, t, fmt.Sprintf("%s %d/%d", phase.name, step+1, phase.steps))
				if t.Loss <= phase.loss {
					b[i].lo = rate
					if best := phase.best(a.res); t.Delivered > best.Delivered {
						*best = t
					}
				} else {
					b[i].hi = rate
				}
			}
		}
	}
	if o.Latency {
		r.latency(ctx, as, size, flows)
	}
	if o.ProfileDir != "" && size == o.FrameSizes[0] {
		for _, a := range as {
			if !ok(a) {
				continue
			}
			p, err := r.profile(a, size, flows)
			if err != nil {
				r.logf("%s: profile: %v", a.d.name, err)
				continue
			}
			a.res.Profile = p
		}
	}
	return nil
}

// latency runs stamped trials at fractions of each device's NDR.
func (r *runner) latency(ctx context.Context, as []*active, size, flows int) {
	if r.o.RTPriority > 0 {
		restore, err := realtimeKsoftirqd([]int{r.o.GenCPU, r.o.DUTCPU}, r.o.RTPriority)
		defer restore()
		if err != nil {
			r.logf("%v", err)
		}
	}
	if r.rep.Floor == nil && !r.o.NoFloor {
		f, err := MeasureFloor(r.o.GenCPU, r.o.DUTCPU, r.o.RTPriority, r.o.Trial)
		if err != nil {
			r.logf("%v", err)
		} else {
			r.rep.Floor = &f
			r.logf("%s", f)
		}
	}
	for _, load := range r.o.LatencyLoads {
		for _, a := range as {
			if a.err != nil || ctx.Err() != nil || a.res.NDR.Delivered <= 0 || a.d.sink.hist == nil {
				continue
			}
			rate := load * a.res.NDR.Target
			kind, err := r.latencyKind(size, flows, rate)
			if err != nil {
				a.err = err
				continue
			}
			g, err := r.genKind(a.d, size, flows, true, kind)
			if err != nil {
				a.err = err
				continue
			}
			if _, err := a.d.sink.Hist(); err != nil { // clear
				a.err = err
				g.Close()
				continue
			}
			t, err := r.trial(a.d, g, rate)
			g.Close()
			if err != nil {
				a.err = err
				continue
			}
			h, err := a.d.sink.Hist()
			if err != nil {
				a.err = err
				continue
			}
			lat := Latency{Load: load, RatePPS: t.Offered, Generator: kind,
				Burst: max(g.minBatch(), math.Ceil(rate*g.interval().Seconds()))}
			lat.Samples, lat.P50us, lat.P99us, lat.P999us = percentiles(h)
			a.res.Latency = append(a.res.Latency, lat)
			r.record(a, t, fmt.Sprintf("latency %.0f%% NDR: p50 %.0fus p99 %.0fus p99.9 %.0fus", load*100, lat.P50us, lat.P99us, lat.P999us))
		}
	}
}

// latencyKind returns the generator of a latency trial at rate (see
// LatencyPaced).
func (r *runner) latencyKind(size, flows int, rate float64) (string, error) {
	switch {
	case r.o.LatencyGenerator == GenLive || r.o.LatencyGenerator == GenPacket:
		return r.o.LatencyGenerator, nil
	case r.o.Generator == GenPacket:
		return GenPacket, nil
	}
	ceil, ok := r.rep.PacketGeneratorPPS[size]
	if !ok {
		g, err := r.genKind(r.nullDev, size, flows, false, GenPacket)
		if err != nil {
			return "", err
		}
		t, err := r.trial(r.nullDev, g, 0)
		g.Close()
		if err != nil {
			return "", err
		}
		ceil = t.Delivered
		if r.rep.PacketGeneratorPPS == nil {
			r.rep.PacketGeneratorPPS = map[int]float64{}
		}
		r.rep.PacketGeneratorPPS[size] = ceil
		r.logf("packet generator %sB: %.3f Mpps counted at port A (latency trials up to %.0f%% of it are paced)", SizeLabel(size), ceil/1e6, pacedShare*100)
	}
	if rate <= pacedShare*ceil {
		return GenPacket, nil
	}
	return GenLive, nil
}

// percentiles returns the sample count and p50, p99, p99.9 in µs (upper
// bucket edges) of a 1 µs histogram.
func percentiles(h []uint64) (n uint64, p50, p99, p999 float64) {
	for _, c := range h {
		n += c
	}
	if n == 0 {
		return 0, 0, 0, 0
	}
	q := func(f float64) float64 {
		want := uint64(f*float64(n) + 0.5)
		if want == 0 {
			want = 1
		}
		var acc uint64
		for i, c := range h {
			acc += c
			if acc >= want {
				return float64(i + 1)
			}
		}
		return float64(len(h))
	}
	return n, q(0.5), q(0.99), q(0.999)
}

func (r *runner) record(a *active, t Trial, what string) {
	a.res.Trials = append(a.res.Trials, t)
	limited := ""
	if t.Target > 0 && t.Offered < 0.97*t.Target {
		a.res.GenLimits++
		limited = " (generator below target)"
	}
	r.n++
	r.logf("[%3d/%d] %4sB %7d flows %-17s %-12s offered %7.3f Mpps delivered %7.3f Mpps loss %6.2f%%%s",
		r.n, r.total, SizeLabel(a.res.FrameSize), a.res.Flows, a.d.name, what, t.Offered/1e6, t.Delivered/1e6, t.Loss*100, limited)
}

// warm makes the device ready and its flows known: for statewire it waits
// until the first frames arrive at the sink; then every flow is sent twice
// at a moderate rate so the conntrack devices have their entries.
func (r *runner) warm(ctx context.Context, a *active, flows int) error {
	d := a.d
	if err := d.resume(); err != nil {
		return err
	}
	defer d.pause()
	if d.cmd != nil {
		if err := r.ready(ctx, d); err != nil {
			return err
		}
	}
	if r.o.Steer != SteerInline {
		if err := d.steer(r.o.DUTCPU, r.o.Steer); err != nil {
			return err
		}
	}
	if r.o.Proto == "tcp" {
		return r.handshake(d, flows)
	}
	const warmRate = 200e3
	dur := time.Duration(float64(2*flows) / warmRate * float64(time.Second))
	dur = max(dur, 100*time.Millisecond)
	_, _, err := a.g.Send(warmRate, dur)
	time.Sleep(r.settle)
	return err
}

// leadIn is the uncounted traffic before each trial.
const leadIn = 30 * time.Millisecond

// ready waits until statewire forwards: UDP probes on flows of their own
// (source port 0x8000 downwards are the harness's; the probe uses the
// same template, so with TCP traffic its frames are "other" at the sink)
// until the sink sees one.
func (r *runner) ready(ctx context.Context, d *device) error {
	l := d.lab
	g, err := NewGenerator(GenConfig{NS: l.LeftNS, Ifname: l.LeftIf, Src: l.LeftMAC, Dst: l.RightMAC,
		FrameSize: 64, Flows: 1, CPU: r.o.GenCPU})
	if err != nil {
		return err
	}
	defer g.Close()
	seen := func() (uint64, error) {
		c, err := d.sink.Count()
		if err != nil {
			return 0, err
		}
		o, err := d.sink.Other()
		return c + o, err
	}
	deadline := time.Now().Add(r.o.ReadyTimeout)
	for {
		if err := d.exited(); err != nil {
			return err
		}
		c0, err := seen()
		if err != nil {
			return err
		}
		if _, _, err := g.Send(100e3, 50*time.Millisecond); err != nil {
			return err
		}
		time.Sleep(r.settle)
		c1, err := seen()
		if err != nil {
			return err
		}
		if c1 > c0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("perf: statewire forwarded nothing within %v: %s", r.o.ReadyTimeout, tail(d.out.String(), 800))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// trial runs one trial of the device at rate (0: full rate).
func (r *runner) trial(d *device, g *Generator, rate float64) (Trial, error) {
	if err := d.resume(); err != nil {
		return Trial{}, err
	}
	defer d.pause()
	// Lead-in at the trial's rate, not counted: a device just continued
	// (statewire after SIGSTOP) or idle since its last trial gets its
	// caches and rings going before the measurement, as every device.
	if _, _, err := g.Send(rate, leadIn); err != nil {
		return Trial{}, err
	}
	time.Sleep(r.settle)
	c0, err := d.sink.Count()
	if err != nil {
		return Trial{}, err
	}
	s0, _ := readCPUStat(r.o.DUTCPU)
	splits := r.markCPUs()
	sent, el, err := g.Send(rate, r.o.Trial)
	if err != nil {
		return Trial{}, err
	}
	time.Sleep(r.settle)
	c1, err := d.sink.Count()
	if err != nil {
		return Trial{}, err
	}
	s1, _ := readCPUStat(r.o.DUTCPU)
	rx := c1 - c0
	t := Trial{Target: rate, Sent: sent, Received: rx, CPUs: splits()}
	if sec := el.Seconds(); sec > 0 {
		t.Offered = float64(sent) / sec
		t.Delivered = float64(rx) / sec
	}
	if sent > 0 && rx < sent {
		t.Loss = 1 - float64(rx)/float64(sent)
	}
	if busy := s1.busy() - s0.busy(); busy > 0 && rx > 0 {
		t.DUTCPUNsPerPkt = float64(busy) / r.clkTck * 1e9 / float64(rx)
		t.UserShare = float64(s1.user-s0.user) / float64(busy)
		t.SoftirqShare = float64((s1.system+s1.irq+s1.softirq)-(s0.system+s0.irq+s0.softirq)) / float64(busy)
	}
	return t, nil
}

// markCPUs reads the time of the CPUs a trial records (splitCPUs) and
// returns the function that, at the trial's end, gives each one's split
// since.
func (r *runner) markCPUs() func() []CPUSplit {
	cpus := r.splitCPUs()
	at := make([]cpuStat, len(cpus))
	for i, c := range cpus {
		at[i], _ = readCPUStat(c)
	}
	return func() []CPUSplit {
		out := make([]CPUSplit, len(cpus))
		for i, c := range cpus {
			now, _ := readCPUStat(c)
			out[i] = split(c, at[i], now)
		}
		return out
	}
}

// splitCPUs returns the CPUs whose time a trial records: the generator's
// and the device's.
func (r *runner) splitCPUs() []int {
	cpus := slices.Clone(r.o.genCPUs())
	if r.o.DUTCPU >= 0 && !slices.Contains(cpus, r.o.DUTCPU) {
		cpus = append(cpus, r.o.DUTCPU)
	}
	slices.Sort(cpus)
	return cpus
}

// split is cpu's time between two readings, as shares.
func split(cpu int, a, b cpuStat) CPUSplit {
	tot := float64((b.busy() + b.idle + b.iowait) - (a.busy() + a.idle + a.iowait))
	if tot <= 0 {
		return CPUSplit{CPU: cpu}
	}
	return CPUSplit{CPU: cpu,
		User:    float64((b.user+b.nice)-(a.user+a.nice)) / tot,
		System:  float64(b.system-a.system) / tot,
		Softirq: float64((b.softirq+b.irq)-(a.softirq+a.irq)) / tot,
		Idle:    float64((b.idle+b.iowait)-(a.idle+a.iowait)) / tot,
	}
}

// cpuStat is one line of /proc/stat, in USER_HZ ticks.
type cpuStat struct {
	user, nice, system, idle, iowait, irq, softirq, steal uint64
}

func (s cpuStat) busy() uint64 { return s.user + s.nice + s.system + s.irq + s.softirq + s.steal }

// readCPUStat reads the line of cpu (or the total line for cpu < 0).
func readCPUStat(cpu int) (cpuStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}, err
	}
	want := "cpu "
	if cpu >= 0 {
		want = "cpu" + strconv.Itoa(cpu) + " "
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, want) {
			continue
		}
		f := strings.Fields(line)[1:]
		var v [8]uint64
		for i := 0; i < len(v) && i < len(f); i++ {
			v[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		return cpuStat{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
	}
	return cpuStat{}, fmt.Errorf("perf: no %q line in /proc/stat", strings.TrimSpace(want))
}
