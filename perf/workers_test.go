package perf

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// TestWorkerDevices: --workers turns each statewire device into one per
// worker count, named NAME/wK, which reads back to the device and K; the
// other devices stay as they are; each count runs statewire with --cores
// K --queues <lab queues>, several workers pinned from the device CPU on.
func TestWorkerDevices(t *testing.T) {
	got := ExpandWorkers([]string{Statewire, KernelBridgeCT, StatewireOff}, []int{1, 2})
	want := []string{"statewire/w1", "statewire/w2", KernelBridgeCT, "statewire-offload-off/w1", "statewire-offload-off/w2"}
	if !slices.Equal(got, want) {
		t.Errorf("ExpandWorkers: got %v, want %v", got, want)
	}
	if got := ExpandWorkers([]string{StatewireOff}, nil); !slices.Equal(got, []string{StatewireOff}) {
		t.Errorf("ExpandWorkers without workers: got %v, want [%s]", got, StatewireOff)
	}
	for _, tc := range []struct {
		name string
		base string
		k    int
	}{
		{"statewire-offload-off/w2", StatewireOff, 2},
		{"statewire/w16", Statewire, 16},
		{StatewireOff, StatewireOff, 0},
		{"statewire/wx", "statewire/wx", 0},
		{"statewire/w0", "statewire/w0", 0},
	} {
		if b, k := SplitWorkerDevice(tc.name); b != tc.base || k != tc.k {
			t.Errorf("SplitWorkerDevice(%q) = %q, %d; want %q, %d", tc.name, b, k, tc.base, tc.k)
		}
	}
	if b, k := SplitWorkerDevice(WorkerDevice(StatewireOff, 3)); b != StatewireOff || k != 3 {
		t.Errorf("SplitWorkerDevice(WorkerDevice(%q, 3)) = %q, %d", StatewireOff, b, k)
	}

	o := &Options{Queues: 2, DUTCPU: 1, StatewireCPUs: "1"}
	if args, ts := workerArgs(o, 0); strings.Join(args, " ") != "--queues 2" || ts != "1" {
		t.Errorf("no worker count, two queues: got %v taskset %q, want --queues 2 (serve every queue), 1", args, ts)
	}
	if args, _ := workerArgs(&Options{Queues: 1}, 0); args != nil {
		t.Errorf("no worker count, one queue: got %v, want no flag", args)
	}
	if args, _ := workerArgs(&Options{Queues: 2, StatewireArgs: []string{"--queues=1"}}, 0); args != nil {
		t.Errorf("no worker count, --queues=1 given: got %v, want the user's", args)
	}
	if args, ts := workerArgs(o, 1); strings.Join(args, " ") != "--cores 1 --queues 2" || ts != "1" {
		t.Errorf("1 worker: got %v taskset %q, want --cores 1 --queues 2, 1", args, ts)
	}
	n := runtime.NumCPU()
	cpus := fmt.Sprintf("%d,%d", 1%n, 2%n)
	if args, ts := workerArgs(o, 2); strings.Join(args, " ") != "--cores 2 --queues 2 --cpus "+cpus || ts != cpus {
		t.Errorf("2 workers: got %v taskset %q, want --cores 2 --queues 2 --cpus %s, %s", args, ts, cpus, cpus)
	}
	o.StatewireArgs = []string{"--cpus", "0,1"}
	if args, ts := workerArgs(o, 2); strings.Join(args, " ") != "--cores 2 --queues 2" || ts != "1" {
		t.Errorf("2 workers, --cpus given: got %v taskset %q, want --cores 2 --queues 2 and the user's taskset 1", args, ts)
	}
}

