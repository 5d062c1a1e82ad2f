package conformance

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/replay"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// DefaultTimeoutTolerance is how far (seconds) the final tables' timeouts
// may differ. The kernel replays in real time, a packet every millisecond
// or so, and lists its table afterwards; statewire replays the same packets
// at one instant (replay.Options.NoTimestamps) and lists at that instant.
const DefaultTimeoutTolerance = 10

// Harness is the differential harness: the kernel oracle and statewire's
// replay run on the same frames and their per-packet states and final
// tables are compared. One goroutine at a time.
type Harness struct {
	oracle    *Oracle
	opts      Options
	tolerance int64
}

// NewHarness builds the kernel side (a lab, see NewOracle). tolerance is
// the timeout tolerance of the table comparison in seconds (≤ 0: the
// default). Close it when done.
func NewHarness(ctx context.Context, opts Options, tolerance int64) (*Harness, error) {
	if tolerance <= 0 {
		tolerance = DefaultTimeoutTolerance
	}
	o, err := NewOracle(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Harness{oracle: o, opts: opts, tolerance: tolerance}, nil
}

// Oracle returns the kernel side.
func (h *Harness) Oracle() *Oracle { return h.oracle }

// Close removes the lab.
func (h *Harness) Close() error { return h.oracle.Close() }

// PacketDiff is one packet whose state differs, or one the kernel never
// tracked.
type PacketDiff struct {
	Num    int    // 1-based packet number in the capture
	Tuple  string // the packet's own tuple (statewire's parse)
	Kernel string // the kernel's label
	Ours   string // statewire's label
	Detail string // statewire's reason for INVALID or a drop
}

func (d PacketDiff) String() string {
	s := fmt.Sprintf("#%d %s: kernel %s, statewire %s", d.Num, d.Tuple, d.Kernel, d.Ours)
	if d.Detail != "" {
		s += " (" + d.Detail + ")"
	}
	return s
}

// Report is the comparison of one capture.
type Report struct {
	Capture  string
	Packets  int
	Compared int // packets with a conntrack state on the kernel side
	Equal    int
	Diffs    []PacketDiff
	// NonIP are the packets the kernel never sees (not IPv4/IPv6: no
	// conntrack); Fragments are IP fragments (the kernel reassembles, the
	// datagram has no per-fragment state); Unseen are IP packets that
	// crossed the kernel bridge without conntrack seeing them (the DSCP
	// came back unchanged, e.g. QinQ). None of them are compared.
	NonIP, Fragments []int
	Unseen           []PacketDiff
	KernelTable      []Entry
	OurTable         []Entry
	TableDiffs       []TableDiff
	// KernelLabels and OurLabels are every packet's label on each side.
	KernelLabels, OurLabels []string
}

// Agreement is Equal/Compared (1 when nothing was compared).
func (r *Report) Agreement() float64 {
	if r.Compared == 0 {
		return 1
	}
	return float64(r.Equal) / float64(r.Compared)
}

// Write prints the report: the agreement line, then every difference.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "%-50s %5d/%-5d %7.3f%%  (%d packets; apart: %d non-IP, %d fragments, %d unseen by kernel conntrack; table: %d kernel, %d statewire, %d differ)\n",
		r.Capture, r.Equal, r.Compared, 100*r.Agreement(), r.Packets, len(r.NonIP), len(r.Fragments), len(r.Unseen),
		len(r.KernelTable), len(r.OurTable), len(r.TableDiffs))
	for _, d := range r.Diffs {
		fmt.Fprintf(w, "    diff   %s\n", d)
	}
	for _, d := range r.Unseen {
		fmt.Fprintf(w, "    unseen %s\n", d)
	}
	for _, d := range r.TableDiffs {
		fmt.Fprintf(w, "    table  %s\n", d)
	}
}

// CompareFile reads a capture (Ethernet, raw IP or Linux cooked; see
// ReadFrames) and compares the two sides on it.
func (h *Harness) CompareFile(ctx context.Context, path string) (*Report, error) {
	frames, err := replay.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("conformance: %w", err)
	}
	return h.Compare(ctx, filepath.Base(path), frames)
}

