package conformance

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/replay"
)

var (
	randomSeed  = flag.Uint64("random-seed", 1, "seed of TestDifferentialRandomTCP")
	randomConns = flag.Int("random-conns", 150, "connections in TestDifferentialRandomTCP")
)

// randomTCP builds conns TCP connections between the lab hosts, each a
// handshake-ish opening followed by segments with random flags, sequence
// and acknowledgement numbers near (or far from) what each side sent,
// in random directions. Deterministic for a seed.
func randomTCP(seed uint64, conns int) [][]byte {
	r := rand.New(rand.NewPCG(seed, 0x5747))
	var frames [][]byte
	flagSets := []uint8{fS, fSA, fA, fPA, fFA, fR, fRA, fA, fPA, fA, fPA, fFA,
		fS | fFA, 0, fFA | fR, fSA | fR}
	for c := 0; c < conns; c++ {
		f := families[r.IntN(2)]
		cport := uint16(20000 + c)
		isn := [2]uint32{r.Uint32(), r.Uint32()}
		next := [2]uint32{isn[0], isn[1]}
		win := [2]uint16{uint16(1000 + r.IntN(64000)), uint16(1000 + r.IntN(64000))}
		n := 5 + r.IntN(25)
		for i := 0; i < n; i++ {
			d := r.IntN(2)
			var fl uint8
			switch {
			case i == 0:
				fl, d = fS, 0
			case i == 1 && r.IntN(4) > 0:
				fl, d = fSA, 1
			case i == 2 && r.IntN(4) > 0:
				fl, d = fA, 0
			default:
				fl = flagSets[r.IntN(len(flagSets))]
			}
			tf := packettest.TCPFields{Flags: fl, Window: win[d]}
			switch r.IntN(10) {
			case 0:
				tf.Seq = r.Uint32()
			case 1:
				tf.Seq = next[d] - uint32(r.IntN(3000))
			case 2:
				tf.Seq = next[d] + uint32(r.IntN(70000))
			default:
				tf.Seq = next[d]
			}
			if fl&fA != 0 {
				switch r.IntN(8) {
				case 0:
					tf.Ack = r.Uint32()
				case 1:
					tf.Ack = next[d^1] + uint32(r.IntN(2000)) - 1000
				default:
					tf.Ack = next[d^1]
				}
			}
			if fl&fS != 0 {
				tf.MSS = 1460
				if r.IntN(2) == 0 {
					tf.HasWScale, tf.WScale = true, uint8(r.IntN(15))
				}
				if fl == fS && i == 0 {
					tf.Seq = isn[0]
				}
			}
			if fl&(fS|fR) == 0 && r.IntN(2) == 0 {
				tf.Payload = make([]byte, 1+r.IntN(1400))
			}
			frames = append(frames, f.tcp(d == 0, pick(d == 0, cport, port), pick(d == 0, port, cport), tf))
			adv := uint32(len(tf.Payload))
			if fl&(fS|packet_TCPFin) != 0 {
				adv++
			}
			if tf.Seq+adv-next[d] < 1<<30 { // moved forward
				next[d] = tf.Seq + adv
			}
		}
	}
	return frames
}

const packet_TCPFin = 0x01

func pick(b bool, x, y uint16) uint16 {
	if b {
		return x
	}
	return y
}

// TestDifferentialRandomTCP runs random TCP conversations (fixed seeds)
// through the kernel and statewire and lists every packet whose state
// differs. Every seed must agree on every packet: the last differences
// (RSTs in SYN_SENT/SYN_SENT2 after an ignored reply, BE_LIBERAL lost on a
// resync) were found this way and fixed (CONFORMANCE.md, "Closed"). Use
// -random-seed and -random-conns to explore (seeds 1–40 agreed fully when
// they were closed), -trace-port to follow one connection packet by
// packet.
func TestDifferentialRandomTCP(t *testing.T) {
	lab.RequireRoot(t)
	if *tracePort != 0 {
		traceRandomTCP(t)
		return
	}
	h := newTestHarness(t, Options{})
	seeds := []uint64{1, 2, 3}
	if *randomSeed != 1 {
		seeds = []uint64{*randomSeed}
	}
	for _, seed := range seeds {
		frames := randomTCP(seed, *randomConns)
		r, text := compareGenerated(t, h, fmt.Sprintf("random-tcp-seed-%d-conns-%d", seed, *randomConns), frames)
		t.Log("\n" + text)
		if r.Equal != r.Compared {
			t.Errorf("seed %d: agreement %d/%d, want every packet", seed, r.Equal, r.Compared)
		}
	}
}

var tracePort = flag.Int("trace-port", 0, "TestDifferentialRandomTCP: trace (instead of comparing) the client port of the random connection to trace packet by packet")

