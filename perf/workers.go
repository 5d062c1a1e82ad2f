package perf

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// One worker against several in one run (Options.Workers, `--workers
// 1,2`): each statewire device of the list runs once per worker count, as
// device NAME/wK (WorkerDevice), in a lab of its own with Options.Queues
// queues per veth: `statewire run --cores K --queues Queues`, worker i
// serving queues i, i+K, ... Their trials interleave with the other
// devices' as usual, so the ratios between /w1 and /w2 come from one run
// on one machine state.
//
// Where the workers run: with one worker, --statewire-cpus (default the
// device CPU) as without --workers; with K > 1, worker i is pinned
// (`statewire run --cpus`) to CPU (DUTCPU + i) mod NumCPU and the taskset
// is those CPUs, unless StatewireArgs pins them itself (--cpus). On a
// 2-CPU machine the second worker therefore shares CPU 0 with the
// generator and with port A's receive (see RESULTS.md, "One worker vs
// two, and 32 cores").

// workerSep separates a statewire device's name from its worker count.
const workerSep = "/w"

// WorkerDevice names statewire device base run with k workers.
func WorkerDevice(base string, k int) string { return base + workerSep + strconv.Itoa(k) }

// SplitWorkerDevice returns the device a name stands for and its worker
// count (0 for a name without one).
func SplitWorkerDevice(name string) (base string, k int) {
	i := strings.LastIndex(name, workerSep)
	if i < 0 {
		return name, 0
	}
	k, err := strconv.Atoi(name[i+len(workerSep):])
	if err != nil || k <= 0 {
		return name, 0
	}
	return name[:i], k
}

// ExpandWorkers returns devices with each statewire device replaced by
// one per worker count, in the order of workers (no workers: devices).
func ExpandWorkers(devices []string, workers []int) []string {
	if len(workers) == 0 {
		return devices
	}
	var out []string
	for _, d := range devices {
		if d != Statewire && d != StatewireOff {
			out = append(out, d)
			continue
		}
		for _, k := range workers {
			out = append(out, WorkerDevice(d, k))
		}
	}
	return out
}

// CheckWorkers validates the queue count, the worker counts and the
// generator CPUs of o against each other and this machine.
func CheckWorkers(o *Options) error {
	if o.Queues < 0 || o.Queues > MaxQueues {
		return fmt.Errorf("perf: %d queues: want 1..%d", o.Queues, MaxQueues)
	}
	q := max(o.Queues, 1)
	for _, k := range o.Workers {
		if k < 1 || k > q {
			return fmt.Errorf("perf: %d workers with %d queue(s) per port: want 1..%d (each worker serves at least one queue; raise --queues)", k, q, q)
		}
	}
	if len(o.Workers) > 0 && (hasFlag(o.StatewireArgs, "cores") || hasFlag(o.StatewireArgs, "queues")) {
		return fmt.Errorf("perf: --workers sets statewire's --cores and --queues: leave them out of the statewire arguments (the lab's queue count is --queues)")
	}
	if len(o.Workers) > 0 && !slices.ContainsFunc(o.Devices, func(d string) bool { return d == Statewire || d == StatewireOff }) {
		return fmt.Errorf("perf: --workers needs a statewire device (%s or %s) in the device list", Statewire, StatewireOff)
	}
	ncpu := runtime.NumCPU()
	for i, c := range o.GenCPUs {
		if c < 0 || c >= ncpu {
			return fmt.Errorf("perf: generator CPU %d: this machine has CPUs 0..%d", c, ncpu-1)
		}
		if slices.Contains(o.GenCPUs[:i], c) {
			return fmt.Errorf("perf: generator CPU %d listed twice", c)
		}
	}
	if len(o.GenCPUs) > 1 && o.Generator == GenPacket {
		return fmt.Errorf("perf: a generator on several CPUs is the live-frames one; the packet generator spreads its flows over the queues by itself (flow hash), from one CPU")
	}
	if len(o.GenCPUs) > 1 && q > 1 {
		// veth: RX queue = transmitting CPU mod queues. Two generator CPUs
		// on one queue would not spread anything.
		seen := map[int]bool{}
		for _, c := range o.GenCPUs {
			if seen[c%q] {
				return fmt.Errorf("perf: generator CPUs %v: two of them fill port A's queue %d (veth puts a frame on queue CPU mod %d); pick CPUs that differ mod the queue count", o.GenCPUs, c%q, q)
			}
			seen[c%q] = true
		}
	}
	return nil
}