// Compare runs frames through the kernel and through statewire and
// compares per-packet states and the final tables. Both sides see the
// same bytes: frames padded to their wire length.
func (h *Harness) Compare(ctx context.Context, name string, frames []replay.Frame) (*Report, error) {
	padded := make([][]byte, len(frames))
	for i, f := range frames {
		padded[i] = Padded(f)
	}
	kernel, err := h.oracle.StatesFrames(ctx, padded)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ktab, err := h.oracle.KernelTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ours, err := NewOurs(h.opts, flowtable.Config{IgnoreVLAN: h.opts.IgnoreVLAN})
	if err != nil {
		return nil, err
	}
	r := &Report{Capture: name, Packets: len(frames), KernelTable: ktab, KernelLabels: kernel}
	for i, f := range padded {
		pk := ours.Step(f, 0)
		r.OurLabels = append(r.OurLabels, Label(pk.Result))
		k := kernel[i]
		switch {
		case k == SkipNonIP:
			r.NonIP = append(r.NonIP, i+1)
			continue
		case k == SkipFragment:
			r.Fragments = append(r.Fragments, i+1)
			continue
		case strings.HasPrefix(k, "DSCP"):
			r.Unseen = append(r.Unseen, ours.diff(i+1, k, f, pk))
			continue
		}
		r.Compared++
		if Label(pk.Result) == k {
			r.Equal++
			continue
		}
		r.Diffs = append(r.Diffs, ours.diff(i+1, k, f, pk))
	}
	r.OurTable = ours.Table()
	r.TableDiffs = CompareTables(r.KernelTable, r.OurTable, h.tolerance)
	return r, nil
}

// Label is statewire's result in the oracle's vocabulary: a dropped frame
// is DROPPED (it would never arrive at the far side), else its user-land
// state, or NONE when the pipeline gave none.
func Label(r bridge.Result) string {
	if r.Verdict == bridge.Drop {
		return Dropped
	}
	if r.State == 0 {
		return "NONE"
	}
	return r.State.String()
}

// HelperRules is the raw-table rule set that attaches helpers on
// statewire's side the way Options.Helpers and Options.HelperPorts do on
// the kernel's ("" when none).
func HelperRules(opts Options) string {
	var b strings.Builder
	if opts.Helpers {
		b.WriteString("-A PREROUTING -p tcp --dport 21 -j CT --helper ftp\n")
		b.WriteString("-A PREROUTING -p udp --dport 69 -j CT --helper tftp\n")
		b.WriteString("-A PREROUTING -p tcp --dport 6667 -j CT --helper irc\n")
	}
	for _, hp := range opts.HelperPorts {
		fmt.Fprintf(&b, "-A PREROUTING -p %s --dport %d -j CT --helper %s\n", hp.Proto, hp.Port, hp.Helper)
	}
	if b.Len() == 0 {
		return ""
	}
	return "*raw\n:PREROUTING ACCEPT [0:0]\n" + b.String() + "COMMIT\n"
}

// OurSettings are the pipeline settings matched to the oracle: checksum
// verification off (nf_conntrack_checksum=0), loose pickup on, liberal off
// (the statemachine defaults, as Sysctls), helpers attached by rule as
// opts asks, nothing dropped by rule.
func OurSettings(opts Options) (*bridge.Settings, error) {
	s := bridge.DefaultSettings()
	s.VerifyChecksum = false
	s.AutoHelpers = false
	s.Conntrack.Loose = true
	s.Conntrack.BeLiberal = false
	if txt := HelperRules(opts); txt != "" {
		rs, err := rules.FromText("helpers.rules", txt, [2]string{"A", "B"})
		if err != nil {
			return nil, fmt.Errorf("conformance: helper rules: %w", err)
		}
		s.Rules = rs
	}
	return s, nil
}

// Ours is statewire's side of a comparison: a replay.Replayer with the
// oracle's settings and a clock the caller advances (scenarios) or holds
// still (captures).
type Ours struct {
	rp   *replay.Replayer
	now  int64 // the fake clock, ns since the first frame
	last int64 // the clock at the last frame
}

// NewOurs returns statewire's side with settings from OurSettings(opts)
// and a table sized by cfg (zero: replay's default).
func NewOurs(opts Options, cfg flowtable.Config) (*Ours, error) {
	return NewOursWith(opts, cfg, nil)
}

// NewOursWith is NewOurs with a hook that may change the settings (e.g. a
// timeout) before the pipeline starts.
func NewOursWith(opts Options, cfg flowtable.Config, edit func(*bridge.Settings) error) (*Ours, error) {
	s, err := OurSettings(opts)
	if err != nil {
		return nil, err
	}
	if edit != nil {
		if err := edit(s); err != nil {
			return nil, err
		}
	}
	rp, err := replay.New(replay.Options{Settings: s, Table: cfg})
	if err != nil {
		return nil, err
	}
	return &Ours{rp: rp}, nil
}

// Replayer returns the underlying replayer.
func (o *Ours) Replayer() *replay.Replayer { return o.rp }

// Step runs one frame after advancing the clock by advance nanoseconds.
func (o *Ours) Step(frame []byte, advance int64) replay.Packet {
	o.now += advance
	o.last = o.now
	return o.rp.Step(replay.Frame{Data: frame, WireLen: len(frame), Time: o.now})
}

