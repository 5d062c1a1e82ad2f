package rules

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/ipset"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// benchSets returns an `ipset save` text with two sets of 100 000 entries:
// bench-ip (hash:ip, addresses in 10.64.0.0/10) and bench-net (hash:net,
// 12 500 networks of each of eight prefix lengths, /17 to /31, from
// 32.0.0.0), so a lookup that misses probes eight prefix lengths.
func benchSets() string {
	var b strings.Builder
	b.WriteString("create bench-ip hash:ip family inet hashsize 65536 maxelem 200000\n")
	for i := range 100_000 {
		a := 0x0a400000 + uint32(i)*7
		fmt.Fprintf(&b, "add bench-ip %d.%d.%d.%d\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
	}
	b.WriteString("create bench-net hash:net family inet hashsize 65536 maxelem 200000\n")
	for i := range 100_000 {
		bits := 17 + 2*(i%8) // 17, 19, ... 31
		a := 0x20000000 + uint32(i/8)<<(32-bits)
		fmt.Fprintf(&b, "add bench-net %d.%d.%d.%d/%d\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff, bits)
	}
	return b.String()
}

// bench1000 is a FORWARD chain of 1000 rules: 990 address/port rules that
// a packet from 198.18/15 fails at its first test, eight -m set rules
// (source and destination in each 100 000-entry set) spread through them,
// then the state rule and the NEW rule for port 80 at the very end, so a
// packet judged from the start walks all 1000.
func bench1000() string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	sets := []string{"bench-ip src", "bench-net dst", "bench-net src", "bench-ip dst"}
	for i := range 998 {
		if i%125 == 62 {
			fmt.Fprintf(&b, "-A FORWARD -m set --match-set %s -j DROP\n", sets[(i/125)%4])
			continue
		}
		fmt.Fprintf(&b, "-A FORWARD -s 10.%d.%d.0/24 -p tcp -m tcp --dport %d -j DROP\n", i/250, i%250, 1000+i)
	}
	b.WriteString("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
	b.WriteString("-A FORWARD -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT\n")
	b.WriteString("COMMIT\n")
	return b.String()
}

func loadBench1000(b *testing.B) *RuleSet {
	b.Helper()
	ss, err := ipset.Parse("bench.ipset", strings.NewReader(benchSets()))
	if err != nil {
		b.Fatal(err)
	}
	if ss.Get("bench-ip").Len() != 100_000 || ss.Get("bench-net").Len() != 100_000 {
		b.Fatalf("sets of %d and %d entries, want 100000", ss.Get("bench-ip").Len(), ss.Get("bench-net").Len())
	}
	var l Loader
	if err := l.Load("bench.rules", strings.NewReader(bench1000()), FamilyIPv4); err != nil {
		b.Fatal(err)
	}
	l.SetIPSets(ss)
	rs, err := l.Compile(testPorts)
	if err != nil {
		b.Fatal(err)
	}
	if rs.NumRules() != 1000 {
		b.Fatalf("%d rules, want 1000", rs.NumRules())
	}
	return rs
}

// BenchmarkFilter1000RulesSets is the first-packet evaluation of a
// connection's packet under the 1000-rule set with 100 000-entry ipsets:
// Filter walks all 1000 rules (eight set lookups, each a miss) to the NEW
// rule at the end. A packet whose verdict is cached skips this entirely
// (bridge's BenchmarkPipelineEstablished10kRules1000Sets).
func BenchmarkFilter1000RulesSets(b *testing.B) {
	rs := loadBench1000(b)
	p := tcpPkt("198.18.0.1", "198.19.0.1", 40000, 80, packet.TCPSyn)
	if v, c := rs.Filter(p, statemachine.StateNew, portA); v.Action != Accept || v.Rule != 999 || !c {
		b.Fatalf("got %v by rule %d (cacheable %v), want ACCEPT by rule 999, cacheable", v.Action, v.Rule, c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rs.Filter(p, statemachine.StateNew, portA)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkSetLookup is one -m set test, a miss and a hit, in each
// 100 000-entry set (hash:net probes up to its eight prefix lengths).
func BenchmarkSetLookup(b *testing.B) {
	ss, err := ipset.Parse("bench.ipset", strings.NewReader(benchSets()))
	if err != nil {
		b.Fatal(err)
	}
	p := tcpPkt("198.18.0.1", "198.19.0.1", 40000, 80, packet.TCPSyn)
	hit := map[string]*packet.Packet{
		"bench-ip":  tcpPkt("10.64.0.7", "198.19.0.1", 40000, 80, packet.TCPSyn),
		"bench-net": tcpPkt("32.0.0.5", "198.19.0.1", 40000, 80, packet.TCPSyn), // in a /17: the last length tried
	}
	for _, name := range []string{"bench-ip", "bench-net"} {
		s := ss.Get(name)
		if !s.Test(hit[name], ipset.Dir{Src: 1, Dims: 1}, false) || s.Test(p, ipset.Dir{Src: 1, Dims: 1}, false) {
			b.Fatalf("%s: the hit address misses or the miss address hits", name)
		}
		for _, c := range []struct {
			what string
			p    *packet.Packet
		}{{"miss", p}, {"hit", hit[name]}} {
			b.Run(name+"/"+c.what, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					s.Test(c.p, ipset.Dir{Src: 1, Dims: 1}, false)
				}
			})
		}
	}
}
