package e2e

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	pt "github.com/statewire/statewire/packet/packettest"
)

// matchesRules uses every match of issue 16's first slice, with negations.
// Each rule is reached only by frames to its UDP port, so each step below
// tests one rule; the frames of one port are one flow (or a flow and its
// reply), sent again with other per-packet fields, so a verdict cached for
// an earlier frame of the flow would give a later one the wrong fate.
const matchesRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 6001 -m iprange --src-range 198.51.100.10-198.51.100.20 -j DROP
-A FORWARD -p udp -m udp --dport 6002 -m iprange ! --dst-range 203.0.113.1-203.0.113.5 -j DROP
-A FORWARD -p udp -m udp --dport 6003 -m mac --mac-source 02:73:70:00:00:01 -j DROP
-A FORWARD -p udp -m udp --dport 6004 -m mac ! --mac-source 02:73:70:00:00:01 -j DROP
-A FORWARD -p udp -m udp --dport 6005 -m length --length 100:200 -j DROP
-A FORWARD -p udp -m udp --dport 6006 -m length ! --length 0:99 -j DROP
-A FORWARD -p udp -m udp --dport 6007 -m pkttype --pkt-type broadcast -j DROP
-A FORWARD -p udp -m udp --dport 6008 -m pkttype ! --pkt-type unicast -j DROP
-A FORWARD -p udp -m udp --dport 6009 -m tos --tos 0x10/0x3f -j DROP
-A FORWARD -p udp -m udp --dport 6010 -m dscp --dscp 0x2e -j DROP
-A FORWARD -p udp -m udp --dport 6011 -m dscp ! --dscp 0x00 -j DROP
-A FORWARD -p udp -m udp --dport 6012 -m ttl --ttl-lt 10 -j DROP
-A FORWARD -p udp -m udp --dport 6013 -m ttl ! --ttl-eq 64 -j DROP
-A FORWARD -p udp -m udp --dport 6014 -m ttl --ttl-gt 200 -j DROP
-A FORWARD -p udp -m udp --sport 6016 -m physdev --physdev-in {PortB} -m length --length 0:60 -j DROP
COMMIT
`

// matchesRules6 is the IPv6 file (ip6tables-legacy-restore, --rules6): -m hl
// and the matches that read IPv6 fields of their own (traffic class, payload
// length, 128-bit ranges).
const matchesRules6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 6101 -m hl --hl-lt 10 -j DROP
-A FORWARD -p udp -m udp --dport 6102 -m hl ! --hl-eq 64 -j DROP
-A FORWARD -p udp -m udp --dport 6103 -m dscp --dscp 0x2e -j DROP
-A FORWARD -p udp -m udp --dport 6104 -m length --length 100:200 -j DROP
-A FORWARD -p udp -m udp --dport 6105 -m iprange --src-range 2001:db8:1::10-2001:db8:1::20 -j DROP
-A FORWARD -p udp -m udp --dport 6106 -m tos ! --tos 0x10/0x3f -j DROP
COMMIT
`

// matchFrame describes one crafted UDP frame, IPv4 or (v6) IPv6.
type matchFrame struct {
	from         int // 0: injected at the left host (port A), 1: the right host (port B)
	v6           bool
	tc           uint8 // IPv6 traffic class (ttl is also the hop limit)
	src, dst     string
	sport, dport uint16
	ipLen        int // IP total length (IPv6: 40 + payload length)
	ttl, tos     uint8
	dmac, smac   [6]byte
	want         fate
	what         string
}

var (
	matchOtherMAC = [6]byte{0x02, 0x73, 0x70, 0, 0, 0x03}
	matchBcast    = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	matchMcast    = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}
)

