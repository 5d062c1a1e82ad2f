package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

var allCtStates = []statemachine.CtState{stInvalid, stNew, stEstablished, stRelated, stUntracked}

func TestCachedVerdictLayout(t *testing.T) {
	for _, st := range allCtStates {
		for in := uint8(0); in < 2; in++ {
			for _, a := range []Action{Accept, Drop} {
				c := CacheVerdict(a, st, in)
				if c == 0 {
					t.Fatalf("CacheVerdict(%v, %v, %d) = 0, the value for nothing cached", a, st, in)
				}
				if got := uint8(c) & 1; (got == 1) != (a == Accept) {
					t.Errorf("CacheVerdict(%v, %v, %d) bit 0 = %d", a, st, in, got)
				}
				if got := statemachine.CtState(c>>1) & allStates; got != st {
					t.Errorf("CacheVerdict(%v, %v, %d) state bits = %v, want %v", a, st, in, got, st)
				}
				if got := uint8(c) >> cachedPortShift; got != in {
					t.Errorf("CacheVerdict(%v, %v, %d) port bit = %d", a, st, in, got)
				}
				for _, st2 := range allCtStates {
					for in2 := uint8(0); in2 < 2; in2++ {
						got, ok := c.Lookup(st2, in2)
						wantOK := st2 == st && in2 == in
						if ok != wantOK || (ok && got != a) {
							t.Errorf("CacheVerdict(%v, %v, %d).Lookup(%v, %d) = %v, %v; want hit %v", a, st, in, st2, in2, got, ok, wantOK)
						}
					}
				}
			}
		}
	}
	// The raw-passive mark changes no lookup; only a passive ACCEPT goes
	// to the fast path, as the byte the XDP program builds (bits 0..6).
	for _, st := range allCtStates {
		for in := uint8(0); in < 2; in++ {
			acc, drop := CacheVerdict(Accept, st, in), CacheVerdict(Drop, st, in)
			if a, ok := acc.WithRawPassive().Lookup(st, in); !ok || a != Accept {
				t.Errorf("passive ACCEPT (%v, %d): Lookup got %v %v", st, in, a, ok)
			}
			if got, want := acc.WithRawPassive().FastPath(), uint8(1|uint8(st)<<1|in<<6); got != want {
				t.Errorf("passive ACCEPT (%v, %d): FastPath got %#x, want %#x", st, in, got, want)
			}
			if acc.FastPath() != 0 || drop.WithRawPassive().FastPath() != 0 {
				t.Errorf("(%v, %d): a non-passive ACCEPT or a DROP went to the fast path", st, in)
			}
		}
	}
	if _, ok := CachedVerdict(0).Lookup(stNew, 0); ok {
		t.Error("the zero CachedVerdict hit")
	}
}

