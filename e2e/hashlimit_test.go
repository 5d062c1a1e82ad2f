package e2e

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	pt "github.com/statewire/statewire/packet/packettest"
)

// hashlimitRules: -m hashlimit per source (a burst of 2 each), per /24 and
// destination port (--hashlimit-above, a burst of 3), one bucket for the
// rule (no mode), a second rule naming the per-source table (it shares
// the first rule's buckets and settings), a table of at most 2 keys (a
// third source is dropped by the match itself, whatever the rule says),
// and a hashlimit written before --dport (it spends a token on a packet
// the port then refuses). The rates are 1/hour: nothing refills during the
// test, however slow the machine, so every fate depends only on the order
// of the frames.
const hashlimitRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 6301 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name hsrc -j ACCEPT
-A FORWARD -p udp -m udp --dport 6301 -j DROP
-A FORWARD -p udp -m udp --dport 6302 -m hashlimit --hashlimit-above 1/hour --hashlimit-burst 3 --hashlimit-mode srcip,dstport --hashlimit-srcmask 24 --hashlimit-name hnet -j DROP
-A FORWARD -p udp -m udp --dport 6303 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-name hall -j ACCEPT
-A FORWARD -p udp -m udp --dport 6303 -j DROP
-A FORWARD -p udp -m udp --dport 6304 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-name hsrc -j ACCEPT
-A FORWARD -p udp -m udp --dport 6304 -j DROP
-A FORWARD -p udp -m udp --dport 6305 -m hashlimit --hashlimit-above 1/hour --hashlimit-mode srcip --hashlimit-name hfull --hashlimit-htable-size 1 --hashlimit-htable-max 2 -j DROP
-A FORWARD -p udp -m udp --sport 5306 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name horder -m udp --dport 6306 -j ACCEPT
-A FORWARD -p udp -m udp --sport 5306 -j DROP
COMMIT
`

// hashlimitRules6 is the IPv6 file (ip6tables-legacy-restore, --rules6):
// a table per source /64, whose default masks are 128 bits.
const hashlimitRules6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 6321 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-srcmask 64 --hashlimit-name hsrc -j ACCEPT
-A FORWARD -p udp -m udp --dport 6321 -j DROP
COMMIT
`