func matchSteps() []spoofStep {
	const L, R = "198.51.100.15", "203.0.113.3"
	var id uint16 = 0x6600
	mk := func(f matchFrame) spoofStep {
		id++
		if f.src == "" {
			f.src, f.dst = L, R
			if f.v6 {
				f.src, f.dst = "2001:db8:1::15", "2001:db8:2::3"
			}
			if f.from == 1 {
				f.src, f.dst = f.dst, f.src
			}
		}
		if f.ipLen == 0 {
			f.ipLen = 48
			if f.v6 {
				f.ipLen = 68
			}
		}
		if f.ttl == 0 {
			f.ttl = 64
		}
		if f.dmac == ([6]byte{}) {
			f.dmac = spoofDstMAC
		}
		if f.smac == ([6]byte{}) {
			f.smac = [2][6]byte{spoofLeftMAC, spoofRightMAC}[f.from]
		}
		var fr []byte
		if f.v6 {
			payload := make([]byte, f.ipLen-48)
			copy(payload, fmt.Sprintf("m%04x", id)) // unique bytes per frame
			fr = pt.UDP6(f.src, f.dst, f.sport, f.dport, payload)
			fr[14], fr[15] = 0x60|f.tc>>4, f.tc<<4|fr[15]&0x0f
			fr[21] = f.ttl
			f.tos = f.tc
		} else {
			payload := make([]byte, f.ipLen-28)
			copy(payload, fmt.Sprintf("m%04x", id))
			fr = pt.UDP4(f.src, f.dst, f.sport, f.dport, payload)
			fr[15], fr[22] = f.tos, f.ttl
			binary.BigEndian.PutUint16(fr[18:20], id)
		}
		copy(fr[0:6], f.dmac[:])
		copy(fr[6:12], f.smac[:])
		what := fmt.Sprintf("udp %s.%d>%s.%d from %c len %d ttl %d tos %#02x dst %x src %x: %s",
			f.src, f.sport, f.dst, f.dport, "AB"[f.from], f.ipLen, f.ttl, f.tos, f.dmac, f.smac, f.what)
		return spoofStep{what: what, from: f.from, frame: pt.FixChecksums(fr), leftOnly: f.want}
	}
	fw, dr := forwarded, dropped
	s := []matchFrame{
		{dport: 6001, want: dr, what: "src in range"},
		{dport: 6001, src: "198.51.100.25", dst: R, want: fw, what: "src out of range"},
		{dport: 6001, want: dr, what: "src in range again"},
		{dport: 6002, want: fw, what: "dst in range (negated)"},
		{dport: 6002, src: L, dst: "203.0.113.9", want: dr, what: "dst out of range (negated)"},
		{dport: 6003, want: dr, what: "mac-source matches"},
		{dport: 6003, smac: matchOtherMAC, want: fw, what: "same flow, other source MAC"},
		{dport: 6003, want: dr, what: "mac-source matches again"},
		{dport: 6004, want: fw, what: "! mac-source: the left MAC"},
		{dport: 6004, smac: matchOtherMAC, want: dr, what: "! mac-source: same flow, other MAC"},
		{dport: 6004, want: fw, what: "! mac-source: the left MAC again"},
		{dport: 6005, want: fw, what: "length 48 outside 100:200"},
		{dport: 6005, ipLen: 150, want: dr, what: "length 150 in 100:200"},
		{dport: 6005, want: fw, what: "length 48 again"},
		{dport: 6005, ipLen: 200, want: dr, what: "length 200, the upper bound"},
		{dport: 6005, ipLen: 201, want: fw, what: "length 201"},
		{dport: 6006, ipLen: 99, want: fw, what: "! length 0:99: 99"},
		{dport: 6006, ipLen: 100, want: dr, what: "! length 0:99: 100"},
		{dport: 6007, want: fw, what: "pkttype unicast"},
		{dport: 6007, dmac: matchBcast, want: dr, what: "pkttype broadcast"},
		{dport: 6007, want: fw, what: "pkttype unicast again"},
		{dport: 6008, want: fw, what: "! pkttype unicast: unicast"},
		{dport: 6008, dmac: matchMcast, want: dr, what: "! pkttype unicast: multicast"},
		{dport: 6008, dmac: matchBcast, want: dr, what: "! pkttype unicast: broadcast"},
		{dport: 6009, want: fw, what: "tos 0"},
		{dport: 6009, tos: 0x10, want: dr, what: "tos 0x10/0x3f"},
		{dport: 6009, tos: 0xd0, want: dr, what: "tos 0xd0 masked to 0x10"},
		{dport: 6009, tos: 0x11, want: fw, what: "tos 0x11"},
		{dport: 6010, want: fw, what: "dscp 0"},
		{dport: 6010, tos: 0xb8, want: dr, what: "dscp EF"},
		{dport: 6010, tos: 0xb9, want: dr, what: "dscp EF with ECN bits"},
		{dport: 6011, tos: 0x03, want: fw, what: "! dscp 0: ECN bits only"},
		{dport: 6011, tos: 0x20, want: dr, what: "! dscp 0: dscp 8"},
		{dport: 6012, want: fw, what: "ttl 64 not < 10"},
		{dport: 6012, ttl: 9, want: dr, what: "ttl 9 < 10"},
		{dport: 6012, ttl: 10, want: fw, what: "ttl 10"},
		{dport: 6013, want: fw, what: "! ttl-eq 64: 64"},
		{dport: 6013, ttl: 63, want: dr, what: "! ttl-eq 64: 63"},
		{dport: 6014, ttl: 200, want: fw, what: "ttl 200 not > 200"},
		{dport: 6014, ttl: 201, want: dr, what: "ttl 201 > 200"},
		// Directions: the rule drops short frames from port B only.
		{sport: 6016, dport: 7016, want: fw, what: "original direction from A"},
		{from: 1, src: "203.0.113.3", dst: "198.51.100.15", sport: 7016, dport: 6016, want: fw, what: "reply from B, sport is not 6016"},
		{from: 1, src: "203.0.113.3", dst: "198.51.100.15", sport: 6016, dport: 7016, want: dr, what: "a frame of the A flow's tuple sent into B, short"},
		{from: 1, src: "203.0.113.3", dst: "198.51.100.15", sport: 6016, dport: 7016, ipLen: 100, want: fw, what: "the same from B, long"},
		{sport: 6016, dport: 7016, want: fw, what: "original direction from A again"},
		// A flow whose verdict is cacheable (iprange reads the addresses
		// only): the fast-path wire takes its later frames.
		{dport: 6002, want: fw, what: "cacheable flow again"},
		{dport: 6002, want: fw, what: "cacheable flow, offered to the fast path"},
		{dport: 6002, want: fw, what: "cacheable flow, by the fast path"},
		{dport: 6002, want: fw, what: "cacheable flow, by the fast path"},
		// Every per-packet rule's flow once more with the frame its rule
		// drops: the fast path, holding 6002's flow, must not hold these.
		{dport: 6005, ipLen: 150, want: dr, what: "length 150 in 100:200, after the pause"},
		{dport: 6012, ttl: 9, want: dr, what: "ttl 9 < 10, after the pause"},
		// IPv6 (--rules6 / ip6tables).
		{v6: true, dport: 6101, want: fw, what: "hl 64 not < 10"},
		{v6: true, dport: 6101, ttl: 9, want: dr, what: "hl 9 < 10"},
		{v6: true, dport: 6101, want: fw, what: "hl 64 again"},
		{v6: true, dport: 6102, ttl: 63, want: dr, what: "! hl-eq 64: 63"},
		{v6: true, dport: 6102, want: fw, what: "! hl-eq 64: 64"},
		{v6: true, dport: 6103, tc: 0xb8, want: dr, what: "traffic class dscp EF"},
		{v6: true, dport: 6103, tc: 0x01, want: fw, what: "traffic class ECN only"},
		{v6: true, dport: 6104, ipLen: 150, want: dr, what: "length 150 (40 + payload length)"},
		{v6: true, dport: 6104, ipLen: 99, want: fw, what: "length 99"},
		{v6: true, dport: 6105, want: dr, what: "src in the IPv6 range"},
		{v6: true, dport: 6105, src: "2001:db8:1::21", dst: "2001:db8:2::3", want: fw, what: "src past the IPv6 range"},
		{v6: true, dport: 6106, tc: 0x50, want: fw, what: "! tos 0x10/0x3f: traffic class 0x50"},
		{v6: true, dport: 6106, want: dr, what: "! tos 0x10/0x3f: traffic class 0"},
	}
	steps := make([]spoofStep, len(s))
	for i, f := range s {
		if f.sport == 0 {
			f.sport = 5000 + f.dport%1000
		}
		steps[i] = mk(f)
	}
	return steps
}

