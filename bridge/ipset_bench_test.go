package bridge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/ipset"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
)

// rules1000Sets is the rule set of rules' BenchmarkFilter1000RulesSets: 1000
// FORWARD rules with eight -m set rules on two 100 000-entry sets (hash:ip
// and hash:net), the ESTABLISHED rule 999th, so an uncached established
// packet would walk 999 rules.
func rules1000Sets(b *testing.B) *rules.RuleSet {
	b.Helper()
	var sets strings.Builder
	sets.WriteString("create bench-ip hash:ip family inet hashsize 65536 maxelem 200000\n")
	for i := range 100_000 {
		a := 0x0a400000 + uint32(i)*7
		fmt.Fprintf(&sets, "add bench-ip %d.%d.%d.%d\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
	}
	sets.WriteString("create bench-net hash:net family inet hashsize 65536 maxelem 200000\n")
	for i := range 100_000 {
		bits := 17 + 2*(i%8)
		a := 0x20000000 + uint32(i/8)<<(32-bits)
		fmt.Fprintf(&sets, "add bench-net %d.%d.%d.%d/%d\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff, bits)
	}
	ss, err := ipset.Parse("bench.ipset", strings.NewReader(sets.String()))
	if err != nil {
		b.Fatal(err)
	}
	var r strings.Builder
	r.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	names := []string{"bench-ip src", "bench-net dst", "bench-net src", "bench-ip dst"}
	for i := range 998 {
		if i%125 == 62 {
			fmt.Fprintf(&r, "-A FORWARD -m set --match-set %s -j DROP\n", names[(i/125)%4])
			continue
		}
		fmt.Fprintf(&r, "-A FORWARD -s 10.%d.%d.0/24 -p tcp -m tcp --dport %d -j DROP\n", i/250, i%250, 1000+i)
	}
	r.WriteString("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
	r.WriteString("-A FORWARD -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n")
	var l rules.Loader
	if err := l.Load("bench.rules", strings.NewReader(r.String()), rules.FamilyIPv4); err != nil {
		b.Fatal(err)
	}
	l.SetIPSets(ss)
	rs, err := l.Compile([2]string{"ethA", "ethB"})
	if err != nil {
		b.Fatal(err)
	}
	if rs.NumRules() != 1000 {
		b.Fatalf("%d rules, want 1000", rs.NumRules())
	}
	return rs
}

// BenchmarkPipelineEstablished10kRules1000Sets is BenchmarkPipelineEstablished10k
// under rules1000Sets: every packet's verdict is cached in its flow entry,
// so the 1000 rules and the set lookups cost nothing per packet (compare
// rules' BenchmarkFilter1000RulesSets, the cost of judging one uncached).
func BenchmarkPipelineEstablished10kRules1000Sets(b *testing.B) {
	const n = 10_000
	s := DefaultSettings()
	s.VerifyChecksum = false
	s.Rules = rules1000Sets(b)
	pl := newTestPipeline(b, s, n+n/4)
	frames := make([][]byte, n)
	for i := range n {
		src := fmt.Sprintf("198.18.%d.%d", 1+(i>>16)&0x7f, (i>>8)&0xff)
		dst := fmt.Sprintf("198.19.%d.%d", (i>>8)&0xff, i&0xff)
		sport, dport := uint16(1024+i%50000), uint16(80)
		syn := pt.TCP4(src, dst, sport, dport, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535})
		synack := pt.TCP4(dst, src, dport, sport, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535})
		ack := pt.TCP4(src, dst, sport, dport, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535})
		for _, f := range [][]byte{syn, synack, ack} {
			if r := pl.Process(f, 0, PortA, sec); r.Verdict != Accept {
				b.Fatalf("flow %d: handshake dropped: %+v", i, r)
			}
		}
		frames[i] = append(ack, make([]byte, 60-len(ack))...)
	}
	stream := arrivalStream(frames)
	b.ReportAllocs()
	b.ResetTimer()
	next := 0
	for range b.N {
		r := pl.Process(stream[next], 0, PortA, 2*sec)
		if next++; next == len(stream) {
			next = 0
		}
		if r.Verdict != Accept {
			b.Fatal("dropped an established packet")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}
