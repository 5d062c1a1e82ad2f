package hostile

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// side is the host a frame is injected from.
type side int

const (
	left side = iota
	right
)

// step is one injected frame and whether it must reach the other host.
type step struct {
	from  side
	frame []byte
	fwd   bool
	what  string
}

// wire is a rig with an injector and a sniffer on both hosts.
type wire struct {
	r     *rig
	inj   [2]*injector
	sniff [2]*sniffer
	// busy: other traffic runs during run, so counters never settle
	// before it; they are read as they are.
	busy bool
}

func newWire(t *testing.T, o rigOptions) *wire {
	r := newRig(t, o)
	l := r.Lab
	return &wire{
		r:     r,
		inj:   [2]*injector{newInjector(t, l, l.LeftNS, l.LeftIf), newInjector(t, l, l.RightNS, l.RightIf)},
		sniff: [2]*sniffer{newSniffer(t, l, l.LeftNS, l.LeftIf), newSniffer(t, l, l.RightNS, l.RightIf)},
	}
}

// run injects the steps in order and checks which frames arrived. It
// returns the datapath counters before and after (after: settled, or when
// busy as they are once the forwarded frames arrived; a busy caller waits
// for the counts it checks).
func (w *wire) run(t *testing.T, steps []step) (before, after bridge.DatapathStats) {
	t.Helper()
	if w.busy {
		before = w.r.DP.Stats()
	} else {
		before = w.r.settle(t)
	}
	sent := 0
	for i, s := range steps {
		if i > 0 && steps[i-1].from != s.from {
			// The other side's frames first.
			w.waitTaken(t, before, steps[:i], sent)
		}
		f := injected(s.frame)
		steps[i].frame = f
		sent += w.inj[s.from].send([][]byte{f})
	}
	if w.busy {
		w.waitTaken(t, before, steps, sent)
		after = w.r.DP.Stats()
	} else {
		after = w.r.settle(t)
		// The datapath counted everything; what it forwarded is on the
		// far veth within moments.
		w.waitTaken(t, before, steps, sent)
	}
	for i, s := range steps {
		got := w.sniff[1-s.from].arrived(s.frame)
		if got != s.fwd {
			t.Errorf("step %d (%s, %d bytes): forwarded got %v, want %v", i, s.what, len(s.frame), got, s.fwd)
		}
	}
	if sent != len(steps) {
		t.Logf("%d of %d frames taken by the kernel", sent, len(steps))
	}
	return before, after
}

// waitTaken waits (up to 5 s) until the datapath has dealt with the steps
// injected so far: every frame that must pass has reached the far host,
// and, unless other traffic runs (busy), the published counters account
// for the sent frames (received, or dropped by the kernel before the
// ring). It fails nothing: run's checks report what is missing.
func (w *wire) waitTaken(t *testing.T, before bridge.DatapathStats, steps []step, sent int) {
	t.Helper()
	testenv.WaitFor(5*time.Second, func() bool {
		want := [2]map[string]int{{}, {}}
		for _, s := range steps {
			if s.fwd {
				want[1-s.from][string(s.frame)]++
			}
		}
		for side, m := range want {
			for f, n := range m {
				if w.sniff[side].seen([]byte(f)) < n {
					return false
				}
			}
		}
		if w.busy {
			return true
		}
		st := w.r.DP.Stats()
		var got uint64
		for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
			got += st.Total(p).RX - before.Total(p).RX + st.KernelDrops(p) - before.KernelDrops(p)
		}
		return got >= uint64(sent)
	})
}

func delta(a, b []uint64, i int) uint64 { return b[i] - a[i] }

const (
	lIP, rIP = "198.18.0.1", "198.18.0.2"
)

// validFlags are the kernel's valid TCP flag combinations (ECE, CWR, PSH
// masked off), spec/conntrack.md §2.
var validFlags = map[uint8]bool{
	packet.TCPSyn: true, packet.TCPSyn | packet.TCPUrg: true, packet.TCPSyn | packet.TCPAck: true,
	packet.TCPRst: true, packet.TCPRst | packet.TCPAck: true, packet.TCPFin | packet.TCPAck: true,
	packet.TCPFin | packet.TCPAck | packet.TCPUrg: true, packet.TCPAck: true, packet.TCPAck | packet.TCPUrg: true,
}

