package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// Device names, as given to --devices and used in reports.
const (
	Statewire = "statewire"
	// StatewireOff is statewire with --offload=off: every frame through
	// the AF_XDP slow path, in the same run as the fast path.
	StatewireOff   = "statewire-offload-off"
	KernelBridge   = "kernel-bridge"
	KernelBridgeCT = "kernel-bridge-ct"
	XDPRedirect    = "xdp-redirect"
	// XDPLookup is XDP_REDIRECT after one flow-map look-up per frame
	// (lookup.go): the floor of any flow-keyed fast path.
	XDPLookup       = "xdp-lookup"
	generatorDevice = "null" // the generator calibration: sink on port A itself
)

// Steering modes: where the device's receive work on port A runs.
const (
	// SteerRPS: port A's NAPI poll runs in the generator's softirq; the
	// kernel bridges' skbs go to the device CPU by RPS.
	SteerRPS = "rps"
	// SteerNAPI: port A runs threaded NAPI, its thread on the device CPU,
	// so the whole device runs there. Measured on 6.18 (64 B, 1000 flows)
	// it raises the kernel bridge's overload throughput (1.22 against
	// ~1.0 Mpps) but paced traffic suffers: live-frames pages are then in
	// flight on the other CPU when each call ends, NDR falls to ~0.1 Mpps
	// for every device and XDP_REDIRECT loses frames at any rate.
	SteerNAPI = "napi"
	// SteerInline: nothing moves; the kernel bridges forward on the
	// generator's CPU and pace it.
	SteerInline = "inline"
)

// AllDevices is the default device list, in report order.
var AllDevices = []string{Statewire, StatewireOff, KernelBridge, KernelBridgeCT, XDPRedirect, XDPLookup}

// Nice is the nice value of every thread of the harness that does the
// measured work: the generator, the devices' NAPI threads and statewire.
// On a shared machine it keeps other processes from deciding the figures.
const Nice = -20

// StatewireRules is the iptables-save rule set statewire gets unless
// --statewire-args names its own --rules: the same policy as
// lab.DefaultRuleset (new connections from port A only, replies and
// related traffic both ways). {PortA} is replaced by the port name.
const StatewireRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i {PortA} -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// device is one device under test in its own lab.
type device struct {
	name  string
	lab   *lab.Lab
	sink  *Sink
	links []link.Link
	progs []*ebpf.Program
	cmd   *exec.Cmd
	out   *bytes.Buffer // statewire's stdout+stderr
	dir   string        // temporary files (statewire rules)
	// flows is xdp-lookup's flow map.
	flows *ebpf.Map
	// steered is set once port A's RPS points at the device CPU.
	steered bool
}

