package e2e

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	pt "github.com/statewire/statewire/packet/packettest"
)

// ctxMatchesRules uses the matches and targets that need more than the
// packet: -m limit (a burst, and a token spent by a rule whose later match
// fails), MARK and -m mark, CONNMARK set/save/restore with -m connmark
// across the two directions, the rest of -m conntrack, -m addrtype and
// -p udplite. Each rule is reached only by the frames of its own ports.
const ctxMatchesRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 6201 -m limit --limit 1/hour --limit-burst 3 -j ACCEPT
-A FORWARD -p udp -m udp --dport 6201 -j DROP
-A FORWARD -p udp -m udp --sport 5202 -m limit --limit 1/hour --limit-burst 2 -m udp --dport 6202 -j ACCEPT
-A FORWARD -p udp -m udp --sport 5202 -j DROP
-A FORWARD -p udp -m udp --sport 5222 --dport 6222 -m limit --limit 1/hour --limit-burst 2 -j ACCEPT
-A FORWARD -p udp -m udp --sport 5222 -j DROP
-A FORWARD -p udp -m udp --dport 6203 -j MARK --set-mark 0x5
-A FORWARD -p udp -m udp --dport 6203 -m ttl --ttl-lt 10 -j MARK --or-mark 0x10
-A FORWARD -p udp -m udp --dport 6203 -m mark --mark 0x15 -j DROP
-A FORWARD -p udp -m udp --dport 6204 -j MARK --set-mark 0x7
-A FORWARD -p udp -m udp --dport 6204 -m mark ! --mark 0x7 -j DROP
-A FORWARD -p udp -m udp --dport 6205 -m length --length 100:65535 -j CONNMARK --set-mark 0x9
-A FORWARD -p udp -m udp --sport 6205 -m connmark --mark 0x9 -j DROP
-A FORWARD -p udp -m udp --dport 6206 -m ttl --ttl-eq 33 -j MARK --set-mark 0x21
-A FORWARD -p udp -m udp --dport 6206 -j CONNMARK --save-mark
-A FORWARD -p udp -m udp --sport 6206 -j CONNMARK --restore-mark
-A FORWARD -p udp -m udp --sport 6206 -m mark --mark 0x21 -j DROP
-A FORWARD -p udp -m conntrack --ctorigdstport 6207 --ctdir REPLY -j DROP
-A FORWARD -p udp -m conntrack --ctorigdstport 6208 --ctstatus SEEN_REPLY -j DROP
-A FORWARD -p udp -m udp --dport 6209 -m conntrack --ctexpire 20:40 -j DROP
-A FORWARD -p udp -m udp --dport 6210 -m conntrack --ctstate NEW --ctstatus CONFIRMED -j DROP
-A FORWARD -p udp -m conntrack --ctproto udp --ctorigsrc 198.51.100.0/24 --ctrepldst 198.51.100.15 --ctorigdstport 6211 -j DROP
-A FORWARD -p udp -m udp --dport 6212 -m addrtype --dst-type MULTICAST -j DROP
-A FORWARD -p udp -m udp --dport 6213 -m addrtype ! --dst-type UNICAST -j DROP
-A FORWARD -p udplite -m multiport --dports 6214 -j DROP
-A FORWARD -p udp -m udp --dport 6216 -m recent --set --name r16 --mask 255.255.255.0
-A FORWARD -p udp -m udp --dport 6216 -m recent --update --seconds 60 --hitcount 3 --name r16 -j DROP
-A FORWARD -p udp -m udp --dport 6217 -m recent --remove --name r16 --rdest
-A FORWARD -p udp -m udp --dport 6218 -m recent ! --rcheck --name r16 -j DROP
COMMIT
`

// ctxFrame is a matchFrame with its IP protocol (17 unless set).
type ctxFrame struct {
	matchFrame
	proto uint8
}

func ctxMatchSteps() []spoofStep {
	const L, R = "198.51.100.15", "203.0.113.3"
	var id uint16 = 0x6700
	mk := func(f ctxFrame) spoofStep {
		id++
		if f.src == "" {
			f.src, f.dst = L, R
			if f.from == 1 {
				f.src, f.dst = R, L
			}
		}
		if f.ipLen == 0 {
			f.ipLen = 48
		}
		if f.ttl == 0 {
			f.ttl = 64
		}
		f.dmac, f.smac = spoofDstMAC, [2][6]byte{spoofLeftMAC, spoofRightMAC}[f.from]
		payload := make([]byte, f.ipLen-28)
		copy(payload, fmt.Sprintf("c%04x", id))
		fr := pt.UDP4(f.src, f.dst, f.sport, f.dport, payload)
		fr[22] = f.ttl
		binary.BigEndian.PutUint16(fr[18:20], id)
		copy(fr[0:6], f.dmac[:])
		copy(fr[6:12], f.smac[:])
		fr = pt.FixChecksums(fr)
		proto := "udp"
		if f.proto != 0 {
			// UDP-Lite: the same header, the length field read as the
			// checksum coverage (the whole datagram), and the UDP sum,
			// which covers the same bytes with protocol 136 in the
			// pseudo-header.
			proto = "udplite"
			fr[23] = f.proto
			fr = pt.FixChecksums(fr)
			fr[40], fr[41] = 0, 0
			sum := uint32(0)
			add := func(b []byte) {
				for i := 0; i+1 < len(b); i += 2 {
					sum += uint32(b[i])<<8 | uint32(b[i+1])
				}
				if len(b)%2 == 1 {
					sum += uint32(b[len(b)-1]) << 8
				}
			}
			add(fr[26:34])
			sum += uint32(f.proto) + uint32(len(fr)-34)
			add(fr[34:])
			for sum > 0xffff {
				sum = sum&0xffff + sum>>16
			}
			binary.BigEndian.PutUint16(fr[40:42], ^uint16(sum))
		}
		what := fmt.Sprintf("%s %s.%d>%s.%d from %c len %d ttl %d: %s", proto,
			f.src, f.sport, f.dst, f.dport, "AB"[f.from], f.ipLen, f.ttl, f.what)
		return spoofStep{what: what, from: f.from, frame: fr, leftOnly: f.want}
	}
	fw, dr := forwarded, dropped
	rep := func(port uint16, want fate, what string) ctxFrame {
		// The reply of the flow to port: from B, ports swapped.
		return ctxFrame{matchFrame: matchFrame{from: 1, sport: port, dport: 5000 + port%1000, want: want, what: what}}
	}
	s := []ctxFrame{
		{matchFrame: matchFrame{dport: 6201, want: fw, what: "limit burst 3: 1"}},
		{matchFrame: matchFrame{dport: 6201, want: fw, what: "limit burst 3: 2"}},
		{matchFrame: matchFrame{dport: 6201, want: fw, what: "limit burst 3: 3"}},
		{matchFrame: matchFrame{dport: 6201, want: dr, what: "limit burst 3: 4, no credit"}},
		{matchFrame: matchFrame{dport: 6201, want: dr, what: "limit burst 3: 5, no credit"}},
		{matchFrame: matchFrame{dport: 9202, want: dr, what: "limit before --dport: a token spent, dropped"}},
		{matchFrame: matchFrame{dport: 9202, want: dr, what: "limit before --dport: the second token spent, dropped"}},
		{matchFrame: matchFrame{dport: 6202, want: dr, what: "limit before --dport: no token left for the port"}},
		{matchFrame: matchFrame{dport: 9222, want: dr, what: "limit after --dport: no token spent"}},
		{matchFrame: matchFrame{dport: 9222, want: dr, what: "limit after --dport: no token spent"}},
		{matchFrame: matchFrame{dport: 6222, want: fw, what: "limit after --dport: the port has its tokens"}},
		{matchFrame: matchFrame{dport: 6203, want: fw, what: "MARK 0x5: -m mark 0x15 fails"}},
		{matchFrame: matchFrame{dport: 6203, ttl: 9, want: dr, what: "MARK 0x5, ttl < 10 ORs 0x10: -m mark 0x15"}},
		{matchFrame: matchFrame{dport: 6203, want: fw, what: "MARK 0x5 again: the mark is the packet's"}},
		{matchFrame: matchFrame{dport: 6204, want: fw, what: "MARK 0x7, ! -m mark 0x7"}},
		{matchFrame: matchFrame{dport: 6205, want: fw, what: "connmark: short original, no CONNMARK"}},
		rep(6205, fw, "connmark: reply, connection mark 0"),
		{matchFrame: matchFrame{dport: 6205, ipLen: 150, want: fw, what: "connmark: long original sets the connection mark 9"}},
		rep(6205, dr, "connmark: reply, connection mark 9"),
		{matchFrame: matchFrame{dport: 6205, want: fw, what: "connmark: short original again"}},
		rep(6205, dr, "connmark: reply, the mark stays"),
		{matchFrame: matchFrame{dport: 6206, want: fw, what: "save-mark: mark 0 saved"}},
		rep(6206, fw, "restore-mark: 0"),
		{matchFrame: matchFrame{dport: 6206, ttl: 33, want: fw, what: "save-mark: ttl 33 marks 0x21, saved"}},
		rep(6206, dr, "restore-mark: 0x21, -m mark drops"),
		{matchFrame: matchFrame{dport: 6206, want: fw, what: "save-mark: mark 0 saved over it"}},
		rep(6206, fw, "restore-mark: 0 again"),
		{matchFrame: matchFrame{dport: 6207, want: fw, what: "ctdir REPLY: original"}},
		rep(6207, dr, "ctdir REPLY: reply"),
		{matchFrame: matchFrame{dport: 6207, want: fw, what: "ctdir REPLY: original again"}},
		{matchFrame: matchFrame{dport: 6208, want: fw, what: "ctstatus SEEN_REPLY: not yet"}},
		{matchFrame: matchFrame{dport: 6208, want: fw, what: "ctstatus SEEN_REPLY: still not"}},
		rep(6208, dr, "ctstatus SEEN_REPLY: the reply itself sets it"),
		{matchFrame: matchFrame{dport: 6208, want: dr, what: "ctstatus SEEN_REPLY: original after the reply"}},
		{matchFrame: matchFrame{dport: 6209, want: fw, what: "ctexpire 20:40: the first packet sees 0"}},
		{matchFrame: matchFrame{dport: 6209, want: dr, what: "ctexpire 20:40: 30 s left"}},
		{matchFrame: matchFrame{dport: 6210, want: fw, what: "NEW and CONFIRMED: the first packet is unconfirmed"}},
		{matchFrame: matchFrame{dport: 6210, want: dr, what: "NEW and CONFIRMED: the second is NEW and confirmed"}},
		{matchFrame: matchFrame{dport: 6211, want: dr, what: "ctorigsrc/ctrepldst/ctproto/ctorigdstport"}},
		{matchFrame: matchFrame{dport: 6211, src: "198.51.100.25", dst: R, want: fw, what: "ctrepldst is not the source"}},
		{matchFrame: matchFrame{dport: 6212, want: fw, what: "addrtype: unicast destination"}},
		{matchFrame: matchFrame{dport: 6212, src: L, dst: "224.0.0.99", want: dr, what: "addrtype: multicast destination"}},
		{matchFrame: matchFrame{dport: 6212, src: L, dst: "239.1.2.3", want: dr, what: "addrtype: multicast destination"}},
		{matchFrame: matchFrame{dport: 6213, want: fw, what: "addrtype ! UNICAST: unicast"}},
		{matchFrame: matchFrame{dport: 6213, src: L, dst: "255.255.255.255", want: dr, what: "addrtype ! UNICAST: broadcast"}},
		{matchFrame: matchFrame{dport: 6214, want: dr, what: "udplite multiport"}, proto: 136},
		{matchFrame: matchFrame{dport: 6215, want: fw, what: "udplite another port"}, proto: 136},
		{matchFrame: matchFrame{dport: 6218, want: dr, what: "recent ! --rcheck: the source is not listed yet"}},
		{matchFrame: matchFrame{dport: 6216, want: fw, what: "recent --set, --update: 1 hit"}},
		{matchFrame: matchFrame{dport: 6216, sport: 5316, want: fw, what: "recent: another flow of the source, 2 hits"}},
		{matchFrame: matchFrame{dport: 6216, sport: 5416, src: "198.51.100.99", dst: R, want: dr, what: "recent: the same /24 (--mask), 3 hits"}},
		{matchFrame: matchFrame{dport: 6216, want: dr, what: "recent: 4 hits"}},
		{matchFrame: matchFrame{dport: 6218, want: fw, what: "recent ! --rcheck: the source is listed"}},
		{matchFrame: matchFrame{from: 1, dport: 6217, want: fw, what: "recent --remove --rdest: a flow from B to the listed /24"}},
		{matchFrame: matchFrame{dport: 6218, want: dr, what: "recent ! --rcheck: removed"}},
		{matchFrame: matchFrame{dport: 6216, want: fw, what: "recent: listed afresh, 1 hit"}},
		// A cacheable flow (MARK and -m mark only): the fast-path wire
		// takes its later frames; the per-packet flows before it must
		// still be judged on the slow path.
		{matchFrame: matchFrame{dport: 6204, want: fw, what: "cacheable flow again"}},
		{matchFrame: matchFrame{dport: 6204, want: fw, what: "cacheable flow, offered to the fast path"}},
		{matchFrame: matchFrame{dport: 6204, want: fw, what: "cacheable flow, by the fast path"}},
		{matchFrame: matchFrame{dport: 6204, want: fw, what: "cacheable flow, by the fast path"}},
		{matchFrame: matchFrame{dport: 6201, want: dr, what: "limit, after the pause: still no credit"}},
		rep(6205, dr, "connmark reply, after the pause"),
		{matchFrame: matchFrame{dport: 6203, ttl: 9, want: dr, what: "MARK ttl 9, after the pause"}},
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

// TestCtxMatchesAgainstKernel is TestMatchesAgainstKernel for
// ctxMatchesRules: the kernel bridge with br_netfilter and
// iptables-legacy-restore, statewire run on the slow path and with the
// XDP fast path; the same frames in the same order, every fate the
// kernel's and the step's.
func TestCtxMatchesAgainstKernel(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	if err != nil {
		testenv.Unavailable(t, "iptables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	bin := lab.StatewireBinary(t)
	wires := []*spoofWire{
		kernelWire(t, restore, ctxMatchesRules),
		statewireWire(t, bin, ctxMatchesRules, 1, false),
		statewireWire(t, bin, ctxMatchesRules, 1, true),
	}
	runFateSteps(t, wires, ctxMatchSteps(), "kernel vs statewire")
}