// TestCheckWorkers: queue and worker counts and generator CPUs are
// refused with what to change.
func TestCheckWorkers(t *testing.T) {
	ok := Options{Devices: []string{StatewireOff}, Queues: 2, Workers: []int{1, 2}, GenCPUs: []int{0, 1}, Generator: GenLive}
	if runtime.NumCPU() < 2 {
		ok.GenCPUs = nil
	}
	if err := CheckWorkers(&ok); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"too many queues", func(o *Options) { o.Queues = MaxQueues + 1 }, "want 1..64"},
		{"more workers than queues", func(o *Options) { o.Workers = []int{1, 3} }, "3 workers with 2 queue(s) per port: want 1..2"},
		{"no statewire device", func(o *Options) { o.Devices = []string{KernelBridge} }, "needs a statewire device"},
		{"cores given twice", func(o *Options) { o.StatewireArgs = []string{"--cores", "2"} }, "leave them out"},
		{"CPU out of range", func(o *Options) { o.GenCPUs = []int{0, runtime.NumCPU()} }, "this machine has CPUs"},
		{"CPU twice", func(o *Options) { o.GenCPUs = []int{0, 0} }, "listed twice"},
		{"packet generator", func(o *Options) { o.GenCPUs = []int{0, 1}; o.Generator = GenPacket }, "live-frames one"},
		{"one queue, two workers", func(o *Options) { o.Queues = 1 }, "2 workers with 1 queue(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if runtime.NumCPU() < 2 && strings.Contains(tc.name, "generator") {
				testenv.Unavailable(t, "needs 2 CPUs")
			}
			o := ok
			o.GenCPUs = slices.Clone(ok.GenCPUs)
			tc.mod(&o)
			err := CheckWorkers(&o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestPartFlows: the flows split between n generator threads cover every
// flow exactly once.
func TestPartFlows(t *testing.T) {
	for _, flows := range []int{1, 2, 3, 1000, 100001} {
		for _, n := range []int{2, 3, 4} {
			sum := 0
			for k := range n {
				sum += partFlows(flows, k, n)
			}
			if sum != flows {
				t.Errorf("flows %d over %d parts: parts hold %d flows", flows, n, sum)
			}
		}
	}
	if got := partFlows(1, 1, 2); got != 0 {
		t.Errorf("one flow, part 1 of 2: %d flows, want 0 (the flow is on one queue only)", got)
	}
}

// TestReportWorkers: the table gives each worker count's rates over the
// first count's, per frame size and flow count.
func TestReportWorkers(t *testing.T) {
	r := &Report{Workers: []int{1, 2}, Queues: 2, GenCPUs: []int{0, 1},
		Devices:      []string{"statewire-offload-off/w1", "statewire-offload-off/w2"},
		GeneratorPPS: map[int]float64{64: 10e6}}
	r.Results = []Result{
		{Device: "statewire-offload-off/w1", FrameSize: 64, Flows: 1000, Searched: true,
			Throughput: Trial{Delivered: 1e6}, NDR: Trial{Delivered: 0.8e6}},
		{Device: "statewire-offload-off/w2", FrameSize: 64, Flows: 1000, Searched: true,
			Throughput: Trial{Delivered: 1.5e6}, NDR: Trial{Delivered: 0.4e6}},
	}
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"2 queue(s) per veth; generator on CPU(s) [0 1]",
		"rate with K workers over rate with 1",
		"statewire-offload-off/w2 throughput 1.50x (1.500 / 1.000 Mpps), NDR 0.50x (0.400 / 0.800 Mpps)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if deviceColor("statewire-offload-off/w2") == deviceColor(StatewireOff) || deviceColor("statewire-offload-off/w1") != deviceColor(StatewireOff) {
		t.Error("worker counts: /w1 should keep the device's colour and /w2 get another")
	}
}

// onCPU runs f on a thread pinned to cpu.
func onCPU(t *testing.T, cpu int, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Errorf("pin to CPU %d: %v", cpu, err)
			return
		}
		f()
	}()
	<-done
}