// newDevice builds the lab for name and attaches what the device needs.
// statewire is started (then stopped with SIGSTOP until its first trial).
func newDevice(ctx context.Context, name string, o *Options) (_ *device, err error) {
	d := &device{name: name}
	base, workers := SplitWorkerDevice(name)
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	// Offloads off: every device is measured on frames as a cable
	// carries them (GRO on the left host is turned back on below where
	// the fast path needs it).
	lo := lab.Options{Bare: true, Queues: o.Queues, OffloadsOff: true, MTU: o.MTU}
	switch base {
	case KernelBridge:
		lo.Mode = lab.KernelBridge
	case KernelBridgeCT:
		lo.Mode = lab.KernelBridgeConntrack
	case Statewire, StatewireOff, XDPRedirect, XDPLookup, generatorDevice:
		lo.Mode = lab.None
	default:
		return nil, fmt.Errorf("perf: unknown device %q (want one of %s)", name, strings.Join(AllDevices, ", "))
	}
	if d.lab, err = lab.New(ctx, lo); err != nil {
		return nil, err
	}
	l := d.lab
	sinkNS, sinkIf := l.RightNS, l.RightIf
	if name == generatorDevice {
		sinkNS, sinkIf = l.BridgeNS, l.PortA
	}
	lay := udpLayout
	if o.Proto == "tcp" && name != generatorDevice {
		lay = tcpLayout(false)
	}
	if d.sink, err = attachSink(sinkNS, sinkIf, o.Latency, lay); err != nil {
		return nil, err
	}
	switch base {
	case KernelBridge, KernelBridgeCT:
		// XDP_PASS on port A enables its NAPI, which the generator's
		// XDP transmit into the veth needs; frames then take the normal
		// stack path into the bridge.
		if err := d.attach(passProgram, l.PortA); err != nil {
			return nil, err
		}
		// And on port B, for the TCP handshake's replies from the right.
		if err := d.attach(passProgram, l.PortB); err != nil {
			return nil, err
		}
	case XDPRedirect, XDPLookup:
		var ia, ib int
		if err := lab.Do(l.BridgeNS, func() error {
			var err error
			if ia, err = ifindexOf(l.PortA); err != nil {
				return err
			}
			ib, err = ifindexOf(l.PortB)
			return err
		}); err != nil {
			return nil, err
		}
		toB := func() (*ebpf.Program, error) { return redirectProgram(ib) }
		if name == XDPLookup {
			if d.flows, err = newLookupMap(); err != nil {
				return nil, err
			}
			toB = func() (*ebpf.Program, error) { return lookupProgram(d.flows, ib) }
		}
		if err := d.attach(toB, l.PortA); err != nil {
			return nil, err
		}
		if err := d.attach(func() (*ebpf.Program, error) { return redirectProgram(ia) }, l.PortB); err != nil {
			return nil, err
		}
	case Statewire, StatewireOff:
		// statewire's XDP fast path redirects into port B (the sink's
		// XDP program on the right host's veth gives it NAPI, as for
		// XDP_REDIRECT) and into port A, whose peer on the left host
		// has an XDP program only while the generator sends: GRO on
		// there gives it NAPI for good, so --offload=auto finds the
		// fast path usable on both ports (bridge checkRedirect), as
		// the e2e rig does. Both statewire devices get it, so their
		// labs differ only by the flag.
		if _, err := l.Run(ctx, l.LeftNS, "ethtool", "-K", l.LeftIf, "gro", "on"); err != nil {
			return nil, fmt.Errorf("perf: GRO on %s: %w", l.LeftIf, err)
		}
		if err := d.startStatewire(o, base == StatewireOff, workers); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func ifindexOf(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}

func (d *device) attach(mk func() (*ebpf.Program, error), ifname string) error {
	p, err := mk()
	if err != nil {
		return err
	}
	d.progs = append(d.progs, p)
	lk, err := attachXDP(d.lab.BridgeNS, ifname, p)
	if err != nil {
		return err
	}
	d.links = append(d.links, lk)
	return nil
}

// startStatewire runs `ip netns exec BRIDGE [taskset -c CPUS] statewire run
// --port-a A --port-b B [--rules FILE] ARGS...`.
// With off it adds --offload=off (device StatewireOff); with workers > 0
// the flags of that worker count (workerArgs).
func (d *device) startStatewire(o *Options, off bool, workers int) error {
	bin := o.Statewire
	if bin == "" {
		return errors.New("perf: no statewire binary (Options.Statewire)")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("perf: statewire binary: %w", err)
	}
	l := d.lab
	args := []string{"run", "--port-a", l.PortA, "--port-b", l.PortB}
	if !hasFlag(o.StatewireArgs, "rules") {
		dir, err := os.MkdirTemp("", "swperf")
		if err != nil {
			return err
		}
		d.dir = dir
		f := filepath.Join(dir, "rules.v4")
		rs := strings.ReplaceAll(StatewireRules, "{PortA}", l.PortA)
		if err := os.WriteFile(f, []byte(rs), 0o644); err != nil {
			return err
		}
		args = append(args, "--rules", f)
	}
	// --busy-poll never sleeps: statewire refuses it with a real-time
	// priority, so the user's choice of it wins.
	if o.RTPriority > 0 && !hasFlag(o.StatewireArgs, "rt-priority") && !hasFlag(o.StatewireArgs, "busy-poll") {
		args = append(args, "--rt-priority", strconv.Itoa(o.RTPriority))
	}
	wargs, taskset := workerArgs(o, workers)
	args = append(args, wargs...)
	args = append(args, o.StatewireArgs...)
	if off {
		args = append(args, "--offload=off")
	}
	argv := []string{"-n", strconv.Itoa(Nice)}
	if taskset != "" {
		argv = append(argv, "taskset", "-c", taskset)
	}
	argv = append(argv, bin)
	argv = append(argv, args...)
	d.cmd = l.Command(l.BridgeNS, "nice", argv...)
	d.out = &bytes.Buffer{}
	d.cmd.Stdout = d.out
	d.cmd.Stderr = d.out
	// Own process group, so SIGSTOP/SIGCONT reach statewire behind ip
	// netns exec and taskset (both exec, so it is one process anyway).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("perf: start statewire: %w", err)
	}
	return nil
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// exited reports whether statewire is gone, with its output.
func (d *device) exited() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	var ws unix.WaitStatus
	pid, err := unix.Wait4(d.cmd.Process.Pid, &ws, unix.WNOHANG, nil)
	if err != nil || pid == 0 {
		return nil
	}
	d.cmd.Process = nil
	return fmt.Errorf("perf: statewire exited (%v): %s", exitString(ws), tail(d.out.String(), 800))
}

func exitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "status " + strconv.Itoa(ws.ExitStatus())
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// pause stops statewire between its trials so that its busy workers do not
// take CPU from the other devices' trials; resume continues it.
func (d *device) pause() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = unix.Kill(-d.cmd.Process.Pid, unix.SIGSTOP)
	}
}

