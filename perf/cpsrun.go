package perf

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/lab"
)

// Modes of Run (Options.Mode).
const (
	// ModeAll is the floods (NDR, PDR, latency) and then CPS.
	ModeAll = "all"
	// ModeFlood is the floods only.
	ModeFlood = "flood"
	// ModeCPS is the connections-per-second measurement only.
	ModeCPS = "cps"
)

// CPSResult is one device's connections-per-second measurement.
type CPSResult struct {
	Device string `json:"device"`
	// Overload is the trial at the generator's ceiling rate.
	Overload CPSTrial `json:"overload"`
	// Best is the passing trial (complete ratio >= Report.CPSComplete)
	// with the highest completed rate: the device's CPS.
	Best     CPSTrial   `json:"best"`
	Searched bool       `json:"searched"`
	Trials   []CPSTrial `json:"trials"`
	// GenLimits counts trials where the client opened under 97% of the
	// target (the endpoints, not the device, were the limit).
	GenLimits int    `json:"generator_limited_trials"`
	Error     string `json:"error,omitempty"`
}

// cpsMinRate is the lowest opening rate the CPS search tries (conn/s).
const cpsMinRate = 1000

// cpsActive is a device in the CPS phase.
type cpsActive struct {
	d   *device
	p   *cpsPair
	res *CPSResult
	err error
}

