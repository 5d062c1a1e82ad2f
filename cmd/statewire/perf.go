package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/statewire/statewire/perf"
)

// perfCmd is `statewire perf`: the comparison of statewire with the kernel
// bridge, the kernel bridge with conntrack and XDP_REDIRECT, counted at an
// XDP sink (see package perf).
func perfCmd(args []string, stdout, stderr io.Writer) error {
	o, jsonOut, svgOut, err := perfParse(args, stderr)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, XDP, nftables)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := perf.Run(ctx, o)
	if rep == nil {
		return runErr
	}
	rep.Command = "statewire perf " + strings.Join(args, " ")
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if jsonOut != "" {
		if err := perfWriteFile(jsonOut, rep.WriteJSON); err != nil {
			return err
		}
	}
	if svgOut != "" {
		if err := perfWriteFile(svgOut, rep.WriteSVG); err != nil {
			return err
		}
	}
	return runErr
}

// perfParse turns perf's command line into Options (validated as far as
// that goes without a lab: devices, sizes against the MTU, the generator)
// and the JSON and SVG file names.
func perfParse(args []string, stderr io.Writer) (perf.Options, string, string, error) {
	var o perf.Options
	fs := flag.NewFlagSet("perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "the one-minute version: 64 and 1518 B, 1 and 1000 flows, short trials")
	devices := fs.String("devices", strings.Join(perf.AllDevices, ","), "devices to compare: "+strings.Join(perf.AllDevices, ","))
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	svgOut := fs.String("svg", "", "write the plot (SVG) to this file")
	bin := fs.String("statewire", "", "statewire binary to run as the device under test (default: this executable)")
	swArgs := fs.String("statewire-args", "", "extra flags for `statewire run`, space separated (e.g. \"--cores 1 --ring-size 2048\"); --rules defaults to the equivalent of the kernel device's ruleset")
	swCPUs := fs.String("statewire-cpus", "", "taskset CPU list for statewire (default: --dut-cpu)")
	sizes := fs.String("frame-sizes", "", "frame sizes in bytes incl. FCS, comma separated, and imix (simple IMIX: 64/576/1500 B 7:4:1) (default 64,512,1518; quick 64,1518)")
	fs.StringVar(sizes, "sizes", "", "same as --frame-sizes")
	mode := fs.String("mode", perf.ModeAll, "what to measure: all (floods, then connections per second), flood (NDR/PDR/latency only) or cps (connections per second only)")
	cpsTrial := fs.Duration("cps-trial", 0, "length of one connections-per-second trial (default 1s; quick 200ms)")
	cpsSteps := fs.Int("cps-steps", -1, "binary-search steps for CPS (default 7, quick 5)")
	cpsComplete := fs.Float64("cps-complete", 0.995, "share of connections that must complete for a CPS trial to pass")
	flows := fs.String("flows", "", "flow counts, comma separated (default 1,1000,100000; quick 1,1000)")
	trial := fs.Duration("trial", 0, "length of one trial (default 1s; quick 200ms)")
	ndr := fs.Int("ndr-steps", -1, "binary-search steps for NDR (0: throughput only; default 7, quick 4)")
	pdr := fs.Int("pdr-steps", -1, "binary-search steps for PDR (default 5, quick 3)")
	latency := fs.Bool("latency", false, "measure latency percentiles at 10/50/90% of NDR (default on without --quick)")
	noLatency := fs.Bool("no-latency", false, "skip the latency trials")
	latLoads := fs.String("latency-loads", "", "loads of the latency trials as fractions of each device's NDR, comma separated (default 0.1,0.5,0.9); implies --latency")
	rtPrio := fs.Int("rt-priority", perf.DefaultRTPriority, "SCHED_FIFO priority of statewire's workers (statewire run --rt-priority) and, during the latency trials, of the generator and ksoftirqd; the CPS endpoints' NAPI threads run one above it (0: the normal policy for all; see perf/RESULTS.md, Tail latency)")
	latInterval := fs.Duration("latency-interval", perf.DefaultLatencyInterval, "shortest time between the latency generator's calls: a device sees bursts of rate x this")
	latGen := fs.String("latency-generator", perf.LatencyPaced, "generator of the latency trials: paced (frames evenly spaced by the packet generator when the rate is within its reach, else live bursts of rate x --latency-interval), live or packet (bursts of rate x --latency-interval)")
	noFloor := fs.Bool("no-floor", false, "skip the machine's latency floor (cross-CPU wake-up and a spinning thread's gaps on --dut-cpu) measured before the latency trials")
	genCPU := fs.Int("gen-cpu", 0, "CPU of the generator")
	genCPUs := fs.String("gen-cpus", "", "CPUs of the flood generator, comma separated: one live-frames thread per CPU, each sending its share of the flows (flow mod count); veth puts a frame on port A's queue CPU mod --queues, so with --queues 2 --gen-cpus 0,1 the flows spread over both queues by flow, as RSS does (default: --gen-cpu)")
	queues := fs.Int("queues", 1, fmt.Sprintf("RX/TX queues of every veth of every lab (1..%d); statewire serves all of them (statewire run --queues N, unless --statewire-args gives --queues)", perf.MaxQueues))
	workers := fs.String("workers", "", "statewire worker counts, comma separated (e.g. 1,2): each statewire device runs once per count, as NAME/wK with --cores K --queues <--queues>, K workers pinned to CPUs --dut-cpu, --dut-cpu+1, ... (mod the CPU count); ratios to the first count go into the report")
	dutCPU := fs.Int("dut-cpu", 1, "CPU the devices forward on (RPS target of the kernel bridges; statewire's taskset)")
	steer := fs.String("steer", perf.SteerRPS, "where port A's receive work runs: rps (NAPI on the generator CPU, kernel bridges' skbs steered to --dut-cpu by RPS, statewire on --dut-cpu), napi (threaded NAPI on --dut-cpu; breaks paced traffic, see package perf), inline (kernel bridges on the generator CPU)")
	profile := fs.String("profile", "", "directory for `perf record -g` files of the device CPU during one extra full-rate trial per device at the first frame size; top symbols go into the report")
	proto := fs.String("proto", "udp", "traffic: udp, or tcp (flows opened with three-way handshakes, then data segments: ESTABLISHED in every device; no latency)")
	mtu := fs.Int("mtu", 1500, fmt.Sprintf("MTU of every lab link (%d..%d); frame sizes up to MTU+18 (header and FCS); statewire sizes its buffers from it as `statewire run` does; above 1500 only with --mode flood", perf.MinMTU, perf.MaxMTU))
	gen := fs.String("generator", "", "traffic generator: live (BPF_PROG_RUN live frames, frames up to "+strconv.Itoa(perf.LiveMaxFrame)+" B) or packet (AF_PACKET TX ring, any size); default live, packet for every size when one exceeds live's limit")
	quiet := fs.Bool("q", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return o, "", "", err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "statewire perf: unexpected arguments %q\n", fs.Args())
		return o, "", "", errUsage
	}
	o = perf.FullOptions()
	if *quick {
		o = perf.QuickOptions()
	}
	o.Devices = perfSplitList(*devices)
	for _, d := range o.Devices {
		if !perfContains(perf.AllDevices, d) {
			return o, "", "", fmt.Errorf("--devices: unknown device %q (want %s)", d, strings.Join(perf.AllDevices, ","))
		}
	}
	var err error
	if *sizes != "" {
		if o.FrameSizes, err = perfSizeList(*sizes); err != nil {
			return o, "", "", fmt.Errorf("--frame-sizes: %w", err)
		}
	}
	o.Mode = *mode
	if *cpsTrial > 0 {
		o.CPSTrial = *cpsTrial
	}
	if *cpsSteps >= 0 {
		o.CPSSteps = *cpsSteps
	}
	if *cpsComplete <= 0 || *cpsComplete > 1 {
		return o, "", "", fmt.Errorf("--cps-complete %v: want a share in (0, 1]", *cpsComplete)
	}
	o.CPSComplete = *cpsComplete
	if *flows != "" {
		if o.Flows, err = perfIntList(*flows); err != nil {
			return o, "", "", fmt.Errorf("--flows: %w", err)
		}
	}
	if *trial > 0 {
		o.Trial = *trial
	}
	if *ndr >= 0 {
		o.NDRSteps = *ndr
	}
	if *pdr >= 0 {
		o.PDRSteps = *pdr
	}
	if *latency {
		o.Latency = true
	}
	if *latLoads != "" {
		if o.LatencyLoads, err = perfLoadList(*latLoads); err != nil {
			return o, "", "", fmt.Errorf("--latency-loads: %w", err)
		}
		o.Latency = true
	}
	if *noLatency {
		o.Latency = false
	}
	if *rtPrio < 0 || *rtPrio > 99 {
		return o, "", "", fmt.Errorf("--rt-priority %d: want 0 (normal policy) or 1-99", *rtPrio)
	}
	if *latInterval <= 0 {
		return o, "", "", fmt.Errorf("--latency-interval %v: want a positive duration, e.g. 50us", *latInterval)
	}
	o.RTPriority, o.LatencyInterval = *rtPrio, *latInterval
	switch *latGen {
	case perf.LatencyPaced, perf.GenLive, perf.GenPacket:
		o.LatencyGenerator = *latGen
	default:
		return o, "", "", fmt.Errorf("--latency-generator %q: want %s, %s or %s", *latGen, perf.LatencyPaced, perf.GenLive, perf.GenPacket)
	}
	o.NoFloor = *noFloor
	o.GenCPU, o.DUTCPU, o.Steer = *genCPU, *dutCPU, *steer
	o.StatewireCPUs = *swCPUs
	if o.StatewireCPUs == "" && o.DUTCPU >= 0 {
		o.StatewireCPUs = strconv.Itoa(o.DUTCPU)
	}
	o.Statewire = *bin
	if o.Statewire == "" {
		if o.Statewire, err = os.Executable(); err != nil {
			return o, "", "", fmt.Errorf("--statewire: %w", err)
		}
	}
	o.StatewireArgs = strings.Fields(*swArgs)
	o.ProfileDir = *profile
	o.Proto = *proto
	o.MTU, o.Generator = *mtu, *gen
	if err := perf.CheckFrames(&o); err != nil {
		return o, "", "", err
	}
	o.Queues = *queues
	if *queues < 1 || *queues > perf.MaxQueues {
		return o, "", "", fmt.Errorf("--queues %d: want 1..%d queues per veth", *queues, perf.MaxQueues)
	}
	if *workers != "" {
		if o.Workers, err = perfIntList(*workers); err != nil {
			return o, "", "", fmt.Errorf("--workers: %w (want worker counts, e.g. 1,2)", err)
		}
		if len(o.Workers) == 0 {
			return o, "", "", errors.New("--workers: no worker count given (want e.g. 1,2)")
		}
	}
	if *genCPUs != "" {
		cpus, err := perfCPUList(*genCPUs)
		if err != nil {
			return o, "", "", fmt.Errorf("--gen-cpus: %w", err)
		}
		o.GenCPU = cpus[0]
		if len(cpus) > 1 {
			o.GenCPUs = cpus
		}
	}
	if err := perf.CheckWorkers(&o); err != nil {
		return o, "", "", errors.New(strings.TrimPrefix(err.Error(), "perf: "))
	}
	if !*quiet {
		o.Progress = stderr
	}
	return o, *jsonOut, *svgOut, nil
}

func perfWriteFile(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func perfSplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// perfLoadList parses fractions of NDR, each in (0, 1].
func perfLoadList(s string) ([]float64, error) {
	var out []float64
	for _, f := range perfSplitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 0 && v <= 1) {
			return nil, fmt.Errorf("bad load %q: want a fraction of NDR in (0, 1], e.g. 0.5", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("no load given: want fractions of NDR, e.g. 0.5")
	}
	return out, nil
}

func perfIntList(s string) ([]int, error) {
	var out []int
	for _, f := range perfSplitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// perfCPUList parses CPU numbers (0 allowed).
func perfCPUList(s string) ([]int, error) {
	var out []int
	for _, f := range perfSplitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad CPU %q (want CPU numbers, e.g. 0,1)", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no CPU given (want CPU numbers, e.g. 0,1)")
	}
	return out, nil
}

// perfSizeList parses frame sizes: numbers of bytes, and "imix".
func perfSizeList(s string) ([]int, error) {
	var out []int
	for _, f := range perfSplitList(s) {
		if strings.EqualFold(f, "imix") {
			out = append(out, perf.IMIX)
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad frame size %q (a number of bytes or imix)", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func perfContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