// TestGeneratorSplitProgram: the generator program for CPUs 0 and 1 sends,
// run on CPU k, only the flows f with f mod 2 == k, each in turn.
func TestGeneratorSplitProgram(t *testing.T) {
	lab.RequireRoot(t)
	if runtime.NumCPU() < 2 {
		testenv.Unavailable(t, "needs 2 CPUs")
	}
	cnt, err := newPerCPUArray("t_gcnt", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer cnt.Close()
	prog, err := genProgram(cnt, 5, []int{0, 1}, false, udpLayout, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	in := Frame(macL, macR, 64)
	for cpu, want := range [][]uint16{{0, 2, 4, 0, 2}, {1, 3, 1, 3}} {
		onCPU(t, cpu, func() {
			for i, w := range want {
				out := make([]byte, len(in)+256)
				opts := ebpf.RunOptions{Data: in, DataOut: out, Repeat: 1}
				if _, err := prog.Run(&opts); err != nil {
					t.Errorf("CPU %d run %d: %v", cpu, i, err)
					return
				}
				if sp := binary.BigEndian.Uint16(opts.DataOut[offSport:]); sp != 0x8000|w {
					t.Errorf("CPU %d run %d: source port %#x, want flow %d (%#x)", cpu, i, sp, w, 0x8000|w)
				}
			}
		})
	}
}

// queueCounter is an XDP program that counts the harness's frames by RX
// queue and flow (source port & 1023) in an array of 2 x 1024 counters,
// and drops them.
func queueCounter(t *testing.T) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "t_qcnt", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2048})
	if err != nil {
		t.Fatal(err)
	}
	const offRxQueue = 16 // struct xdp_md rx_queue_index
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, offData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, offDataEnd, asm.Word),
		asm.LoadMem(asm.R6, asm.R1, offRxQueue, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, offSport+2),
		asm.JGT.Reg(asm.R4, asm.R3, "drop"),
		asm.LoadMem(asm.R7, asm.R2, offSport, asm.Half),
		asm.HostTo(asm.BE, asm.R7, asm.Half),
		asm.And.Imm(asm.R7, 1023),
		asm.JGT.Imm(asm.R6, 1, "drop"),
		asm.LSh.Imm(asm.R6, 10),
		asm.Add.Reg(asm.R7, asm.R6),
		asm.StoreMem(asm.R10, -4, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "GPL"})
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return p, m
}