// Labels runs frames at the current instant and returns their labels.
func (o *Ours) Labels(frames [][]byte) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = Label(o.Step(f, 0).Result)
	}
	return out
}

// Advance moves the clock on by ns nanoseconds.
func (o *Ours) Advance(ns int64) { o.now += ns }

// Table lists statewire's entries live at the current clock through
// ctlist.Line and the same parser as the kernel's. Entries past their
// timeout are left out, as the kernel's dump leaves them out before its
// garbage collector reaps them.
func (o *Ours) Table() []Entry {
	t, err := ParseTable(o.Listing(ctlist.Proc))
	if err != nil {
		// ctlist.Line is ours: a line the parser refuses is a bug in
		// one of them, visible as a table difference.
		return []Entry{{L3: "error", Line: err.Error()}}
	}
	return t
}

// Listing returns the live entries at the current clock as the operator
// sees them (`statewire conntrack -L -o FORMAT`), one line each.
func (o *Ours) Listing(f ctlist.Format) string {
	now := o.rp.Now() + o.now - o.last
	es := o.rp.EntriesAt(now)
	var b strings.Builder
	for i := range es {
		b.WriteString(ctlist.Line(&es[i], now, f))
		b.WriteByte('\n')
	}
	return b.String()
}

// diff describes packet num from statewire's view.
func (o *Ours) diff(num int, kernel string, frame []byte, pk replay.Packet) PacketDiff {
	d := PacketDiff{Num: num, Kernel: kernel, Ours: Label(pk.Result)}
	if t, ok := flowtable.TupleFromPacket(o.rp.Pipeline.Packet()); ok {
		name := ctlist.L4Name(t.Proto)
		d.Tuple = name + " " + t.String()
		if t.VLAN != 0 {
			d.Tuple += fmt.Sprintf(" vlan=%d", t.VLAN)
		}
	} else {
		d.Tuple = describeUntupled(o.rp.Pipeline.Packet(), frame)
	}
	r := &pk.Result
	switch {
	case r.Verdict == bridge.Drop:
		d.Detail = "drop:" + r.Drop.String() + "/" + r.Parse.String()
	case r.State == statemachine.StateInvalid && r.Invalid != statemachine.ReasonNone:
		d.Detail = r.Invalid.String()
	case r.State == statemachine.StateInvalid:
		d.Detail = r.Parse.String()
	}
	if r.Tracked && r.TCPState != statemachine.TCPNone {
		if d.Detail != "" {
			d.Detail += " "
		}
		d.Detail += "tcp=" + r.TCPState.String()
	}
	return d
}

// describeUntupled formats a packet that has no tuple of its own (ICMP
// errors, malformed packets): addresses, ICMP type and code, and the
// quoted packet when it parsed.
func describeUntupled(p *packet.Packet, frame []byte) string {
	if p == nil || p.IPVersion == 0 {
		return "-"
	}
	s := fmt.Sprintf("%s src=%s dst=%s", ctlist.L4Name(p.Proto), flowtable.AddrString(p.Src), flowtable.AddrString(p.Dst))
	if p.Proto != packet.ProtoICMP && p.Proto != packet.ProtoICMPv6 {
		return s
	}
	s += fmt.Sprintf(" type=%d code=%d", p.ICMP.Type, p.ICMP.Code)
	if p.HasInner {
		in := &p.Inner
		s += fmt.Sprintf(" quoting %s src=%s dst=%s", ctlist.L4Name(in.Proto), flowtable.AddrString(in.Src), flowtable.AddrString(in.Dst))
		switch {
		case in.NonFirstFragment:
			s += " (non-first fragment)"
		case in.Proto == packet.ProtoICMP || in.Proto == packet.ProtoICMPv6:
			s += fmt.Sprintf(" type=%d code=%d id=%d", in.ICMP.Type, in.ICMP.Code, in.ICMP.ID)
		default:
			s += fmt.Sprintf(" sport=%d dport=%d", in.SrcPort, in.DstPort)
		}
	} else if p.InnerReason != packet.ReasonOK {
		s += " quoting"
		// The parser keeps nothing of a quote it refused: read the
		// quoted IP header's protocol from the frame.
		if q := int(p.L4Off) + 8; q < len(frame) {
			switch v := frame[q] >> 4; {
			case v == 4 && q+9 < len(frame):
				s += " " + ctlist.L4Name(frame[q+9])
			case v == 6 && q+6 < len(frame):
				s += " " + ctlist.L4Name(frame[q+6])
			}
		}
		s += " (" + p.InnerReason.String() + ")"
	}
	return s
}
