package e2etest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/rules"
)

// StopTimeout bounds Datapath.Stop in Rig.Stop: its own drain deadline is
// 2 s, so a Stop that takes longer than this has hung.
const StopTimeout = 10 * time.Second

// Options vary a rig. The zero value is one worker on two-queue veths,
// 1024-entry rings, 4096 UMEM frames per queue, a 4096-bucket table and
// the default settings (accept everything).
type Options struct {
	// Cores is the number of datapath workers (0: 1).
	Cores int
	// Queues is the number of queues of every veth and of the datapath
	// (0: 2).
	Queues int
	// IPv6 gives the hosts IPv6 addresses too; MTU sets every veth's MTU
	// (0: the kernel's 1500). See lab.Options.
	IPv6 bool
	MTU  int
	// StaticNeighbours gives each host a permanent ARP entry for the
	// other, so no ARP frame spoils an exact count.
	StaticNeighbours bool
	// Rules is the rule set in iptables-save form; the strings {PortA} and
	// {PortB} are replaced by the lab's port names. "" keeps the rules of
	// Settings (by default: accept everything).
	Rules string
	// Settings are the pipeline settings the rules are set into (nil:
	// bridge.DefaultSettings()). The rig uses a copy.
	Settings *bridge.Settings
	// Ring is the size of every AF_XDP ring (RX, TX, fill, completion;
	// 0: 1024), Frames the UMEM frames per queue (0: 4*Ring).
	Ring, Frames int
	// Table sizes the flow table (zero Buckets: 4096).
	Table flowtable.Config
	// Attach is the XDP attach mode (zero: native); CPUs pins worker i to
	// CPUs[i] when set.
	Attach offload.Mode
	CPUs   []int
	// Offload is the XDP fast path mode: "" is DefaultOffload, else
	// "off", "auto" or "on" (bridge.ParseOffloadMode). With auto or on the
	// rig turns GRO on at both hosts' veths: an XDP redirect into a veth
	// needs NAPI on its peer.
	Offload string
	// Tweak, when set, changes the datapath configuration last, after
	// everything above is applied.
	Tweak func(*bridge.DatapathConfig)
}

// DefaultOffload is the fast path mode of a rig whose Options.Offload is
// empty.
var DefaultOffload = "on"

// Rig is one lab with a datapath running on its bridge ports.
type Rig struct {
	Lab *lab.Lab
	DP  *bridge.Datapath

	stopped bool
	final   bridge.DatapathStats
}

// Start builds the lab, starts the datapath in its bridge namespace and
// registers Stop (with its checks) as a cleanup, which runs before the lab
// is closed; lab.NewT checks afterwards that no namespace is left. It needs
// root (lab.RequireRoot: a skip, or a failure in CI).
func Start(t testing.TB, o Options) *Rig {
	t.Helper()
	lab.RequireRoot(t)
	if o.Queues == 0 {
		o.Queues = 2
	}
	if o.Ring == 0 {
		o.Ring = 1024
	}
	if o.Frames == 0 {
		o.Frames = 4 * o.Ring
	}
	if o.Table.Buckets == 0 {
		o.Table.Buckets = 4096
	}
	l := lab.NewT(t, lab.Options{Queues: o.Queues, IPv6: o.IPv6, MTU: o.MTU})
	if o.StaticNeighbours {
		StaticNeighbours(t, l)
	}
	if o.Offload == "" {
		o.Offload = DefaultOffload
	}
	offload, err := bridge.ParseOffloadMode(o.Offload)
	if err != nil {
		t.Fatal(err)
	}
	if offload != bridge.OffloadOff {
		HostGRO(t, l, true)
	}
	cfg := bridge.DefaultDatapathConfig()
	cfg.PortA, cfg.PortB = l.PortA, l.PortB
	cfg.Cores, cfg.Queues = max(o.Cores, 1), o.Queues
	cfg.RXSize, cfg.TXSize, cfg.FillSize, cfg.CompletionSize, cfg.Frames = o.Ring, o.Ring, o.Ring, o.Ring, o.Frames
	cfg.Table = o.Table
	cfg.Attach = o.Attach
	cfg.CPUs = o.CPUs
	cfg.Offload = offload
	cfg.Logf = t.Logf
	s := bridge.DefaultSettings()
	if o.Settings != nil {
		c := *o.Settings
		s = &c
	}
	if o.Rules != "" {
		s.Rules = CompileRules(t, l, o.Rules)
	}
	cfg.Settings = s
	if o.Tweak != nil {
		o.Tweak(&cfg)
	}
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		t.Fatalf("NewDatapath: %v", err)
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	r := &Rig{Lab: l, DP: dp}
	t.Cleanup(func() { r.Stop(t) })
	return r
}