// describe formats a TCP frame for a trace.
func describe(f []byte) string {
	var p packet.Packet
	if packet.Parse(f, 0, packet.Options{}, &p) != packet.ReasonOK || p.Proto != packet.ProtoTCP {
		return "?"
	}
	fl := ""
	for i, n := range "FSRPAUEC" {
		if p.TCP.Flags&(1<<i) != 0 {
			fl += string(n)
		}
	}
	return fmt.Sprintf("%5d>%-5d %-4s seq=%d ack=%d win=%d len=%d", p.SrcPort, p.DstPort, fl, p.TCP.Seq, p.TCP.Ack, p.TCP.Window, p.PayloadLen)
}

// traceRandomTCP replays one connection of TestDifferentialRandomTCP
// packet by packet on both sides and logs each side's label and TCP state
// after every packet, marking the lines where they differ (a debugging
// aid: go test -run TestDifferentialRandomTCP -random-seed N -trace-port P).
func traceRandomTCP(t *testing.T) {
	ctx := context.Background()
	o, err := NewOracle(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ours, err := NewOurs(Options{}, flowtable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("sport=%d ", *tracePort)
	state := func(tab []Entry) string {
		for _, e := range tab {
			if strings.Contains(e.Orig+" ", want) {
				return e.State + " " + e.Flags()
			}
		}
		return "-"
	}
	var b strings.Builder
	for _, f := range randomTCP(*randomSeed, *randomConns) {
		var p packet.Packet
		if packet.Parse(f, 0, packet.Options{}, &p) != packet.ReasonOK || (int(p.SrcPort) != *tracePort && int(p.DstPort) != *tracePort) {
			continue
		}
		kl, err := o.Continue(ctx, [][]byte{f})
		if err != nil {
			t.Fatal(err)
		}
		kt, err := o.KernelTable(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ol := ours.Labels([][]byte{f})
		mark := " "
		if kl[0] != ol[0] || state(kt) != state(ours.Table()) {
			mark = "*"
		}
		fmt.Fprintf(&b, "%s %-60s kernel %-11s %-22s statewire %-11s %s\n", mark, describe(f), kl[0], state(kt), ol[0], state(ours.Table()))
	}
	t.Log("\n" + b.String())
}

// randomMixed builds n packets of UDP flows, ICMP and ICMPv6 (queries,
// replies, errors quoting known and unknown flows, neighbour discovery)
// and other IP protocols (others, with random bodies), in random order and
// directions. Deterministic for
// a seed.
func randomMixed(seed uint64, n int, others []uint8) [][]byte {
	r := rand.New(rand.NewPCG(seed, 0x6d6978))
	var sent [][]byte // earlier frames, for errors to quote
	var frames [][]byte
	add := func(f []byte, fromServer bool) {
		if fromServer {
			f = toClient(f)
		}
		frames = append(frames, f)
		sent = append(sent, f)
	}
	for len(frames) < n {
		v6 := r.IntN(2) == 1
		f := families[0]
		if v6 {
			f = families[1]
		}
		back := r.IntN(3) == 0
		src, dst := f.cli, f.srv
		if back {
			src, dst = dst, src
		}
		sp, dp := uint16(5000+r.IntN(4)), uint16(53+r.IntN(2))
		if back {
			sp, dp = dp, sp
		}
		switch k := r.IntN(10); {
		case k < 3: // UDP
			add(f.udp(!back, sp, dp, make([]byte, r.IntN(100))), back)
		case k < 5: // echo and other query/reply types
			id := uint16(r.IntN(3))
			if v6 {
				typ := []uint8{128, 129, 128, 139, 140, 200}[r.IntN(6)]
				add(packettest.ICMP6Echo(src, dst, typ, id, uint16(r.IntN(9)), nil), back)
			} else {
				typ := []uint8{8, 0, 8, 13, 14, 15, 16, 17, 18, 19, 40}[r.IntN(11)]
				add(packettest.ICMP4Echo(src, dst, typ, id, uint16(r.IntN(9)), nil), back)
			}
		case k < 7: // an error quoting an earlier packet (or a made-up one)
			var q []byte
			if len(sent) > 0 && r.IntN(4) > 0 {
				q = sent[r.IntN(len(sent))]
			} else {
				q = f.udp(back, dp, sp, nil)
			}
			qv6 := len(q) > 13 && q[12] == 0x86
			qlen := []int{0, 28, 48, 8, 20}[r.IntN(5)]
			if qv6 {
				qlen = []int{0, 48, 68, 40, 44}[r.IntN(5)]
			}
			quoted := packettest.Quote(q, qlen)
			// The error goes to the quoted packet's source.
			qsrc, _ := ips(q)
			to := qsrc.String()
			fromServer := to == cli4 || to == cli6
			if qv6 {
				typ := []uint8{1, 2, 3, 4}[r.IntN(4)]
				from := "2001:2::fe"
				add(packettest.ICMP6Error(from, to, typ, uint8(r.IntN(2)), 1280, quoted), fromServer)
			} else {
				typ := []uint8{3, 4, 5, 11, 12}[r.IntN(5)]
				add(packettest.ICMP4(rtr4, to, typ, uint8(r.IntN(5)), 0, quoted), fromServer)
			}
		case k < 8: // neighbour discovery and MLD: untracked
			if v6 {
				add(packettest.NeighborSolicit("fe80::1", "ff02::1:ff00:2", srv6), false)
			} else {
				add(packettest.ICMP4(src, dst, []uint8{9, 10, 30, 37}[r.IntN(4)], 0, 0, nil), back)
			}
		default: // other protocols
			proto := others[r.IntN(len(others))]
			body := make([]byte, 12+r.IntN(40))
			for i := range body {
				body[i] = byte(r.IntN(256))
			}
			if proto == 132 || proto == 33 || proto == 136 {
				copy(body, []byte{byte(sp >> 8), byte(sp), byte(dp >> 8), byte(dp)})
			}
			if v6 {
				add(packettest.IPv6(src, dst, proto, body), back)
			} else {
				add(packettest.IPv4(src, dst, proto, body), back)
			}
		}
	}
	return frames
}

// Protocol numbers for randomMixed. genericProtos have no tracker of their
// own in Linux 6.18 nor in statewire; trackedProtos have one in the kernel
// (SCTP, UDP-Lite, GRE) or had one (DCCP, removed in 6.16) and are tracked
// with ports by statewire (CONFORMANCE.md, "Other IP protocols").
var (
	genericProtos = []uint8{50, 253}
	trackedProtos = []uint8{132, 136, 47, 33}
)

// TestDifferentialRandomMixed runs random UDP, ICMP, ICMPv6 and other
// protocols through the kernel and statewire and lists every difference.
func TestDifferentialRandomMixed(t *testing.T) {
	lab.RequireRoot(t)
	h := newTestHarness(t, Options{})
	seeds := []uint64{1, 2}
	if *randomSeed != 1 {
		seeds = []uint64{*randomSeed}
	}
	for _, seed := range seeds {
		frames := randomMixed(seed, 10**randomConns, genericProtos)
		r, text := compareGenerated(t, h, fmt.Sprintf("random-mixed-seed-%d", seed), frames)
		t.Log("\n" + text)
		if r.Agreement() < 0.995 {
			t.Errorf("seed %d: agreement %d/%d, want ≥ 99.5%%", seed, r.Equal, r.Compared)
		}
	}
}

// newTestHarness builds a harness (a kernel lab) that is removed when the
// test ends; a lab that cannot be removed fails the test.
func newTestHarness(t *testing.T, opts Options) *Harness {
	t.Helper()
	h, err := NewHarness(context.Background(), opts, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close harness: %v", err)
		}
	})
	return h
}

// compareGenerated runs frames built in memory through the harness, all
// at one instant (they carry no timestamps), and returns the report and its
// text.
func compareGenerated(t *testing.T, h *Harness, name string, frames [][]byte) (*Report, string) {
	t.Helper()
	rf := make([]replay.Frame, len(frames))
	for i, f := range frames {
		rf[i] = replay.Frame{Data: f, WireLen: len(f)}
	}
	r, err := h.Compare(context.Background(), name, rf)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r.Write(&b)
	return r, b.String()
}

// TestDifferentialOtherProtocols runs the random mix with SCTP, UDP-Lite,
// GRE and DCCP carrying random bodies. Linux validates the first three
// with trackers of its own and tracks DCCP as generic (addresses only)
// since 6.16; statewire tracks all four with ports and the generic state
// machine. The test requires every difference to involve one of them
// (CONFORMANCE.md, "Other IP protocols") and logs them.
func TestDifferentialOtherProtocols(t *testing.T) {
	lab.RequireRoot(t)
	h := newTestHarness(t, Options{})
	frames := randomMixed(*randomSeed, 10**randomConns, trackedProtos)
	r, text := compareGenerated(t, h, fmt.Sprintf("random-other-protocols-seed-%d", *randomSeed), frames)
	t.Log("\n" + text)
	involved := func(s string) bool {
		for _, p := range []string{"sctp", "udplite", "gre", "dccp", "unknown 33 "} {
			if strings.Contains(s, p) {
				return true
			}
		}
		return false
	}
	for _, d := range r.Diffs {
		if !involved(d.Tuple) {
			t.Errorf("difference outside SCTP, UDP-Lite, GRE, DCCP: %s", d)
		}
	}
	for _, d := range r.TableDiffs {
		if !involved(d.Key) {
			t.Errorf("table difference outside SCTP, UDP-Lite, GRE, DCCP: %s", d)
		}
	}
}
