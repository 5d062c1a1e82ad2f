package perf

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
)

// WriteTable prints the comparison: one row per frame size, flow count and
// device, with Mpps and the ratios to the kernel devices.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "statewire perf  %s  kernel %s  %d CPUs  trial %.2gs\n", r.Date.Format("2006-01-02 15:04 MST"), r.Kernel, r.CPUs, r.TrialSeconds)
	fmt.Fprintf(&b, "steering %s; load average before: %s, after: %s\n", r.Steer, r.LoadBefore, r.LoadAfter)
	if r.LatencyIntervalUs > 0 && slices.ContainsFunc(r.Results, func(x Result) bool { return len(x.Latency) > 0 }) {
		fmt.Fprintf(&b, "latency trials: live generator calls at least %.0f µs apart, paced ones %.0f µs; real-time priority %d (0: normal policy)\n", r.LatencyIntervalUs, float64(PacedInterval)/1e3, r.RTPriority)
	}
	if r.Floor != nil {
		fmt.Fprintf(&b, "%s\n", r.Floor)
	}
	if r.Queues > 1 || len(r.Workers) > 0 || len(r.GenCPUs) > 1 {
		fmt.Fprintf(&b, "%d queue(s) per veth; generator on CPU(s) %v (flows split between them by flow); statewire worker counts %v (devices NAME/wK)\n", r.Queues, r.GenCPUs, r.Workers)
	}
	if r.MTU != 0 && (r.MTU != 1500 || r.Generator != GenLive) {
		fmt.Fprintf(&b, "MTU %d on every link; generator %s\n", r.MTU, r.Generator)
	}
	sizes := r.sizes()
	for _, s := range sizes {
		fmt.Fprintf(&b, "generator ceiling %sB: %.3f Mpps (sink on port A, no device)\n", SizeLabel(s), r.GeneratorPPS[s]/1e6)
	}
	if slices.Contains(sizes, IMIX) {
		fmt.Fprintf(&b, "imix: simple IMIX, frames of 64/576/1500 B (FCS included) 7:4:1, mean %.2f B\n", MeanFrameBytes(IMIX))
	}
	if len(r.Results) > 0 {
		r.writeFloods(&b)
	}
	r.writeWorkers(&b)
	r.writeCPS(&b)
	for _, name := range slices.Sorted(mapsKeys(r.Errors)) {
		fmt.Fprintf(&b, "%s: not measured: %s\n", name, firstLine(r.Errors[name]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeFloods adds the floods' table: one row per frame size, flow count
// and device, its latency points and profile under it.
func (r *Report) writeFloods(b *strings.Builder) {
	fmt.Fprintf(b, "\n%5s %7s  %-24s %8s %8s %8s %8s %8s  %7s %7s %7s %7s %7s %7s %7s %7s\n",
		"frame", "flows", "device", "offered", "thru", "NDR", "PDR", "ns/pkt", "thr/br", "thr/ct", "NDR/br", "NDR/ct", "thr/xdp", "NDR/xdp", "thru", "NDR")
	fmt.Fprintf(b, "%5s %7s  %-24s %8s %8s %8s %8s %8s  %7s %7s %7s %7s %7s %7s %7s %7s\n", "B", "", "", "Mpps", "Mpps", "Mpps", "Mpps", "at NDR", "", "", "", "", "", "", "Gbit/s", "Gbit/s")
	for _, x := range r.Results {
		ndr, pdr := "-", "-"
		if x.Searched {
			ndr, pdr = mpps(x.NDR.Delivered), mpps(x.PDR.Delivered)
		}
		ns := "-"
		if x.NDR.DUTCPUNsPerPkt > 0 {
			ns = fmt.Sprintf("%.0f", x.NDR.DUTCPUNsPerPkt)
		}
		ndrG := "-"
		if x.Searched {
			ndrG = fmt.Sprintf("%.3f", Gbps(x.NDR.Delivered, x.FrameSize))
		}
		fmt.Fprintf(b, "%5s %7d  %-24s %8s %8s %8s %8s %8s  %7s %7s %7s %7s %7s %7s %7.3f %7s",
			SizeLabel(x.FrameSize), x.Flows, x.Device, mpps(x.Throughput.Offered), mpps(x.Throughput.Delivered), ndr, pdr, ns,
			r.ratio(x, KernelBridge, false), r.ratio(x, KernelBridgeCT, false),
			r.ratio(x, KernelBridge, true), r.ratio(x, KernelBridgeCT, true),
			r.ratio(x, XDPRedirect, false), r.ratio(x, XDPRedirect, true),
			Gbps(x.Throughput.Delivered, x.FrameSize), ndrG)
		if x.Error != "" {
			fmt.Fprintf(b, "  error: %s", firstLine(x.Error))
		}
		b.WriteByte('\n')
		for _, l := range x.Latency {
			fmt.Fprintf(b, "%5s %7s    latency at %3.0f%% NDR (%.3f Mpps): p50 %.0f us, p99 %.0f us, p99.9 %.0f us (%d samples; %s generator, bursts of up to %.0f)\n",
				"", "", l.Load*100, l.RatePPS/1e6, l.P50us, l.P99us, l.P999us, l.Samples, l.Generator, l.Burst)
		}
		for _, p := range x.Profile {
			fmt.Fprintf(b, "%5s %7s    profile %s\n", "", "", p)
		}
	}
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func mpps(pps float64) string { return fmt.Sprintf("%.3f", pps/1e6) }

// ratio is x's rate over the kernel device's at the same size and flows.
func (r *Report) ratio(x Result, kernel string, ndr bool) string {
	k := r.Result(kernel, x.FrameSize, x.Flows)
	if k == nil {
		return "-"
	}
	a, b := x.Throughput.Delivered, k.Throughput.Delivered
	if ndr {
		if !x.Searched || !k.Searched {
			return "-"
		}
		a, b = x.NDR.Delivered, k.NDR.Delivered
	}
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func (r *Report) sizes() []int {
	var s []int
	for _, x := range r.Results {
		if !slices.Contains(s, x.FrameSize) {
			s = append(s, x.FrameSize)
		}
	}
	return s
}

func (r *Report) flows() []int {
	var s []int
	for _, x := range r.Results {
		if !slices.Contains(s, x.Flows) {
			s = append(s, x.Flows)
		}
	}
	return s
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// deviceColors are the bar colours, in AllDevices order.
var deviceColors = map[string]string{
	Statewire:      "#d9534f",
	StatewireOff:   "#f0ad4e",
	KernelBridge:   "#5bc0de",
	KernelBridgeCT: "#337ab7",
	XDPRedirect:    "#5cb85c",
	XDPLookup:      "#3c763d",
}

// WriteSVG draws two grouped bar charts: throughput by frame size (at the
// first flow count) and by flow count (at the first frame size), one bar
// per device; a black tick on a bar marks its NDR.
func (r *Report) WriteSVG(w io.Writer) error {
	const width, panelH = 900, 330
	height := 760
	if len(r.CPS) > 0 {
		height += panelH + 40
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" text-anchor="middle">statewire perf, %s, kernel %s, %d CPUs (bars: Mpps at full offered load; tick: NDR)</text>`+"\n",
		width/2, r.Date.Format("2006-01-02"), html.EscapeString(r.Kernel), r.CPUs)
	sizes, flows := r.sizes(), r.flows()
	if len(sizes) > 0 && len(flows) > 0 {
		var g1, g2 []group
		for _, s := range sizes {
			g1 = append(g1, r.group(SizeLabel(s)+" B", s, flows[0]))
		}
		for _, f := range flows {
			g2 = append(g2, r.group(fmt.Sprintf("%d flows", f), sizes[0], f))
		}
		panel(&b, 40, panelH, width, fmt.Sprintf("by frame size (%d flows)", flows[0]), g1, r.Devices, "Mpps")
		panel(&b, 40+panelH+40, panelH, width, fmt.Sprintf("by flow count (%s B frames)", SizeLabel(sizes[0])), g2, r.Devices, "Mpps")
	}
	if len(r.CPS) > 0 {
		// One group: bars are completed connections/s at the overload
		// rate, the tick the CPS (highest passing rate), in thousands.
		g := group{label: "TCP sessions (8 frames each)"}
		for _, d := range r.Devices {
			if c := r.cpsResult(d); c != nil {
				g.bars = append(g.bars, bar{device: d, thr: c.Overload.Completed / 1e3, ndr: c.Best.Completed / 1e3})
			}
		}
		panel(&b, 40+2*(panelH+40), panelH, width,
			fmt.Sprintf("connections per second (bars: completed at the endpoints' ceiling rate; tick: CPS with >= %.1f%% complete)", r.CPSComplete*100),
			[]group{g}, r.Devices, "thousand connections/s")
	}
	// legend
	x := 70
	for _, d := range r.Devices {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, height-22, deviceColor(d), x+16, height-12, html.EscapeString(d))
		x += 30 + 8*len(d)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

type bar struct {
	device   string
	thr, ndr float64
}

type group struct {
	label string
	bars  []bar
}

func (r *Report) group(label string, size, flows int) group {
	g := group{label: label}
	for _, d := range r.Devices {
		x := r.Result(d, size, flows)
		if x == nil {
			continue
		}
		br := bar{device: d, thr: x.Throughput.Delivered / 1e6}
		if x.Searched {
			br.ndr = x.NDR.Delivered / 1e6
		}
		g.bars = append(g.bars, br)
	}
	return g
}

func panel(b *strings.Builder, top, h, width int, title string, groups []group, devices []string, unit string) {
	const left, right = 70, 20
	plotTop, plotH := top+25, h-60
	// The axis fits the devices other than the XDP_REDIRECT ceiling, which
	// is an order of magnitude above them; its bars are cut at the top and
	// keep their value as a label.
	maxV, maxAll := 0.0, 0.0
	for _, g := range groups {
		for _, br := range g.bars {
			v := math.Max(br.thr, br.ndr)
			maxAll = math.Max(maxAll, v)
			if br.device != XDPRedirect && br.device != XDPLookup {
				maxV = math.Max(maxV, v)
			}
		}
	}
	if maxV == 0 {
		maxV = maxAll
	}
	maxV = niceCeil(maxV * 1.1)
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", left, top+12, html.EscapeString(title))
	plotW := width - left - right
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		y := plotTop + plotH - int(float64(plotH)*float64(i)/4)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/><text x="%d" y="%d" text-anchor="end">%.2f</text>`+"\n",
			left, y, left+plotW, y, left-5, y+4, v)
	}
	fmt.Fprintf(b, `<text x="15" y="%d" transform="rotate(-90 15 %d)" text-anchor="middle">%s</text>`+"\n", plotTop+plotH/2, plotTop+plotH/2, unit)
	if len(groups) == 0 || maxV <= 0 {
		return
	}
	gw := plotW / len(groups)
	bw := (gw - 30) / max(1, len(devices))
	for gi, g := range groups {
		gx := left + gi*gw + 15
		for _, br := range g.bars {
			di := slices.Index(devices, br.device)
			x := gx + di*bw
			bh := int(float64(plotH) * math.Min(br.thr, maxV) / maxV)
			cut := ""
			if br.thr > maxV {
				cut = " (cut)"
			}
			fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s %s: %.3f %s, NDR %.3f</title></rect>`+"\n",
				x, plotTop+plotH-bh, bw-4, bh, deviceColor(br.device), html.EscapeString(br.device), html.EscapeString(g.label), br.thr, unit, br.ndr)
			fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" font-size="10">%.2f%s</text>`+"\n", x+(bw-4)/2, plotTop+plotH-bh-3, br.thr, cut)
			if br.ndr > 0 && br.ndr <= maxV {
				ny := plotTop + plotH - int(float64(plotH)*br.ndr/maxV)
				fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-width="3"/>`+"\n", x, ny, x+bw-4, ny)
			}
		}
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", gx+(gw-30)/2, plotTop+plotH+16, html.EscapeString(g.label))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, plotTop+plotH, left+plotW, plotTop+plotH)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// cpsResult returns device's CPS result, or nil.
func (r *Report) cpsResult(device string) *CPSResult {
	for i := range r.CPS {
		if r.CPS[i].Device == device {
			return &r.CPS[i]
		}
	}
	return nil
}

// cpsLimited reports whether x's CPS is bounded by the endpoints, not the
// device: it passed at the overload rate (the endpoints' ceiling) or at a
// rate within 3% of it. Its CPS is then a lower bound ("≥" in the table).
func (r *Report) cpsLimited(x *CPSResult) bool {
	if r.CPSGenerator == nil || x.Best.Done == 0 {
		return false
	}
	return x.Best.Target >= 0.97*r.CPSGenerator.Completed ||
		(x.Best.Target == x.Overload.Target && x.Best.Opened == x.Overload.Opened)
}

// writeCPS adds the connections-per-second section of the table.
func (r *Report) writeCPS(b *strings.Builder) {
	if len(r.CPS) == 0 && r.CPSGenerator == nil {
		return
	}
	fmt.Fprintf(b, "\nconnections per second: TCP sessions of 8 frames of 64 B (SYN, SYN/ACK, ACK, data each way, FIN each way, final ACK),\n")
	fmt.Fprintf(b, "a fresh 5-tuple each, played by two XDP endpoints (XDP_TX answers, BPF_PROG_RUN opens) and counted there; CPS is the\n")
	fmt.Fprintf(b, "highest completed rate of a trial with >= %.2f%% of its connections complete (every frame arrived); trial %.2gs\n", r.CPSComplete*100, r.CPSTrialSeconds)
	if g := r.CPSGenerator; g != nil {
		fmt.Fprintf(b, "endpoint ceiling (client and server directly connected, no device): %.0f conn/s (%.4f complete)\n", g.Completed, g.Ratio)
	}
	fmt.Fprintf(b, "%-21s %10s %10s %10s %10s  %7s %7s\n", "device", "offered", "completed", "complete", "CPS", "CPS/br", "CPS/ct")
	fmt.Fprintf(b, "%-21s %10s %10s %10s %10s\n", "", "overload/s", "overload/s", "at CPS", "conn/s")
	ratio := func(x *CPSResult, kernel string) string {
		k := r.cpsResult(kernel)
		if k == nil || k.Best.Completed <= 0 || x.Best.Completed <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", x.Best.Completed/k.Best.Completed)
	}
	for i := range r.CPS {
		x := &r.CPS[i]
		cps := fmt.Sprintf("%.0f", x.Best.Completed)
		if r.cpsLimited(x) {
			cps = "≥" + cps
		}
		fmt.Fprintf(b, "%-21s %10.0f %10.0f %10.4f %10s  %7s %7s", x.Device, x.Overload.Offered, x.Overload.Completed, x.Best.Ratio, cps,
			ratio(x, KernelBridge), ratio(x, KernelBridgeCT))
		if x.Error != "" {
			fmt.Fprintf(b, "  error: %s", firstLine(x.Error))
		}
		b.WriteByte('\n')
	}
	if slices.ContainsFunc(r.CPS, func(x CPSResult) bool { return r.cpsLimited(&x) }) {
		fmt.Fprintf(b, "≥: the device completed connections at the endpoints' ceiling; its CPS is at least this\n")
	}
	// Where the time and the lost connections went, at the device's CPS
	// and at overload: the CPUs' busy shares and statewire's own drops.
	for i := range r.CPS {
		x := &r.CPS[i]
		for _, t := range []struct {
			what string
			t    *CPSTrial
		}{{"at CPS", &x.Best}, {"overload", &x.Overload}} {
			if len(t.t.CPUs) == 0 {
				continue
			}
			fmt.Fprintf(b, "  %-21s %-8s", x.Device, t.what)
			for _, c := range t.t.CPUs {
				fmt.Fprintf(b, " cpu%d busy %3.0f%% (softirq %2.0f%%)", c.CPU, 100*(1-c.Idle), 100*c.Softirq)
			}
			if t.t.DeviceDrops != nil {
				keys := slices.Sorted(maps.Keys(t.t.DeviceDrops))
				b.WriteString("; statewire dropped")
				for _, k := range keys {
					fmt.Fprintf(b, " %s=%d", k, t.t.DeviceDrops[k])
				}
			}
			b.WriteByte('\n')
		}
	}
}