// TestMatchesAgainstKernel loads matchesRules and matchesRules6 into the
// kernel bridge with br_netfilter (iptables-legacy-restore,
// ip6tables-legacy-restore) and into `statewire run` (slow path only, and
// with the XDP fast path on), sends the same crafted frames
// through all three and requires every frame's fate to be the one the
// kernel gives and the one the step expects.
func TestMatchesAgainstKernel(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	restore6, err6 := exec.LookPath("ip6tables-legacy-restore")
	if err != nil || err6 != nil {
		testenv.Unavailable(t, "iptables-legacy-restore or ip6tables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	bin := lab.StatewireBinary(t)
	wires := []*spoofWire{
		kernelWire46(t, restore, matchesRules, restore6, matchesRules6),
		statewireWire46(t, bin, matchesRules, matchesRules6, 1, false),
		statewireWire46(t, bin, matchesRules, matchesRules6, 1, true),
	}
	runFateSteps(t, wires, matchSteps(), "kernel vs statewire")
}

// runFateSteps sends each step's frame through every wire, the first
// being the kernel's, and compares the fates: the first wire's with what
// the step expects, every other wire's with the first's; a frame called
// dropped must not arrive late. phase names the run in messages.
func runFateSteps(t *testing.T, wires []*spoofWire, steps []spoofStep, phase string) {
	t.Helper()
	runFateStepsWith(t, wires, steps, phase, fateOpts{})
}

// fateOpts extend runFateSteps for random traffic (e2e/rulediff_test.go).
type fateOpts struct {
	// anyFate[i]: step i has no expected fate; the first wire's (the
	// kernel's) is the one the others must give.
	anyFate []bool
	// barrier[i], when not nil, is a frame sent from step i's side right
	// after its frame, which every wire forwards (no rule sees it): its
	// arrival ends the wait for step i's frame sooner than spoofDropWait.
	barrier [][]byte
}

// runFateStepsWith is runFateSteps with o; it returns the fates, by wire
// and step.
func runFateStepsWith(t *testing.T, wires []*spoofWire, steps []spoofStep, phase string, o fateOpts) [][]fate {
	t.Helper()
	anyFate := func(si int) bool { return si < len(o.anyFate) && o.anyFate[si] }
	barrier := func(si int) []byte {
		if si < len(o.barrier) {
			return o.barrier[si]
		}
		return nil
	}
	got := make([][]fate, len(wires))
	for i := range got {
		got[i] = make([]fate, len(steps))
	}
	for si, s := range steps {
		// As in TestSpoofedIntoWrongPort: the pause lets the fast-path
		// wire offer the flows of earlier steps (eligible for 10 ms) if it
		// (wrongly) judged them cacheable, so a later frame of the flow
		// would meet the XDP program.
		bar := barrier(si)
		gap := spoofStepGap
		if bar != nil {
			gap = barrierStepGap
		}
		time.Sleep(gap)
		wait := spoofDropWait
		if s.leftOnly == forwarded || anyFate(si) {
			wait = spoofPassWait
		}
		var wg sync.WaitGroup
		for wi, w := range wires {
			w.send(t, s.from, s.frame)
			if bar != nil {
				w.send(t, s.from, bar)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if bar == nil {
					got[wi][si] = fate(w.sniff[1-s.from].await(s.frame, wait))
					return
				}
				// The frame was judged before the barrier (one TX queue
				// per host, see pinHostTxQueues): once the barrier is
				// through, a forwarded frame is at most barrierGrace
				// behind it.
				if !w.sniff[1-s.from].await(bar, spoofPassWait) {
					t.Errorf("%s, step %d: %s: the barrier frame after it was lost", phase, si+1, w.name)
				}
				got[wi][si] = fate(w.sniff[1-s.from].await(s.frame, barrierGrace))
			}()
		}
		wg.Wait()
		if k := got[0][si]; !anyFate(si) && k != s.leftOnly {
			t.Errorf("%s, step %d %s: %s: got %v, want %v", phase, si+1, s.what, wires[0].name, k, s.leftOnly)
		}
		for wi, w := range wires[1:] {
			if g := got[wi+1][si]; g != got[0][si] {
				t.Errorf("%s, step %d %s: %s: got %v, %s %v", phase, si+1, s.what, w.name, g, wires[0].name, got[0][si])
			}
		}
	}
	for si, s := range steps {
		for wi, w := range wires {
			if got[wi][si] == dropped && w.sniff[1-s.from].await(s.frame, 0) {
				t.Errorf("%s, step %d %s: %s: arrived late, after it was called dropped", phase, si+1, s.what, w.name)
			}
		}
	}
	var b strings.Builder
	for si, s := range steps {
		fmt.Fprintf(&b, "%2d %-100s", si+1, s.what)
		for wi, w := range wires {
			fmt.Fprintf(&b, "  %s=%v", w.name, got[wi][si])
		}
		b.WriteByte('\n')
	}
	t.Logf("fates %s:\n%s", phase, b.String())
	return got
}