const flagMask = packet.TCPFin | packet.TCPSyn | packet.TCPRst | packet.TCPAck | packet.TCPUrg

// TestHostileFrames runs the malformed and hostile frames through one
// datapath (dropping INVALID) and checks, frame by frame, what reached the
// other host and, by reason, what the datapath counted.
func TestHostileFrames(t *testing.T) {
	w := newWire(t, rigOptions{cores: 1})

	t.Run("tcp flags as first packet", func(t *testing.T) {
		var steps []step
		var wantFlags, wantNewState uint64
		for fl := range 256 {
			f := uint8(fl)
			m := f & flagMask
			// Only SYN (NEW) and ACK-class (loose pickup) open a
			// connection; other valid flags are INVALID as a first packet.
			fwd := m == packet.TCPSyn || m == packet.TCPSyn|packet.TCPUrg || m == packet.TCPAck || m == packet.TCPAck|packet.TCPUrg
			switch {
			case !validFlags[m]:
				wantFlags++
			case !fwd:
				wantNewState++
			}
			steps = append(steps, step{left, pt.TCP4(lIP, rIP, uint16(20000+fl), 7777, pt.TCPFields{Flags: f, Seq: 1000, Ack: 1, Window: 512}), fwd, fmt.Sprintf("flags %#02x", f)})
		}
		b, a := w.run(t, steps)
		t.Logf("bridge in on A: %d frames, kernel drops %d", a.Total(bridge.PortA).RX-b.Total(bridge.PortA).RX, a.KernelDrops(bridge.PortA)-b.KernelDrops(bridge.PortA))
		if got := delta(b.Pipeline.InvalidBy[:], a.Pipeline.InvalidBy[:], int(statemachine.ReasonTCPFlags)); got != wantFlags {
			t.Errorf("invalid %s: got %d, want %d", statemachine.ReasonTCPFlags, got, wantFlags)
		}
		if got := delta(b.Pipeline.InvalidBy[:], a.Pipeline.InvalidBy[:], int(statemachine.ReasonTCPNewState)); got != wantNewState {
			t.Errorf("invalid %s: got %d, want %d", statemachine.ReasonTCPNewState, got, wantNewState)
		}
		t.Logf("256 flag bytes: %d INVALID for flags, %d INVALID as a first packet, %d forwarded", wantFlags, wantNewState, 256-wantFlags-wantNewState)
	})

	t.Run("tcp flags mid-connection", func(t *testing.T) {
		x := e2etest.StartPacedTransfer(t, w.r.Lab, w.r.Lab.LeftNS, w.r.Lab.RightNS, rIP+":5003", 8<<20, 60*time.Millisecond)
		// The invalid segments go into an established, assured connection.
		testenv.WaitFor(5*time.Second, func() bool {
			e, ok := w.r.entryOf(t, x.Local, x.Remote)
			return ok && e.Conn.State == statemachine.TCPEstablished && e.Conn.Status&statemachine.StatusAssured != 0
		})
		w.busy = true
		defer func() { w.busy = false }()
		lp, rp := uint16(x.Local.Port), uint16(x.Remote.Port)
		var steps, replies []step
		var want uint64
		for fl := range 256 {
			f := uint8(fl)
			if validFlags[f&flagMask] {
				continue // valid flags move the state on; the transition table's tests cover them
			}
			want += 2
			steps = append(steps, step{left, pt.TCP4(lIP, rIP, lp, rp, pt.TCPFields{Flags: f, Seq: 1, Ack: 1, Window: 512}), false, fmt.Sprintf("original flags %#02x", f)})
			replies = append(replies, step{right, pt.TCP4(rIP, lIP, rp, lp, pt.TCPFields{Flags: f, Seq: 1, Ack: 1, Window: 512}), false, fmt.Sprintf("reply flags %#02x", f)})
		}
		steps = append(steps, replies...)
		b, _ := w.run(t, steps)
		if !x.Active.Load() {
			t.Errorf("the transfer finished before the invalid segments were checked; lengthen it")
		}
		e, ok := w.r.entryOf(t, x.Local, x.Remote)
		// The transfer keeps the counters moving: wait for the published
		// ones to count the injected segments.
		// A segment punted while its flow's fast-path offer was pending
		// and still queued when a worker behind its ring forced the
		// activation is dropped unjudged at the hand-over (DropHandover,
		// offload/doc.go "Under overload"), as a full ring would drop it:
		// under -race on a loaded machine some injected segments go that
		// way. Each is then counted there instead (with the transfer's
		// own segments dropped at the same hand-overs, which is why the
		// sum is a lower bound); none may be forwarded (w.run checks).
		var a bridge.DatapathStats
		handover := func() uint64 { return a.Pipeline.Fast.Handover - b.Pipeline.Fast.Handover }
		testenv.WaitFor(5*time.Second, func() bool {
			a = w.r.DP.Stats()
			return delta(b.Pipeline.InvalidBy[:], a.Pipeline.InvalidBy[:], int(statemachine.ReasonTCPFlags))+handover() >= want
		})
		got := delta(b.Pipeline.InvalidBy[:], a.Pipeline.InvalidBy[:], int(statemachine.ReasonTCPFlags))
		if got > want || got+handover() < want {
			t.Errorf("invalid %s: got %d (and %d dropped at fast-path hand-overs), want %d", statemachine.ReasonTCPFlags, got, handover(), want)
		} else if got < want {
			t.Logf("invalid %s: %d judged, the rest of %d among %d frames dropped at fast-path hand-overs", statemachine.ReasonTCPFlags, got, want, handover())
		}
		if !ok || e.Conn.State != statemachine.TCPEstablished || e.Conn.Status&statemachine.StatusAssured == 0 {
			t.Errorf("connection after %d invalid segments: found %v, %v status %#x, want ESTABLISHED ASSURED", want, ok, e.Conn.State, e.Conn.Status)
		}
		if err := x.Wait(t.Context()); err != nil {
			t.Errorf("transfer after the invalid segments: %v", err)
		}
	})

	t.Run("fragments", func(t *testing.T) {
		payload := make([]byte, 64)
		for i := range payload {
			payload[i] = byte(i)
		}
		id := uint16(0x4000)
		withID := func(f []byte) []byte {
			id++
			binary.BigEndian.PutUint16(f[14+4:], id)
			return pt.FixChecksums(f)
		}
		tcp := func(fl uint8) []byte {
			return pt.TCP4(lIP, rIP, 3000, 22, pt.TCPFields{Flags: fl, Seq: 1, Window: 512, Payload: payload})
		}
		f4 := pt.Frag4
		var steps []step
		// Tiny first fragments (RFC 1858): 8 and 16 bytes of TCP header.
		for _, n := range []int{8, 16} {
			d := withID(tcp(packet.TCPSyn))
			steps = append(steps, step{left, f4(d, 0, n, true), false, fmt.Sprintf("tiny first fragment %d bytes", n)},
				step{left, f4(d, n, 88, false), false, "rest of a tiny-first datagram"})
		}
		// RFC 3128: a fragment at offset 8 rewrites the flags of a SYN.
		d := withID(tcp(packet.TCPSyn))
		evil := tcp(packet.TCPRst | packet.TCPAck)
		binary.BigEndian.PutUint16(evil[14+4:], id)
		evil = pt.FixChecksums(evil)
		steps = append(steps,
			step{left, f4(d, 0, 24, true), true, "first fragment (SYN)"},
			step{left, f4(evil, 8, 32, true), false, "offset 8 overlapping, flags RST|ACK"},
			step{left, f4(d, 40, 48, false), false, "rest of the overlapped datagram"})
		// A duplicate later fragment with other data.
		u := withID(pt.UDP4(lIP, rIP, 7, 9, payload))
		u2 := append([]byte(nil), u...)
		u2[len(u2)-1] ^= 0xff
		steps = append(steps,
			step{left, f4(u, 0, 24, true), true, "udp first fragment"},
			step{left, f4(u, 24, 24, true), true, "udp middle fragment"},
			step{left, f4(u2, 24, 24, true), false, "duplicate middle fragment, other data"},
			step{left, f4(u, 48, 40, false), true, "udp last fragment"})
		// IPv6 (RFC 5722): an overlap discards the datagram.
		s6 := pt.TCP6("2001:2::1", "2001:2::2", 3000, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 512, Payload: payload})
		r6 := pt.TCP6("2001:2::1", "2001:2::2", 3000, 22, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Seq: 1, Window: 512, Payload: payload})
		steps = append(steps,
			step{left, pt.Frag6(s6, 99, 0, 24, true), true, "v6 first fragment"},
			step{left, pt.Frag6(r6, 99, 8, 32, true), false, "v6 overlapping at 8"},
			step{left, pt.Frag6(s6, 99, 40, 48, false), false, "v6 rest"},
			step{left, pt.Frag6(s6, 98, 0, 8, true), false, "v6 tiny first fragment"})
		b, a := w.run(t, steps)
		for _, c := range []struct {
			r    packet.Reason
			want uint64
		}{{packet.ReasonTinyFragment, 3}, {packet.ReasonFragmentOverlap, 5}} {
			if got := delta(b.Pipeline.Parse[:], a.Pipeline.Parse[:], int(c.r)); got != c.want {
				t.Errorf("parse %s: got %d, want %d", c.r, got, c.want)
			}
		}
	})

	t.Run("icmp errors quoting other flows", func(t *testing.T) {
		flow := pt.UDP4(lIP, rIP, 4000, 53, []byte("query"))
		reply := pt.UDP4(rIP, lIP, 53, 4000, []byte("answer"))
		other := pt.UDP4("198.18.0.7", "198.18.0.8", 4000, 53, nil)
		absent := pt.UDP4(lIP, rIP, 4001, 53, nil)
		unreach := func(src, dst string, quoted []byte) []byte {
			return pt.ICMP4Error(src, dst, 3, 1, pt.Quote(quoted, 28))
		}
		inner := unreach(rIP, lIP, flow)
		steps := []step{
			{left, flow, true, "udp flow"},
			{right, reply, true, "its reply"},
			{right, unreach(rIP, "198.18.0.9", flow), false, "error quoting the flow, sent to a third host"},
			{right, unreach(rIP, lIP, other), false, "error quoting a flow between other hosts"},
			{right, unreach(rIP, lIP, absent), false, "error quoting a flow that does not exist"},
			{right, pt.ICMP4Error(rIP, lIP, 3, 1, pt.Quote(inner, 56)), false, "error quoting an error"},
			{right, unreach(rIP, lIP, flow), true, "genuine error for the flow (RELATED)"},
			{left, flow, true, "the flow still passes"},
		}
		b, a := w.run(t, steps)
		if got := a.Pipeline.ICMPError - b.Pipeline.ICMPError; got != 5 {
			t.Errorf("ICMP errors examined: got %d, want 5", got)
		}
		if got := a.Pipeline.States[4] - b.Pipeline.States[4]; got != 1 {
			t.Errorf("RELATED packets: got %d, want 1", got)
		}
	})

	t.Run("truncated frames", func(t *testing.T) {
		var steps []step
		for _, base := range [][]byte{
			pt.TCP4(lIP, rIP, 5000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 512, Payload: []byte("hello")}),
			pt.UDP4(lIP, rIP, 5000, 53, []byte("hello")),
			pt.ICMP4Echo(lIP, rIP, 8, 1, 1, []byte("hello")),
			pt.ICMP4Error(lIP, rIP, 3, 3, pt.Quote(pt.UDP4(rIP, lIP, 53, 5000, nil), 28)),
		} {
			for n := 14; n < len(base); n++ {
				steps = append(steps, step{left, base[:n], false, fmt.Sprintf("prefix %d of %d", n, len(base))})
			}
		}
		b, a := w.run(t, steps)
		ca, cb := a.Total(bridge.PortA), b.Total(bridge.PortA)
		rx := ca.RX - cb.RX
		malformed := ca.Drops[bridge.DropMalformed] - cb.Drops[bridge.DropMalformed]
		if rx != uint64(len(steps)) || malformed != rx {
			t.Errorf("truncated frames: bridge in %d, malformed drops %d, want %d and %d", rx, malformed, len(steps), len(steps))
		}
		var reasons []string
		for i := range a.Pipeline.Parse {
			if d := delta(b.Pipeline.Parse[:], a.Pipeline.Parse[:], i); d > 0 {
				reasons = append(reasons, fmt.Sprintf("%s=%d", packet.Reason(i), d))
			}
		}
		t.Logf("%d truncated frames: %v", len(steps), reasons)
	})

	t.Run("ipv6 extension chains", func(t *testing.T) {
		base := pt.UDP6("2001:2::1", "2001:2::2", 5000, 53, []byte("hello"))
		long := base
		for range packet.MaxIPv6ExtHeaders + 1 {
			long = pt.Ext6(long, packet.ProtoDestOpts, make([]byte, 6))
		}
		// A chain that runs to the frame's end: destination options whose
		// next header is another one, with nothing after the last.
		endless := pt.Ext6(pt.Ext6(base, packet.ProtoDestOpts, make([]byte, 6)), packet.ProtoDestOpts, make([]byte, 6))
		l3 := 14
		endless = endless[:l3+40+16]
		endless[l3+40+8] = packet.ProtoDestOpts // the second header points at a third
		binary.BigEndian.PutUint16(endless[l3+4:], 16)
		hbh := pt.Ext6(pt.Ext6(base, packet.ProtoHopByHop, make([]byte, 6)), packet.ProtoHopByHop, make([]byte, 6))
		steps := []step{
			{left, long, false, fmt.Sprintf("%d extension headers", packet.MaxIPv6ExtHeaders+1)},
			{left, endless, false, "chain to the end of the frame"},
			{left, hbh, false, "hop-by-hop twice"},
		}
		b, a := w.run(t, steps)
		if got := delta(b.Pipeline.Parse[:], a.Pipeline.Parse[:], int(packet.ReasonIPv6ExtChain)); got != uint64(len(steps)) {
			t.Errorf("parse %s: got %d, want %d", packet.ReasonIPv6ExtChain, got, len(steps))
		}
	})
}