// MaxQueues bounds Options.Queues.
const MaxQueues = 64

// workerCPUs returns the CPUs of k workers: CPU (DUTCPU + i) mod NumCPU
// for worker i.
func workerCPUs(o *Options, k int) []int {
	ncpu := runtime.NumCPU()
	dut := max(o.DUTCPU, 0)
	cpus := make([]int, k)
	for i := range cpus {
		cpus[i] = (dut + i) % ncpu
	}
	return cpus
}

// workerArgs returns the `statewire run` flags and the taskset CPU list of
// a statewire device run with k workers (k 0: no worker count, the
// statewire arguments decide; statewire serves every queue of the lab
// unless they say otherwise: its --queues defaults to --cores, and frames
// on the queues it does not serve are lost).
func workerArgs(o *Options, k int) (args []string, taskset string) {
	taskset = o.StatewireCPUs
	if k == 0 {
		if o.Queues > 1 && !hasFlag(o.StatewireArgs, "queues") {
			args = []string{"--queues", strconv.Itoa(o.Queues)}
		}
		return args, taskset
	}
	args = []string{"--cores", strconv.Itoa(k), "--queues", strconv.Itoa(max(o.Queues, 1))}
	if k == 1 || hasFlag(o.StatewireArgs, "cpus") {
		return args, taskset
	}
	var list []string
	for _, c := range workerCPUs(o, k) {
		list = append(list, strconv.Itoa(c))
	}
	cl := strings.Join(list, ",")
	return append(args, "--cpus", cl), cl
}

// workerColors shade a statewire device's colour by its worker count
// (index k-2; one worker keeps the device's own colour).
var workerColors = map[string][]string{
	Statewire:    {"#8b1e1b", "#4d0f0d"},
	StatewireOff: {"#b36b00", "#6b4000"},
}

// deviceColor is the bar colour of device d (NAME/wK included).
func deviceColor(d string) string {
	base, k := SplitWorkerDevice(d)
	if c := workerColors[base]; k >= 2 && k-2 < len(c) {
		return c[k-2]
	}
	return deviceColors[base]
}

// writeWorkers prints, for each statewire device run with several worker
// counts, each count's throughput and NDR over those of its fewest
// workers, at every frame size and flow count.
func (r *Report) writeWorkers(b *strings.Builder) {
	if len(r.Workers) < 2 {
		return
	}
	first := r.Workers[0]
	header := false
	for _, base := range []string{Statewire, StatewireOff} {
		for _, x := range r.Results {
			xb, k := SplitWorkerDevice(x.Device)
			if xb != base || k == first {
				continue
			}
			ref := r.Result(WorkerDevice(base, first), x.FrameSize, x.Flows)
			if ref == nil {
				continue
			}
			if !header {
				fmt.Fprintf(b, "\nworkers (same run): rate with K workers over rate with %d\n", first)
				header = true
			}
			thr, ndr := "-", "-"
			if ref.Throughput.Delivered > 0 {
				thr = fmt.Sprintf("%.2fx", x.Throughput.Delivered/ref.Throughput.Delivered)
			}
			if x.Searched && ref.Searched && ref.NDR.Delivered > 0 {
				ndr = fmt.Sprintf("%.2fx", x.NDR.Delivered/ref.NDR.Delivered)
			}
			fmt.Fprintf(b, "%5s %7d  %-24s throughput %s (%s / %s Mpps), NDR %s (%s / %s Mpps)\n",
				SizeLabel(x.FrameSize), x.Flows, x.Device, thr, mpps(x.Throughput.Delivered), mpps(ref.Throughput.Delivered),
				ndr, mpps(x.NDR.Delivered), mpps(ref.NDR.Delivered))
		}
	}
}