func (d *device) resume() error {
	if d.cmd == nil {
		return nil
	}
	if d.cmd.Process == nil {
		return fmt.Errorf("perf: statewire is not running: %s", tail(d.out.String(), 800))
	}
	_ = unix.Kill(-d.cmd.Process.Pid, unix.SIGCONT)
	return d.exited()
}

// steer sends the skbs received on ports A and B to cpu with RPS (kernel
// devices only: XDP devices never build an skb on their ports). The
// generator's CPU then only generates and takes the frame off the veth
// ring; the bridge, conntrack, the other port and the far host's receive
// run on the device CPU, and frames the device cannot take are dropped at
// that CPU's backlog, as on a NIC with RSS.
func (d *device) steer(cpu int, mode string) error {
	if d.steered || cpu < 0 || d.name == generatorDevice {
		return nil
	}
	if mode == SteerNAPI {
		return d.threadNAPI(cpu)
	}
	if d.name != KernelBridge && d.name != KernelBridgeCT {
		return nil
	}
	l := d.lab
	mask := fmt.Sprintf("%x", uint64(1)<<uint(cpu))
	// Port B too: the floods send nothing from the right, but the TCP
	// handshakes and the CPS sessions do, and without RPS a kernel
	// bridge forwarded those on the generator CPU (where the right
	// endpoint transmitted) while statewire's worker forwards both
	// directions on the device CPU.
	for _, port := range []string{l.PortA, l.PortB} {
		if _, err := l.Run(context.Background(), l.BridgeNS, "sh", "-c",
			"for q in /sys/class/net/"+port+"/queues/rx-*; do echo "+mask+" > $q/rps_cpus; done"); err != nil {
			return fmt.Errorf("perf: RPS on %s: %w", port, err)
		}
	}
	d.steered = true
	return nil
}

// threadNAPI turns on threaded NAPI for port A and pins its thread to cpu
// at nice -20: all of port A's receive work (XDP, skb, bridge, conntrack,
// the copy to AF_XDP) then runs on the device CPU, and the generator's CPU
// only generates and fills port A's ring.
func (d *device) threadNAPI(cpu int) error {
	if err := threadNAPI(d.lab, d.lab.BridgeNS, d.lab.PortA, cpu, 0); err != nil {
		return err
	}
	d.steered = true
	return nil
}

// threadNAPI turns on threaded NAPI for ifname in namespace ns of l and
// pins its NAPI threads to cpu at nice -20 (Nice), or under SCHED_FIFO at
// priority fifo when fifo > 0.
func threadNAPI(l *lab.Lab, ns, ifname string, cpu, fifo int) error {
	if _, err := l.Run(context.Background(), ns, "sh", "-c", "echo 1 > /sys/class/net/"+ifname+"/threaded"); err != nil {
		return fmt.Errorf("perf: threaded NAPI on %s: %w", ifname, err)
	}
	pids, err := napiThreads(ifname)
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("perf: no NAPI thread for %s", ifname)
	}
	for _, pid := range pids {
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(pid, &set); err != nil {
			return fmt.Errorf("perf: pin the NAPI thread of %s (pid %d) to CPU %d: %w", ifname, pid, cpu, err)
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, pid, Nice); err != nil {
			return fmt.Errorf("perf: renice the NAPI thread of %s (pid %d): %w", ifname, pid, err)
		}
		if fifo > 0 {
			attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(fifo)}
			if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
				return fmt.Errorf("perf: SCHED_FIFO %d for the NAPI thread of %s (pid %d): %w", fifo, ifname, pid, err)
			}
		}
	}
	return nil
}