// randomRules writes a random FORWARD chain (and one user chain) over the
// matches a cached verdict must respect: ports, states, addresses, L4
// ports, TCP flags, fragments and ICMP types, with negations; REJECT and
// LOG, and the packet mark (MARK, -m mark), which Filter's context holds.
func randomRules(r *rand.Rand) string {
	var b strings.Builder
	policy := []string{"ACCEPT", "DROP"}[r.IntN(2)]
	fmt.Fprintf(&b, "*filter\n:FORWARD %s [0:0]\n:user - [0:0]\n", policy)
	for chain, n := range map[string]int{"FORWARD": 1 + r.IntN(8), "user": r.IntN(4)} {
		for range n {
			m := randomMatches(r)
			b.WriteString("-A " + chain + m)
			if r.IntN(6) == 0 {
				// The packet mark (match_mark.go) needs no more
				// context than Filter gives: it starts at 0.
				b.WriteString(" -m mark --mark 0x1/0x1")
			}
			if r.IntN(8) == 0 && !strings.Contains(m, "-m connlimit") { // one stateful match per rule
				b.WriteString(randomHashlimit(r)) // match_hashlimit_test.go
			}
			targets := []string{"ACCEPT", "DROP", "RETURN", "", "REJECT", "LOG", "MARK --or-mark 1"}
			if chain == "FORWARD" {
				targets = append(targets, "user", "user")
			}
			switch tg := targets[r.IntN(len(targets))]; tg {
			case "":
			case "user":
				b.WriteString([]string{" -j user", " -g user"}[r.IntN(2)])
			default:
				b.WriteString(" -j " + tg)
			}
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func randomMatches(r *rand.Rand) string {
	var b strings.Builder
	neg := func() string {
		if r.IntN(4) == 0 {
			return " !"
		}
		return ""
	}
	if r.IntN(2) == 0 {
		dir := []string{"--physdev-in", "--physdev-out"}[r.IntN(2)]
		b.WriteString(" -m physdev" + neg() + " " + dir + " " + []string{"ethA", "ethB"}[r.IntN(2)])
	}
	if r.IntN(3) == 0 {
		b.WriteString(neg() + " -i " + []string{"ethA", "ethB", "eth+"}[r.IntN(3)])
	}
	if r.IntN(2) == 0 {
		var sts []string
		for _, s := range []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"} {
			if r.IntN(3) == 0 {
				sts = append(sts, s)
			}
		}
		if len(sts) == 0 {
			sts = []string{"NEW"}
		}
		b.WriteString(" -m conntrack" + neg() + " --ctstate " + strings.Join(sts, ","))
	}
	if r.IntN(3) == 0 {
		b.WriteString(neg() + " -s " + []string{"10.0.0.0/24", "10.0.0.1", "10.0.1.0/24"}[r.IntN(3)])
	}
	if r.IntN(3) == 0 {
		b.WriteString(neg() + " -d " + []string{"10.0.0.0/24", "10.0.1.2", "10.0.1.0/24"}[r.IntN(3)])
	}
	if r.IntN(4) == 0 {
		b.WriteString(neg() + " -f")
	}
	if r.IntN(4) == 0 { // -m set: fixed per flow direction (ipset_test.go's randomSets)
		b.WriteString(" -m set" + neg() + " --match-set " + randomSetArgs[r.IntN(len(randomSetArgs))])
	}
	// The matches of ext.go: iprange is fixed per flow direction, the rest
	// read this frame (length, TTL, TOS, MACs).
	if r.IntN(4) == 0 {
		b.WriteString(" -m iprange" + neg() + " --src-range " + []string{"10.0.0.1-10.0.0.1", "10.0.0.2-10.0.1.2", "10.0.0.0-10.0.0.255"}[r.IntN(3)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m iprange" + neg() + " --dst-range 10.0.0.2-10.0.1.9")
	}
	if r.IntN(5) == 0 {
		b.WriteString(" -m length" + neg() + " --length " + []string{"40:60", "100", "0:1000"}[r.IntN(3)])
	}
	if r.IntN(5) == 0 {
		b.WriteString(" -m ttl" + []string{neg() + " --ttl-eq 64", " --ttl-lt 10", " --ttl-gt 100"}[r.IntN(3)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m tos" + neg() + " --tos " + []string{"0x10/0x3f", "Minimize-Cost", "0x00/0xfc"}[r.IntN(3)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m dscp" + neg() + []string{" --dscp 0x2e", " --dscp-class AF11", " --dscp 0"}[r.IntN(3)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m mac" + neg() + " --mac-source " + []string{"0a:00:00:00:00:01", "0A:00:00:00:00:02"}[r.IntN(2)])
	}
	if r.IntN(8) == 0 {
		// Without a context every packet is counted once more than
		// the (empty) counts: above 0 matches, upto 0 does not.
		b.WriteString(" -m connlimit" + []string{neg() + " --connlimit-above 0", neg() + " --connlimit-upto 1", " --connlimit-above 1 --connlimit-daddr"}[r.IntN(3)])
	}
	if r.IntN(6) == 0 {
		b.WriteString(" -m pkttype" + neg() + " --pkt-type " + []string{"unicast", "broadcast", "multicast", "host"}[r.IntN(4)])
	}
	switch r.IntN(4) {
	case 0:
		b.WriteString(" -p tcp")
		if r.IntN(2) == 0 {
			b.WriteString(" -m tcp" + neg() + " --dport " + []string{"80", "1000:2000", "22"}[r.IntN(3)])
		}
		switch r.IntN(3) {
		case 0:
			b.WriteString(neg() + " --syn")
		case 1:
			b.WriteString(" -m tcp" + neg() + " --tcp-flags SYN,ACK,FIN,RST " + []string{"ACK", "SYN", "FIN,ACK", "NONE"}[r.IntN(4)])
		}
	case 1:
		b.WriteString(" -p udp")
		if r.IntN(2) == 0 {
			b.WriteString(" -m udp" + neg() + " --sport " + []string{"53", "1000:2000"}[r.IntN(2)])
		}
		if r.IntN(2) == 0 {
			b.WriteString(" -m multiport" + neg() + " --dports 53,80,1500:1600")
		}
	case 2:
		b.WriteString(" -p icmp")
		if r.IntN(2) == 0 {
			b.WriteString(" -m icmp" + neg() + " --icmp-type " + []string{"echo-request", "echo-reply", "3/3", "any", "8/1"}[r.IntN(5)])
		}
	}
	return b.String()
}

// randomPacket returns an IPv4 packet of one of a few flows, with varying
// per-packet fields (TCP flags, fragments, ICMP types and codes).
func randomPacket(r *rand.Rand) *packet.Packet {
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.1.2"}
	src, dst := addrs[r.IntN(3)], addrs[r.IntN(3)]
	ports := []uint16{53, 80, 1500}
	sport, dport := ports[r.IntN(len(ports))], ports[r.IntN(len(ports))]
	var p *packet.Packet
	switch r.IntN(3) {
	case 0:
		flags := []uint8{syn, synack, ack, packet.TCPFin | ack, packet.TCPRst, 0, packet.TCPPsh | ack}[r.IntN(7)]
		p = tcpPkt(src, dst, sport, dport, flags)
	case 1:
		p = udpPkt(src, dst, sport, dport)
	default:
		typ := []uint8{8, 0, 3, 11, 13, 14}[r.IntN(6)]
		p = icmpPkt(src, dst, typ, uint8(r.IntN(2)))
		p.ICMP.ID = uint16(r.IntN(2))
	}
	// Per-packet fields the flow key does not hold.
	p.IPLen = []uint32{40, 60, 100, 576, 1500}[r.IntN(5)]
	p.TTL = []uint8{1, 9, 64, 128, 255}[r.IntN(5)]
	p.TOS = []uint8{0, 0x10, 0x28, 0xb8, 0x02}[r.IntN(5)]
	macs := [][6]byte{{0x0a, 0, 0, 0, 0, 1}, {0x0a, 0, 0, 0, 0, 2}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0, 0x5e, 0, 0, 1}}
	copy(p.MAC[0:6], macs[r.IntN(4)][:])
	copy(p.MAC[6:12], macs[r.IntN(2)][:])
	switch r.IntN(8) {
	case 0:
		frag(p, 0) // first fragment: has the L4 header
	case 1:
		frag(p, 185) // later fragment: judged without the cache
	}
	return p
}

// TestCachedVerdictMatchesFresh checks the claim CachedVerdict documents:
// a verdict Filter calls cacheable, stored for the packet's (flow,
// direction) and looked up as the pipeline does, equals a fresh evaluation
// for every later packet that would hit it — on either port, in any state.
func TestCachedVerdictMatchesFresh(t *testing.T) {
	const ruleSets, packets = 200, 3000
	var hits, fills int
	for seed := range uint64(ruleSets) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		text := randomRules(r)
		rs, err := load(t, text, FamilyIPv4)
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, text)
		}
		// The entry keeps one byte per flow direction; every byte it could
		// hold is kept here, so that every would-be hit is checked.
		type slot struct {
			tu flowtable.Tuple
			st statemachine.CtState
			in uint8
		}
		cache := map[slot]CachedVerdict{}
		for range packets {
			p := randomPacket(r)
			tu, ok := flowtable.TupleFromPacket(p)
			// What the pipeline caches: tracked packets with a tuple;
			// later fragments and ICMP errors are judged afresh.
			usesCache := ok && !(p.Fragment && p.FragOffset != 0)
			st := allCtStates[r.IntN(len(allCtStates))]
			in := uint8(r.IntN(2))
			var logs LogHits
			fresh, cacheable := rs.FilterLog(p, st, in, &logs)
			if !usesCache {
				continue
			}
			c := cache[slot{tu, st, in}]
			if a, hit := c.Lookup(st, in); hit {
				hits++
				// A REJECT's answer and a LOG line are per packet: a
				// cached verdict must never stand in for them.
				if a != fresh.Action || fresh.Reject != RejectNone || logs.N != 0 {
					t.Fatalf("seed %d: %+v in %v on port %d: cached %v (%#x), fresh evaluation %v by %q\nrules:\n%s",
						seed, *p, st, in, a, uint8(c), fresh.Action, rs.RuleText(fresh.Rule), text)
				}
				continue
			}
			if cacheable {
				fills++
				cache[slot{tu, st, in}] = CacheVerdict(fresh.Action, st, in)
			}
		}
	}
	if hits < ruleSets*packets/10 || fills == 0 {
		t.Errorf("the test exercised the cache too little: %d hits, %d fills", hits, fills)
	}
	t.Logf("%d rule sets, %d cache hits checked against a fresh evaluation, %d fills", ruleSets, hits, fills)
}

// TestCachedVerdictIngressPort is the bypass of issue 17 in miniature: the
// README's left-only policy caches ACCEPT for a NEW flow from port A; the
// same tuple arriving on port B must not reuse it.
func TestCachedVerdictIngressPort(t *testing.T) {
	rs := mustLoad(t, `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -m physdev --physdev-in ethA -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`, FamilyIPv4)
	p := udpPkt("198.18.7.1", "198.18.7.2", 4000, 5000)
	v, cacheable := rs.Filter(p, stNew, portA)
	if v.Action != Accept || !cacheable {
		t.Fatalf("NEW from A: got %v cacheable %v, want ACCEPT cacheable", v.Action, cacheable)
	}
	c := CacheVerdict(v.Action, stNew, portA)
	if a, hit := c.Lookup(stNew, portB); hit {
		t.Fatalf("the verdict cached for port A hit for port B: %v", a)
	}
	if v, _ := rs.Filter(p, stNew, portB); v.Action != Drop {
		t.Errorf("NEW from B: got %v, want DROP", v.Action)
	}
}