// cpsOpen turns d into a CPS lab: statewire made ready through the sink
// (which needs the right host's veth), steering as for the floods, then the
// sink replaced by the two XDP endpoints (cpsend.go). The null device's server sits
// on port A itself: the client and the server are then directly connected.
func (r *runner) cpsOpen(ctx context.Context, d *device) (*cpsPair, error) {
	if d.cmd != nil {
		if err := d.resume(); err != nil {
			return nil, err
		}
		err := r.ready(ctx, d)
		d.pause()
		if err != nil {
			return nil, err
		}
	}
	if r.o.Steer != SteerInline {
		if err := d.steer(r.o.DUTCPU, r.o.Steer); err != nil {
			return nil, err
		}
	}
	if d.sink != nil {
		if err := d.sink.Close(); err != nil {
			return nil, err
		}
		d.sink = nil
	}
	l := d.lab
	a := cpsAddrs{
		clientMAC: l.LeftMAC, serverMAC: l.RightMAC,
		client: lab.LeftIPv4.Addr(), server: lab.RightIPv4.Addr(),
	}
	sns, sif := l.RightNS, l.RightIf
	if d == r.nullDev {
		sns, sif = l.BridgeNS, l.PortA
	}
	p, err := openCPS(a, l.LeftNS, l.LeftIf, sns, sif, r.o.GenCPU)
	if err != nil || r.o.GenCPU < 0 {
		return p, err
	}
	// The endpoints' XDP runs in the NAPI of their veths, and veth runs
	// that NAPI on the CPU that transmitted to it: the device's CPU for
	// every frame the device forwards. Their own threads on the
	// generator's CPU keep the tool's work off the device's CPU, as a
	// far host's would be; under SCHED_FIFO above the generator, whose
	// pacing spins, they run as soon as a frame is queued (at nice -20
	// beside it they waited for its time slice, and the endpoints
	// dropped at their rings).
	fifo := 0
	if r.o.RTPriority > 0 {
		fifo = r.o.RTPriority + 1
	}
	for _, e := range []struct{ ns, ifname string }{{l.LeftNS, l.LeftIf}, {sns, sif}} {
		if err := threadNAPI(l, e.ns, e.ifname, r.o.GenCPU, fifo); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

// cpsTrial runs one counted CPS trial of a (statewire continued for it).
func (r *runner) cpsTrial(a *cpsActive, rate float64) (CPSTrial, error) {
	if err := a.d.resume(); err != nil {
		return CPSTrial{}, err
	}
	defer a.d.pause()
	splits := r.markCPUs()
	d0, derr := a.d.drops()
	t, err := a.p.run(rate, leadIn, r.o.CPSTrial)
	if err != nil {
		return t, err
	}
	t.CPUs = splits()
	if d1, err := a.d.drops(); derr == nil && err == nil {
		for k, v := range d1 {
			if v > d0[k] {
				if t.DeviceDrops == nil {
					t.DeviceDrops = map[string]uint64{}
				}
				t.DeviceDrops[k] = v - d0[k]
			}
		}
	}
	return t, nil
}

// drops returns statewire's drop counters by reason, summed over its
// ports, from its control socket (nil for the kernel devices).
func (d *device) drops() (map[string]uint64, error) {
	if d.cmd == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sum := map[string]uint64{}
	sock := control.DefaultPath(d.lab.PortA + "-" + d.lab.PortB)
	_, err := control.Do(ctx, sock, control.Request{Op: control.OpStats}, func(line string) { addDrops(sum, line) })
	return sum, err
}

// addDrops adds the counters of one `conntrack -S` line to sum when it is
// a "drops port=NAME reason=N ..." line.
func addDrops(sum map[string]uint64, line string) {
	rest, ok := strings.CutPrefix(line, "drops port=")
	if !ok {
		return
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return
	}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if n, err := strconv.ParseUint(v, 10, 64); ok && err == nil {
			sum[k] += n
		}
	}
}

// cps measures connections per second: first the endpoints' own ceiling
// with no device between them, then for every device a trial at that
// ceiling and a binary search for the highest opening rate at which at
// least CPSComplete of the connections complete, interleaved trial by
// trial like the floods.
func (r *runner) cps(ctx context.Context) {
	o := r.o
	r.rep.CPSComplete = o.CPSComplete
	r.rep.CPSTrialSeconds = o.CPSTrial.Seconds()
	gp, err := r.cpsOpen(ctx, r.nullDev)
	if err != nil {
		r.rep.Errors["cps"] = err.Error()
		r.logf("cps: not measured: %v", err)
		return
	}
	g, err := gp.run(0, leadIn, o.CPSTrial)
	gp.close()
	if err != nil {
		r.rep.Errors["cps"] = err.Error()
		r.logf("cps: generator: %v", err)
		return
	}
	r.rep.CPSGenerator = &g
	r.logf("cps generator (client and server directly connected): %.0f connections/s complete, %.4f of %d opened",
		g.Completed, g.Ratio, g.Opened)
	ceiling := g.Completed
	if ceiling <= 0 {
		r.rep.Errors["cps"] = "the endpoints completed no connection with no device between them"
		return
	}
	var as []*cpsActive
	defer func() {
		for _, a := range as {
			if a.p != nil {
				if err := a.p.close(); err != nil {
					r.logf("cps %s: close endpoints: %v", a.d.name, err)
				}
			}
			if a.err != nil {
				a.res.Error = a.err.Error()
			}
			if len(a.res.Trials) > 0 || a.res.Error != "" {
				r.rep.CPS = append(r.rep.CPS, *a.res)
			}
		}
	}()
	for _, d := range r.devs {
		a := &cpsActive{d: d, res: &CPSResult{Device: d.name}}
		as = append(as, a)
		a.p, a.err = r.cpsOpen(ctx, d)
	}
	ok := func(a *cpsActive) bool { return a.err == nil && ctx.Err() == nil }
	for _, a := range as {
		if !ok(a) {
			continue
		}
		t, err := r.cpsTrial(a, ceiling)
		if a.err = err; err != nil {
			continue
		}
		a.res.Overload = t
		r.cpsRecord(a, t, "overload")
		if t.Ratio >= o.CPSComplete {
			a.res.Best = t
		}
	}
	if o.CPSSteps <= 0 {
		return
	}
	type bounds struct{ lo, hi float64 }
	b := make([]bounds, len(as))
	for i, a := range as {
		// The whole range up to the ceiling: a device overloaded with
		// connections can complete far fewer than it would at a lower
		// rate (its queues overflow and every loss kills a connection),
		// so the overload trial bounds nothing. A device that passed at
		// the ceiling has nothing left to search.
		b[i] = bounds{cpsMinRate, ceiling}
		if a.res.Overload.Ratio >= o.CPSComplete {
			b[i].hi = 0
		}
		a.res.Searched = true
	}
	for step := 0; step < o.CPSSteps; step++ {
		for i, a := range as {
			if !ok(a) || b[i].hi <= b[i].lo {
				continue
			}
			// Geometric: the endpoints' ceiling is two orders of
			// magnitude above a device's CPS, and the steps must
			// resolve a device's rate in proportion to it (7 steps
			// from 1 000 to 7 M conn/s end within 7%).
			rate := math.Sqrt(b[i].lo * b[i].hi)
			t, err := r.cpsTrial(a, rate)
			if a.err = err; err != nil {
				continue
			}
			r.cpsRecord(a, t, fmt.Sprintf("search %d/%d", step+1, o.CPSSteps))
			if t.Ratio >= o.CPSComplete {
				b[i].lo = rate
				if t.Completed > a.res.Best.Completed {
					a.res.Best = t
				}
			} else {
				b[i].hi = rate
			}
		}
	}
}

func (r *runner) cpsRecord(a *cpsActive, t CPSTrial, what string) {
	a.res.Trials = append(a.res.Trials, t)
	limited := ""
	if t.Target > 0 && t.Offered < 0.97*t.Target {
		a.res.GenLimits++
		limited = " (client below target)"
	}
	r.n++
	r.logf("[%3d/%d] cps %-17s %-12s target %8.0f/s opened %8.0f/s completed %8.0f/s (%.4f, %d stray)%s",
		r.n, r.total, a.d.name, what, t.Target, t.Offered, t.Completed, t.Ratio, t.Stray, limited)
}