func hashlimitSteps() []spoofStep {
	const L, R = "198.18.100.15", "198.19.113.3"
	var id uint16 = 0x6900
	fw, dr := forwarded, dropped
	type hf struct {
		src          string
		sport, dport uint16
		want         fate
		what         string
	}
	s := []hf{
		{L, 5301, 6301, fw, "per source, A: 1 of burst 2"},
		{"198.18.100.16", 5301, 6301, fw, "per source, B: 1"},
		{L, 5311, 6301, fw, "per source, A (another flow): 2"},
		{L, 5301, 6301, dr, "per source, A: 3, no credit"},
		{"198.18.100.16", 5301, 6301, fw, "per source, B: 2"},
		{"198.18.100.17", 5301, 6301, fw, "per source, C: 1"},
		{"198.18.100.16", 5301, 6301, dr, "per source, B: 3, no credit"},
		{L, 5302, 6302, fw, "per /24 and port, above: 1 of burst 3"},
		{"198.18.100.99", 5302, 6302, fw, "per /24 and port: the same /24, 2"},
		{"198.18.100.200", 5312, 6302, fw, "per /24 and port: the same /24, 3"},
		{L, 5302, 6302, dr, "per /24 and port: 4, above the limit"},
		{"198.18.101.1", 5302, 6302, fw, "per /24 and port: another /24, 1"},
		{"198.18.100.99", 5302, 6302, dr, "per /24 and port: the first /24, 5"},
		{L, 5303, 6303, fw, "no mode, one bucket: 1 of burst 2"},
		{"198.18.100.16", 5303, 6303, fw, "no mode: another source, 2"},
		{"198.18.101.7", 5313, 6303, dr, "no mode: a third source, 3, no credit"},
		{"198.18.100.17", 5304, 6304, fw, "table hsrc shared: C has 1 left of the first rule's burst 2"},
		{"198.18.100.17", 5304, 6304, dr, "table hsrc shared: C has none"},
		{"198.18.100.18", 5304, 6304, fw, "table hsrc shared: D, new, 1 of 2"},
		{"198.18.100.18", 5304, 6304, fw, "table hsrc shared: D, 2 of 2 (not the second rule's burst 1)"},
		{"198.18.100.18", 5301, 6301, dr, "table hsrc shared: D on the first rule, none left"},
		{L, 5305, 6305, fw, "table of at most 2 keys: A"},
		{"198.18.100.16", 5305, 6305, fw, "table of at most 2 keys: B"},
		{"198.18.100.17", 5305, 6305, dr, "table of at most 2 keys: C, no room (hotdrop)"},
		{L, 5305, 6305, fw, "table of at most 2 keys: A again, not above 1/hour burst 5"},
		{"198.18.100.17", 5315, 6305, dr, "table of at most 2 keys: C again, still no room"},
		{L, 5306, 9306, dr, "hashlimit before --dport: a token spent, the port refuses"},
		{L, 5306, 9306, dr, "hashlimit before --dport: the second token spent"},
		{L, 5306, 6306, dr, "hashlimit before --dport: no token left for the port"},
		{"198.18.100.16", 5306, 6306, fw, "hashlimit before --dport: another source has its tokens"},
		// IPv6: the table hsrc of ip6tables is not IPv4's.
		{"2001:db8:1::1", 5321, 6321, fw, "IPv6 per /64: 1 of burst 2"},
		{"2001:db8:1::2:0:2", 5321, 6321, fw, "IPv6 per /64: the same /64, 2"},
		{"2001:db8:1::3", 5331, 6321, dr, "IPv6 per /64: the same /64, 3, no credit"},
		{"2001:db8:1:1::1", 5321, 6321, fw, "IPv6 per /64: another /64, 1"},
		// A flow no hashlimit reads (every rule's port test fails
		// first): cacheable, so the fast-path wire takes its later
		// frames; the hashlimit flows must still be judged on the slow
		// path, frame by frame.
		{L, 5307, 6307, fw, "cacheable flow"},
		{L, 5307, 6307, fw, "cacheable flow, offered to the fast path"},
		{L, 5307, 6307, fw, "cacheable flow, by the fast path"},
		{L, 5307, 6307, fw, "cacheable flow, by the fast path"},
		{L, 5307, 6307, fw, "cacheable flow, by the fast path"},
		{L, 5307, 6307, fw, "cacheable flow, by the fast path"},
		{L, 5301, 6301, dr, "per source, A, at the end: still no credit"},
		{"198.18.100.17", 5301, 6301, dr, "per source, C, at the end: none (its second went through the shared rule)"},
		{"198.18.100.19", 5301, 6301, fw, "per source, E, at the end: 1 of 2"},
		{"198.18.100.19", 5301, 6301, fw, "per source, E, at the end: 2 of 2"},
		{"198.18.100.19", 5301, 6301, dr, "per source, E, at the end: none left"},
	}
	steps := make([]spoofStep, len(s))
	for i, f := range s {
		id++
		payload := []byte(fmt.Sprintf("h%04x-----------", id)) // unique bytes per frame
		dst := R
		var fr []byte
		if strings.Contains(f.src, ":") {
			dst = "2001:db8:2::3"
			fr = pt.UDP6(f.src, dst, f.sport, f.dport, payload)
		} else {
			fr = pt.UDP4(f.src, dst, f.sport, f.dport, payload)
			binary.BigEndian.PutUint16(fr[18:20], id)
		}
		copy(fr[0:6], spoofDstMAC[:])
		copy(fr[6:12], spoofLeftMAC[:])
		fr = pt.FixChecksums(fr)
		steps[i] = spoofStep{what: fmt.Sprintf("udp %s.%d>%s.%d: %s", f.src, f.sport, dst, f.dport, f.what), frame: fr, leftOnly: f.want}
	}
	return steps
}

// TestHashlimitAgainstKernel loads hashlimitRules and hashlimitRules6 into
// the kernel bridge with br_netfilter (iptables-legacy-restore,
// ip6tables-legacy-restore) and into `statewire run`
// with one worker (slow path only, and with the XDP fast path on), sends
// the same frames from several sources through all three and requires
// every frame's fate to be the kernel's and the step's: so many pass per
// key, per table, as in the kernel. With one worker statewire's tables are
// the kernel's; with W workers a key could pass up to W times (README),
// which a test cannot pin without choosing the workers' queues.
func TestHashlimitAgainstKernel(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	restore6, err6 := exec.LookPath("ip6tables-legacy-restore")
	if err != nil || err6 != nil {
		testenv.Unavailable(t, "iptables-legacy-restore or ip6tables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	bin := lab.StatewireBinary(t)
	// Registered first, so run last: after the statewire runs have
	// stopped and printed their totals. The two frames the full table
	// dropped have their own reason, the other drops are the rules'.
	var outs []*lab.SyncBuffer
	t.Cleanup(func() {
		for i, o := range outs {
			if s := o.String(); !strings.Contains(s, " hashlimit-full=2") {
				t.Errorf("statewire wire %d: the totals do not count 2 drops by the full table (hashlimit-full=2):\n%s", i+1, s)
			}
		}
	})
	slow, slowOut, _ := statewireWireOut(t, bin, hashlimitRules, hashlimitRules6, 1, false)
	fast, fastOut, _ := statewireWireOut(t, bin, hashlimitRules, hashlimitRules6, 1, true)
	outs = append(outs, slowOut, fastOut)
	wires := []*spoofWire{kernelWire46(t, restore, hashlimitRules, restore6, hashlimitRules6), slow, fast}
	runFateSteps(t, wires, hashlimitSteps(), "kernel vs statewire")
}
