package rules

import (
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// bench20 is a 20-rule FORWARD set of the usual shape: state rules first,
// then per-service NEW rules, some in a user chain.
const bench20 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:svc - [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -s 198.51.100.0/24 -j DROP
-A FORWARD -d 203.0.113.0/24 -j DROP
-A FORWARD -p tcp -m tcp --tcp-flags ALL NONE -j DROP
-A FORWARD -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type 3/4 -j ACCEPT
-A FORWARD -m physdev --physdev-in ethB -m conntrack --ctstate NEW -j DROP
-A FORWARD -p tcp -j svc
-A FORWARD -p udp -m udp --dport 53 -j ACCEPT
-A FORWARD -p udp -m udp --dport 123 -j ACCEPT
-A FORWARD -p udp -m multiport --dports 500,4500 -j ACCEPT
-A svc -d 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A svc -d 10.0.0.2/32 -p tcp -m tcp --dport 25 -j ACCEPT
-A svc -p tcp -m multiport --dports 80,443,8080 -j ACCEPT
-A svc -p tcp -m tcp --dport 3306 -s 10.1.0.0/16 -j ACCEPT
-A svc -p tcp -m tcp --dport 5432 -s 10.1.0.0/16 -j ACCEPT
-A svc -p tcp -m tcp --dport 6379 -j DROP
-A svc -p tcp -m tcp --dport 1024:65535 -j RETURN
-A svc -j DROP
COMMIT
`

func benchFilter(b *testing.B, p *packet.Packet, st statemachine.CtState, in uint8) {
	rs := mustLoad(b, bench20, FamilyIPv4)
	if rs.NumRules() != 20 {
		b.Fatalf("got %d rules, want 20", rs.NumRules())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rs.Filter(p, st, in)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// Established: decided by rule 2, the common case when not cached.
func BenchmarkFilterEstablished(b *testing.B) {
	benchFilter(b, tcpPkt("10.0.0.1", "10.2.0.1", 443, 50000, packet.TCPAck), statemachine.StateEstablished, portB)
}

// NEW HTTPS: through FORWARD into svc, accepted at rule 15 of 20.
func BenchmarkFilterNewDeep(b *testing.B) {
	benchFilter(b, tcpPkt("10.2.0.1", "10.0.0.9", 50000, 443, packet.TCPSyn), statemachine.StateNew, portA)
}

// NEW UDP that walks every rule (svc skipped) to the DROP policy.
func BenchmarkFilterPolicy(b *testing.B) {
	benchFilter(b, udpPkt("10.2.0.1", "10.0.0.9", 50000, 9999), statemachine.StateNew, portA)
}

func BenchmarkRawNone(b *testing.B) {
	rs := mustLoad(b, bench20, FamilyIPv4)
	p := tcpPkt("10.2.0.1", "10.0.0.9", 50000, 443, packet.TCPSyn)
	b.ReportAllocs()
	for b.Loop() {
		rs.Raw(p, portA)
	}
}

func BenchmarkRawHelper(b *testing.B) {
	rs := mustLoad(b, wrap("raw", "-A PREROUTING -p udp -m udp --dport 53 -j NOTRACK\n-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp"), FamilyIPv4)
	p := tcpPkt("10.2.0.1", "10.0.0.9", 50000, 21, packet.TCPSyn)
	b.ReportAllocs()
	for b.Loop() {
		rs.Raw(p, portA)
	}
}