// napiThreads returns the pids of the kernel threads napi/IFNAME-*.
func napiThreads(ifname string) ([]int, error) {
	prefix := "napi/" + ifname + "-"
	// comm is cut at 15 bytes: compare the common prefix.
	return threadsNamed(func(comm string) bool {
		return strings.HasPrefix(comm, "napi/") && (strings.HasPrefix(prefix, comm) || strings.HasPrefix(comm, prefix))
	})
}

// ksoftirqds returns the pids of ksoftirqd/N for each cpu N (negative
// ones skipped).
func ksoftirqds(cpus []int) ([]int, error) {
	want := map[string]bool{}
	for _, c := range cpus {
		if c >= 0 {
			want["ksoftirqd/"+strconv.Itoa(c)] = true
		}
	}
	return threadsNamed(func(comm string) bool { return want[comm] })
}

// threadsNamed returns the pids in /proc whose comm match accepts.
func threadsNamed(match func(comm string) bool) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && match(strings.TrimSpace(string(b))) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// reniceAutogroup sets the nice value of this process's scheduler
// autogroup (kernel.sched_autogroup_enabled=1 puts every session in its own
// group, and groups share the CPU equally whatever the nice values inside
// them) and returns a function restoring the old value. Without it, a
// nice -20 generator still gets only its session's share of a busy CPU and
// stalls for tens of milliseconds.
func reniceAutogroup(nice int) (restore func(), err error) {
	const f = "/proc/self/autogroup"
	b, err := os.ReadFile(f)
	if err != nil {
		return func() {}, nil // no autogroups: nothing to do
	}
	old := 0
	if fs := strings.Fields(string(b)); len(fs) == 3 && fs[1] == "nice" {
		old, _ = strconv.Atoi(fs[2])
	}
	if err := os.WriteFile(f, []byte(strconv.Itoa(nice)), 0); err != nil {
		return func() {}, fmt.Errorf("perf: renice autogroup: %w", err)
	}
	return func() { _ = os.WriteFile(f, []byte(strconv.Itoa(old)), 0) }, nil
}

// reniceKsoftirqd sets the nice value of ksoftirqd on each cpu and returns
// a function restoring the old values. Softirq work that overflows its time
// slice moves to ksoftirqd; at nice 0 on a shared machine it would get a
// fraction of the CPU and the figures would measure the neighbours.
func reniceKsoftirqd(cpus []int, nice int) (restore func(), err error) {
	type old struct{ pid, nice int }
	var olds []old
	restore = func() {
		for _, o := range olds {
			_ = unix.Setpriority(unix.PRIO_PROCESS, o.pid, o.nice)
		}
	}
	pids, err := ksoftirqds(cpus)
	if err != nil {
		return restore, err
	}
	for _, pid := range pids {
		// getpriority returns 20-nice.
		p, err := unix.Getpriority(unix.PRIO_PROCESS, pid)
		if err != nil {
			return restore, err
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, pid, nice); err != nil {
			return restore, fmt.Errorf("perf: renice ksoftirqd pid %d: %w", pid, err)
		}
		olds = append(olds, old{pid, 20 - p})
	}
	return restore, nil
}

// close stops statewire and removes everything the device made.
func (d *device) close() error {
	var errs []error
	if d.cmd != nil && d.cmd.Process != nil {
		pid := d.cmd.Process.Pid
		_ = unix.Kill(-pid, unix.SIGCONT)
		_ = unix.Kill(-pid, unix.SIGTERM)
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = unix.Kill(-pid, unix.SIGKILL)
			<-done
		}
	}
	if d.sink != nil {
		errs = append(errs, d.sink.Close())
	}
	for _, lk := range d.links {
		errs = append(errs, lk.Close())
	}
	for _, p := range d.progs {
		errs = append(errs, p.Close())
	}
	if d.flows != nil {
		errs = append(errs, d.flows.Close())
	}
	if d.lab != nil {
		errs = append(errs, d.lab.Close())
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}