// TestOversizeFrames sends frames larger than the ports' MTU (the datapath
// refuses a port MTU its frames cannot hold, so nothing larger than
// --frame-size can reach it through the port): the left host's veth gets MTU
// 3000 while port A keeps 1500. None is forwarded, none reaches the
// datapath (veth drops them: counted on port A's rx_dropped, not ours), and
// a frame that fits still passes.
func TestOversizeFrames(t *testing.T) {
	w := newWire(t, rigOptions{cores: 1})
	l := w.r.Lab
	if out, err := l.Run(t.Context(), l.LeftNS, "ip", "link", "set", "dev", l.LeftIf, "mtu", "3000"); err != nil {
		t.Fatalf("ip link set mtu: %v: %s", err, out)
	}
	var steps []step
	for _, n := range []int{1519, 1600, 2048, 2500, 3014} {
		f := pt.UDP4(lIP, rIP, 6000, 53, make([]byte, n-14-20-8))
		steps = append(steps, step{left, f, false, fmt.Sprintf("%d-byte frame", n)})
	}
	steps = append(steps, step{left, pt.UDP4(lIP, rIP, 6000, 53, make([]byte, 1514-42)), true, "1514-byte frame (fits)"})
	b, a := w.run(t, steps)
	if rx := a.Total(bridge.PortA).RX - b.Total(bridge.PortA).RX; rx != 1 {
		t.Errorf("frames reaching the datapath: got %d, want 1 (the one that fits)", rx)
	}
}