// HostGRO turns GRO on or off at both hosts' veths (the peers of the
// bridge ports): on gives them the NAPI that XDP redirects into the ports
// need. lab builds them with GRO off.
func HostGRO(t testing.TB, l *lab.Lab, on bool) {
	t.Helper()
	v := "off"
	if on {
		v = "on"
	}
	for _, h := range [][2]string{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
		if out, err := l.Run(context.Background(), h[0], "ethtool", "-K", h[1], "gro", v); err != nil {
			t.Fatalf("ethtool -K %s gro %s: %v %s", h[1], v, err, out)
		}
	}
}

// CompileRules compiles iptables-save text for l's ports, {PortA} and
// {PortB} replaced by their names; it fails t on an error.
func CompileRules(t testing.TB, l *lab.Lab, text string) *rules.RuleSet {
	t.Helper()
	text = strings.NewReplacer("{PortA}", l.PortA, "{PortB}", l.PortB).Replace(text)
	rs, err := rules.FromText("e2e.rules", text, [2]string{l.PortA, l.PortB})
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	return rs
}

// Stop stops the datapath within StopTimeout and checks what every stop
// owes: Stop's own error, nothing in flight, frame conservation per
// direction (bridge.DatapathStats.CheckConservation), the UMEM accounting
// of every socket (CheckSockets) and no XDP program left on the ports. It
// logs each direction's counters and returns the final totals. Only the
// first call stops and checks; later calls (the cleanup Start registered)
// return the same totals.
func (r *Rig) Stop(t testing.TB) bridge.DatapathStats {
	t.Helper()
	if r.stopped {
		return r.final
	}
	r.stopped = true
	type res struct {
		st  bridge.DatapathStats
		err error
	}
	done := make(chan res, 1)
	start := time.Now()
	go func() {
		st, err := r.DP.Stop()
		done <- res{st, err}
	}()
	var out res
	select {
	case out = <-done:
	case <-time.After(StopTimeout):
		t.Fatalf("Datapath.Stop did not return within %v", StopTimeout)
	}
	t.Logf("Stop took %v", time.Since(start).Round(time.Millisecond))
	if out.err != nil {
		t.Errorf("Stop: %v", out.err)
	}
	st := out.st
	r.final = st
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		c := st.Total(p)
		t.Logf("%s->%s: in %d, forwarded %d, dropped %d (%s), via another core %d, kernel drops %d, fill-empty %d",
			p, p.Other(), c.RX, c.Forwarded, c.Dropped(), c.DropList(), c.HandedOff, st.KernelDrops(p), FillEmpty(&st, p))
		if c.InFlight != 0 {
			t.Errorf("%s: %d frames in flight after Stop, want 0", p, c.InFlight)
		}
	}
	pl := &st.Pipeline
	t.Logf("pipeline: states %s, expect_create %d, expect_new %d, expect_failed %d, drops %d",
		States(pl), pl.ExpectCreate, pl.ExpectNew, pl.ExpectFailed, pl.Dropped())
	if err := st.CheckConservation(); err != nil {
		t.Errorf("frame conservation: %v", err)
	}
	if err := CheckSockets(&st); err != nil {
		t.Errorf("UMEM accounting: %v", err)
	}
	if err := r.Lab.CheckNoXDP(); err != nil {
		t.Errorf("after Stop: %v", err)
	}
	return st
}