// TestGeneratorSpreadsQueues: in a two-queue lab, the generator on CPUs 0
// and 1 puts each flow on exactly one of port A's RX queues, flow f on
// queue f mod 2, every frame it sent accounted for (counted at port A by
// queue and flow).
func TestGeneratorSpreadsQueues(t *testing.T) {
	lab.RequireRoot(t)
	if runtime.NumCPU() < 2 {
		testenv.Unavailable(t, "needs 2 CPUs")
	}
	l := lab.NewT(t, lab.Options{Bare: true, Queues: 2, OffloadsOff: true})
	prog, m := queueCounter(t)
	defer m.Close()
	defer prog.Close()
	lk, err := attachXDP(l.BridgeNS, l.PortA, prog)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	const flows, count = 7, 7000
	g, err := NewGenerator(GenConfig{NS: l.LeftNS, Ifname: l.LeftIf, Src: l.LeftMAC, Dst: l.RightMAC,
		FrameSize: 64, Flows: flows, CPU: 0, CPUs: []int{0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	sent, _, err := g.SendCount(50e3, count)
	if err != nil {
		t.Fatal(err)
	}
	if sent != count {
		t.Fatalf("sent %d frames, want %d", sent, count)
	}
	var got [2][flows]uint64
	read := func() uint64 {
		var total uint64
		for q := range 2 {
			for f := range flows {
				var v uint64
				if err := m.Lookup(uint32(q<<10|f), &v); err != nil {
					t.Fatal(err)
				}
				got[q][f] = v
				total += v
			}
		}
		return total
	}
	// The frames of the last call may still be in port A's NAPI.
	testenv.WaitFor(5*time.Second, func() bool { return read() >= count })
	var total uint64
	for f := range flows {
		q := f % 2
		if got[1-q][f] != 0 {
			t.Errorf("flow %d: %d frames on queue %d and %d on queue %d, want all on queue %d", f, got[q][f], q, got[1-q][f], 1-q, q)
		}
		total += got[0][f] + got[1][f]
	}
	if total != count {
		t.Errorf("counted %d frames at port A, want all %d sent (by queue and flow: %v)", total, count, got)
	}
	// SendCount splits the count by the parts' flows: 4 of 7 on queue 0.
	var q0 uint64
	for f := range flows {
		q0 += got[0][f]
	}
	if q0 != count*4/flows {
		t.Errorf("queue 0 got %d frames, want %d (its 4 flows of 7)", q0, count*4/flows)
	}
}

// TestWorkersLab runs the harness for real with --workers 1,2 on a
// two-queue lab and the generator on CPUs 0 and 1: statewire-offload-off
// is measured once per worker count, as /w1 and /w2, each started with
// its worker count over both queues (its own start-up line says so), the
// sink counts what each delivers (never more than was sent), and only the
// two-worker device hands frames to another worker.
func TestWorkersLab(t *testing.T) {
	lab.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds two labs and floods them for ~10 s")
	}
	if runtime.NumCPU() < 2 {
		testenv.Unavailable(t, "needs 2 CPUs")
	}
	o := QuickOptions()
	o.Mode = ModeFlood
	o.Devices = []string{StatewireOff}
	o.Workers, o.Queues, o.GenCPUs = []int{1, 2}, 2, []int{0, 1}
	o.Statewire = lab.StatewireBinary(t)
	o.FrameSizes, o.Flows = []int{64}, []int{100}
	o.Trial = 200 * time.Millisecond
	o.NDRSteps, o.PDRSteps = 1, 0
	var log bytes.Buffer
	o.Progress = &log
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Run(ctx, o)
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("devices not measured: %v", rep.Errors)
	}
	w1, w2 := WorkerDevice(StatewireOff, 1), WorkerDevice(StatewireOff, 2)
	if !slices.Equal(rep.Devices, []string{w1, w2}) || rep.Queues != 2 || !slices.Equal(rep.Workers, []int{1, 2}) {
		t.Errorf("report: devices %v queues %d workers %v, want [%s %s], 2, [1 2]", rep.Devices, rep.Queues, rep.Workers, w1, w2)
	}
	for _, dev := range rep.Devices {
		x := rep.Result(dev, 64, 100)
		if x == nil || x.Error != "" {
			t.Errorf("%s: no result (%v)", dev, x)
			continue
		}
		if x.Throughput.Received == 0 || x.Throughput.Received > x.Throughput.Sent {
			t.Errorf("%s: sink counted %d of %d sent, want some and never more", dev, x.Throughput.Received, x.Throughput.Sent)
		}
		if len(x.Throughput.CPUs) != 2 {
			t.Errorf("%s: CPU split of %d CPUs, want the generator's two", dev, len(x.Throughput.CPUs))
		}
	}
	// closeAll logs each statewire's start-up line and the tail of its
	// output: the datapath line names the workers and queues, the totals
	// count the frames handed to another worker.
	out := log.String()
	for _, want := range []string{w1 + ": ", "1 workers, 2 queues", w2 + ": ", "2 workers, 2 queues"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	i1, i2 := strings.Index(out, w1+": "), strings.Index(out, w2+": ")
	if i1 >= 0 && i2 > i1 {
		if strings.Contains(out[i1:i2], "via another core") {
			t.Errorf("%s handed frames to another worker: it has one", w1)
		}
		if !strings.Contains(out[i2:], "via another core") {
			t.Errorf("%s handed no frame to another worker: 100 flows over two workers should", w2)
		}
	}
}