// Stopped reports whether Stop ran.
func (r *Rig) Stopped() bool { return r.stopped }

// CheckSockets checks the per-socket ring counts the workers published
// last: the frames a port counted as received are the frames taken from its
// RX rings, and every frame put on a TX ring came back on the completion
// ring or is counted unsent (after Stop nothing may still be in the
// kernel's hands), and the kernel found no invalid descriptor.
func CheckSockets(st *bridge.DatapathStats) error {
	for _, q := range st.Queues {
		for p := range q.Socket {
			s := &q.Socket[p]
			if q.Port[p].RX != s.RX {
				return fmt.Errorf("queue %d port %s: counted %d frames in, RX ring gave %d", q.Queue, bridge.Port(p), q.Port[p].RX, s.RX)
			}
			if s.TXBuffers != s.Completed+q.Unsent[p] {
				return fmt.Errorf("queue %d port %s: %d buffers submitted on TX, %d completed + %d counted unsent: %d buffers not accounted for",
					q.Queue, bridge.Port(p), s.TXBuffers, s.Completed, q.Unsent[p], int64(s.TXBuffers)-int64(s.Completed+q.Unsent[p]))
			}
			if s.TxInvalidDescs != 0 || s.RxInvalidDescs != 0 {
				return fmt.Errorf("queue %d port %s: kernel found %d invalid TX and %d invalid fill descriptors, want 0",
					q.Queue, bridge.Port(p), s.TxInvalidDescs, s.RxInvalidDescs)
			}
		}
	}
	return nil
}

// FillEmpty sums the kernel's rx_fill_ring_empty_descs over port p's
// sockets.
func FillEmpty(st *bridge.DatapathStats, p bridge.Port) uint64 {
	var n uint64
	for _, q := range st.Queues {
		n += q.Socket[p].RxFillRingEmptyDescs
	}
	return n
}

// NoDrops fails t for each direction of st that dropped frames, naming the
// reasons.
func NoDrops(t testing.TB, st *bridge.DatapathStats) {
	t.Helper()
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		if c := st.Total(p); c.Dropped() != 0 {
			t.Errorf("%s->%s: %d frames dropped (%s), want 0", p, p.Other(), c.Dropped(), c.DropList())
		}
	}
}

// States formats the non-zero packet counts by user-land state ("NEW=3
// ESTABLISHED=40").
func States(p *bridge.Stats) string {
	var b []string
	for i, n := range p.States {
		if n > 0 {
			b = append(b, fmt.Sprintf("%s=%d", bridge.StateNames[i], n))
		}
	}
	return strings.Join(b, " ")
}

// StateCount returns the packets counted in the user-land state named name
// (bridge.StateNames); it panics on a name that is not there, a mistake in
// the test.
func StateCount(p *bridge.Stats, name string) uint64 {
	for i, n := range bridge.StateNames {
		if n == name {
			return p.States[i]
		}
	}
	panic("e2etest: no state " + name + " in bridge.StateNames")
}

// StaticNeighbours gives each host of l a permanent ARP entry for the
// other.
func StaticNeighbours(t testing.TB, l *lab.Lab) {
	t.Helper()
	for _, n := range []struct {
		ns, ifc string
		ip      string
		mac     net.HardwareAddr
	}{
		{l.LeftNS, l.LeftIf, lab.RightIPv4.Addr().String(), l.RightMAC},
		{l.RightNS, l.RightIf, lab.LeftIPv4.Addr().String(), l.LeftMAC},
	} {
		if _, err := l.Run(context.Background(), n.ns, "ip", "neigh", "replace", n.ip, "lladdr", n.mac.String(),
			"dev", n.ifc, "nud", "permanent"); err != nil {
			t.Fatalf("static neighbour: %v", err)
		}
	}
}

// IfStat reads one /sys/class/net/IFC/statistics counter inside ns and
// fails t if it cannot.
func IfStat(t testing.TB, l *lab.Lab, ns, ifc, name string) uint64 {
	t.Helper()
	n, err := l.IfStat(ns, ifc, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
