package rules

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

const (
	portA uint8 = 0
	portB uint8 = 1
)

const (
	stInvalid     = statemachine.StateInvalid
	stNew         = statemachine.StateNew
	stEstablished = statemachine.StateEstablished
	stRelated     = statemachine.StateRelated
	stUntracked   = statemachine.StateUntracked
)

func addr(s string) packet.Addr { return netip.MustParseAddr(s).As16() }

func ipv(s string) uint8 {
	if netip.MustParseAddr(s).Is4() {
		return 4
	}
	return 6
}

func tcpPkt(src, dst string, sport, dport uint16, flags uint8) *packet.Packet {
	return &packet.Packet{IPVersion: ipv(src), Proto: packet.ProtoTCP, Src: addr(src), Dst: addr(dst),
		SrcPort: sport, DstPort: dport, TCP: packet.TCP{Flags: flags}}
}

func udpPkt(src, dst string, sport, dport uint16) *packet.Packet {
	return &packet.Packet{IPVersion: ipv(src), Proto: packet.ProtoUDP, Src: addr(src), Dst: addr(dst), SrcPort: sport, DstPort: dport}
}

func icmpPkt(src, dst string, typ, code uint8) *packet.Packet {
	p := &packet.Packet{IPVersion: ipv(src), Proto: packet.ProtoICMP, Src: addr(src), Dst: addr(dst), ICMP: packet.ICMP{Type: typ, Code: code}}
	if p.IPVersion == 6 {
		p.Proto = packet.ProtoICMPv6
	}
	return p
}

func frag(p *packet.Packet, off uint16) *packet.Packet {
	p.Fragment, p.FragOffset = true, off
	return p
}

// line returns the source line of the deciding rule, 0 for the policy.
func line(rs *RuleSet, i int32) int {
	if i < 0 || int(i) >= len(rs.src) {
		return 0
	}
	return rs.src[i].line
}

const (
	syn    = packet.TCPSyn
	ack    = packet.TCPAck
	synack = packet.TCPSyn | packet.TCPAck
)

type filterCase struct {
	name      string
	p         *packet.Packet
	st        statemachine.CtState
	in        uint8
	want      Action
	wantLine  int // 0: policy
	cacheable bool
}

func runFilter(t *testing.T, rs *RuleSet, cases []filterCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, c := rs.Filter(tc.p, tc.st, tc.in)
			if v.Action != tc.want || line(rs, v.Rule) != tc.wantLine {
				t.Errorf("got %v by line %d (%s), want %v by line %d", v.Action, line(rs, v.Rule), rs.RuleText(v.Rule), tc.want, tc.wantLine)
			}
			if c != tc.cacheable {
				t.Errorf("got cacheable %v, want %v", c, tc.cacheable)
			}
		})
	}
}

const statefulV4 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:from-a - [0:0]
:tcpchk - [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -p tcp -j tcpchk
-A FORWARD -m conntrack --ctstate NEW -m physdev --physdev-in ethA -j from-a
-A FORWARD -p icmp -m icmp --icmp-type echo-request -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type 3/4 -j ACCEPT
-A from-a -s 10.0.0.0/8 ! -d 10.9.0.0/16 -p tcp -m multiport --dports 22,80,8000:8100 -j ACCEPT
-A from-a -p udp -m udp --dport 1000:2000 ! --sport 53 -j ACCEPT
-A from-a -s 192.168.0.0/16 -j RETURN
-A from-a -p udp -j ACCEPT
-A tcpchk -p tcp -m tcp --tcp-flags ALL NONE -j DROP
-A tcpchk -p tcp -m tcp --tcp-flags SYN,FIN SYN,FIN -j DROP
-A tcpchk -m conntrack --ctstate NEW -p tcp ! --syn -j DROP
COMMIT
`

func TestFilterStateful(t *testing.T) {
	rs := mustLoad(t, statefulV4, FamilyIPv4)
	runFilter(t, rs, []filterCase{
		{"established reply from B", tcpPkt("172.16.0.1", "10.1.1.1", 22, 40000, ack), stEstablished, portB, Accept, 8, true},
		{"related udp", udpPkt("172.16.0.1", "10.1.1.1", 20, 40000), stRelated, portB, Accept, 8, true},
		{"invalid", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, ack), stInvalid, portA, Drop, 7, true},
		{"untracked hits policy", udpPkt("10.1.1.1", "172.16.0.1", 40000, 53), stUntracked, portA, Drop, 0, true},
		{"new syn from A via user chain", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, syn), stNew, portA, Accept, 13, false},
		{"new syn from B: policy", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, syn), stNew, portB, Drop, 0, false},
		{"new without syn", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, ack), stNew, portA, Drop, 19, false},
		{"null flags", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, 0), stNew, portA, Drop, 17, false},
		{"syn fin", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, syn|packet.TCPFin), stNew, portA, Drop, 18, false},
		{"negated destination", tcpPkt("10.1.1.1", "10.9.1.1", 40000, 22, syn), stNew, portA, Drop, 0, false},
		{"multiport range", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 8050, syn), stNew, portA, Accept, 13, false},
		{"multiport range end", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 8100, syn), stNew, portA, Accept, 13, false},
		{"multiport miss", tcpPkt("10.1.1.1", "172.16.0.1", 40000, 8101, syn), stNew, portA, Drop, 0, false},
		{"source outside cidr", tcpPkt("11.1.1.1", "172.16.0.1", 40000, 22, syn), stNew, portA, Drop, 0, false},
		{"udp port range", udpPkt("10.1.1.1", "172.16.0.1", 5000, 1500), stNew, portA, Accept, 14, true},
		{"udp range low edge", udpPkt("10.1.1.1", "172.16.0.1", 5000, 1000), stNew, portA, Accept, 14, true},
		{"udp negated sport falls to catch-all", udpPkt("10.1.1.1", "172.16.0.1", 53, 1500), stNew, portA, Accept, 16, true},
		{"udp return to FORWARD", udpPkt("192.168.1.1", "172.16.0.1", 53, 1500), stNew, portA, Drop, 0, true},
		{"udp from 192.168 sport ok", udpPkt("192.168.1.1", "172.16.0.1", 5000, 1500), stNew, portA, Accept, 14, true},
		{"echo request", icmpPkt("172.16.0.1", "10.1.1.1", 8, 0), stNew, portB, Accept, 11, true},
		{"echo reply as new", icmpPkt("172.16.0.1", "10.1.1.1", 0, 0), stNew, portB, Drop, 0, true},
		{"frag needed related", icmpPkt("198.18.0.1", "10.1.1.1", 3, 4), stRelated, portB, Accept, 8, false},
		{"frag needed code match", icmpPkt("198.18.0.1", "10.1.1.1", 3, 4), stNew, portB, Accept, 12, false},
		{"port unreachable code miss", icmpPkt("198.18.0.1", "10.1.1.1", 3, 3), stNew, portB, Drop, 0, false},
		{"non-first fragment skips L4 rules", frag(udpPkt("10.1.1.1", "172.16.0.1", 5000, 1500), 1480), stNew, portA, Accept, 16, false},
		{"first fragment is normal", frag(udpPkt("10.1.1.1", "172.16.0.1", 5000, 1500), 0), stNew, portA, Accept, 14, true},
		{"non-ip", &packet.Packet{EtherType: 0x0806}, stNew, portA, Accept, 0, true},
		{"bogus port index", udpPkt("10.1.1.1", "172.16.0.1", 5000, 1500), stNew, 7, Drop, 0, true},
		{"ipv6 has no rules here", udpPkt("2001:db8::1", "2001:db8::2", 5000, 1500), stNew, portA, Accept, 0, true},
	})
}

func TestFilterIPv6(t *testing.T) {
	const v6 = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -s 2001:db8:bad::/48 -j DROP
-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT
-A FORWARD -p ipv6-icmp -m icmp6 ! --icmpv6-type echo-request -j DROP
-A FORWARD -d 2001:db8::1 -p tcp -m tcp --dport 443 -j ACCEPT
-A FORWARD -d 2001:db8::/32 -j DROP
COMMIT
`
	rs := mustLoad(t, v6, FamilyIPv6)
	runFilter(t, rs, []filterCase{
		{"bad source", tcpPkt("2001:db8:bad:1::5", "2001:db8::1", 1, 443, syn), stNew, portA, Drop, 3, true},
		{"neighbour solicitation", icmpPkt("fe80::1", "ff02::1:ff00:1", 135, 0), stNew, portA, Accept, 4, true},
		{"echo request passes negation", icmpPkt("2001:db8:1::1", "2001:db9::1", 128, 0), stNew, portA, Accept, 0, true},
		{"echo reply dropped", icmpPkt("2001:db8:1::1", "2001:db9::1", 129, 0), stNew, portA, Drop, 5, true},
		{"host + port", tcpPkt("2001:db8:1::1", "2001:db8::1", 1, 443, syn), stNew, portA, Accept, 6, true},
		{"host other port", tcpPkt("2001:db8:1::1", "2001:db8::1", 1, 80, syn), stNew, portA, Drop, 7, true},
		{"outside prefix", tcpPkt("2001:db8:1::1", "2001:db9::1", 1, 80, syn), stNew, portA, Accept, 0, true},
		{"ipv4 not affected", tcpPkt("10.0.0.1", "10.0.0.2", 1, 80, syn), stNew, portA, Accept, 0, true},
	})
}

func TestFilterFamilies(t *testing.T) {
	var l Loader
	if err := l.Load("v4.rules", strings.NewReader("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"), FamilyIPv4); err != nil {
		t.Fatal(err)
	}
	if err := l.Load("v6.rules", strings.NewReader("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -j DROP\nCOMMIT\n"), FamilyIPv6); err != nil {
		t.Fatal(err)
	}
	rs, err := l.Compile(testPorts)
	if err != nil {
		t.Fatal(err)
	}
	runFilter(t, rs, []filterCase{
		{"v4 policy drop", udpPkt("10.0.0.1", "10.0.0.2", 1, 2), stNew, portA, Drop, 0, true},
		{"v6 udp accepted", udpPkt("2001:db8::1", "2001:db8::2", 1, 2), stNew, portA, Accept, 0, true},
		{"v6 tcp dropped", tcpPkt("2001:db8::1", "2001:db8::2", 1, 2, syn), stNew, portA, Drop, 3, true},
	})

	// One file for both: -p icmp and IPv4 addresses make a rule IPv4 only,
	// -p ipv6-icmp IPv6 only; the rest applies to both.
	const both = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p icmp -j DROP
-A FORWARD -p ipv6-icmp -j DROP
-A FORWARD -s 10.0.0.0/8 -j DROP
-A FORWARD -p tcp -m tcp --dport 22 -j DROP
COMMIT
`
	rs = mustLoad(t, both, FamilyBoth)
	weird := icmpPkt("2001:db8::1", "2001:db8::2", 8, 0)
	weird.Proto = packet.ProtoICMP // ICMPv4 inside IPv6: the v4-only rule must not apply
	runFilter(t, rs, []filterCase{
		{"v4 icmp", icmpPkt("11.0.0.1", "11.0.0.2", 8, 0), stNew, portA, Drop, 3, true},
		{"v6 icmpv6", icmpPkt("2001:db8::1", "2001:db8::2", 128, 0), stNew, portA, Drop, 4, true},
		{"icmp proto in v6", weird, stNew, portA, Accept, 0, true},
		{"v4 source", udpPkt("10.0.0.1", "11.0.0.2", 1, 2), stNew, portA, Drop, 5, true},
		{"v4 ssh", tcpPkt("11.0.0.1", "11.0.0.2", 1, 22, syn), stNew, portA, Drop, 6, true},
		{"v6 ssh", tcpPkt("2001:db8::1", "2001:db8::2", 1, 22, syn), stNew, portA, Drop, 6, true},
		{"v6 other", tcpPkt("2001:db8::1", "2001:db8::2", 1, 23, syn), stNew, portA, Accept, 0, true},
	})
	var b strings.Builder
	if err := rs.Save(&b, FamilyIPv6); err != nil {
		t.Fatal(err)
	}
	if want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -p ipv6-icmp -j DROP\n-A FORWARD -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n"; b.String() != want {
		t.Errorf("Save(ipv6) got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestFilterChains(t *testing.T) {
	const in = `*filter
:FORWARD DROP [0:0]
:jumped - [0:0]
:gone - [0:0]
:deep - [0:0]
-A FORWARD -p tcp -j jumped
-A FORWARD -p udp -g gone
-A FORWARD -p tcp -j ACCEPT
-A FORWARD -p udp -j ACCEPT
-A FORWARD -p 47 -j jumped
-A jumped -p tcp -m tcp --dport 22 -j DROP
-A jumped -p tcp -m tcp --dport 23 -j RETURN
-A jumped -p tcp -m tcp --dport 24 -j deep
-A jumped -p tcp -m tcp --dport 24 -j ACCEPT
-A jumped -p 47
-A gone -p udp -m udp --dport 53 -j ACCEPT
-A deep -j RETURN
-A deep -j DROP
COMMIT
`
	rs := mustLoad(t, in, FamilyIPv4)
	runFilter(t, rs, []filterCase{
		{"drop in jumped chain", tcpPkt("1.1.1.1", "2.2.2.2", 1, 22, syn), stNew, portA, Drop, 11, true},
		{"return continues after jump", tcpPkt("1.1.1.1", "2.2.2.2", 1, 23, syn), stNew, portA, Accept, 8, true},
		{"fall off jumped chain", tcpPkt("1.1.1.1", "2.2.2.2", 1, 80, syn), stNew, portA, Accept, 8, true},
		{"nested return", tcpPkt("1.1.1.1", "2.2.2.2", 1, 24, syn), stNew, portA, Accept, 14, true},
		{"goto accept", udpPkt("1.1.1.1", "2.2.2.2", 1, 53), stNew, portA, Accept, 16, true},
		{"goto end returns past FORWARD: policy", udpPkt("1.1.1.1", "2.2.2.2", 1, 54), stNew, portA, Drop, 0, true},
		{"rule without target continues", &packet.Packet{IPVersion: 4, Proto: 47}, stNew, portA, Drop, 0, true},
	})
}

func TestFilterInterfaces(t *testing.T) {
	const in = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -o ethB -p tcp -j ACCEPT
-A FORWARD -m physdev ! --physdev-out ethA -p udp -j ACCEPT
-A FORWARD -i eth+ -p 47 -j ACCEPT
-A FORWARD ! -i ethB -p 50 -j ACCEPT
-A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT
-A FORWARD -m physdev --physdev-is-bridged --physdev-is-in --physdev-is-out -p 51 -j ACCEPT
-A FORWARD -i ethA -o ethA -j ACCEPT
-A FORWARD -j DROP
COMMIT
`
	rs := mustLoad(t, in, FamilyIPv4)
	gre := &packet.Packet{IPVersion: 4, Proto: 47}
	esp := &packet.Packet{IPVersion: 4, Proto: 50}
	ah := &packet.Packet{IPVersion: 4, Proto: 51}
	runFilter(t, rs, []filterCase{
		{"out B means in A", tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, syn), stNew, portA, Accept, 3, true},
		{"out A: no", tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, syn), stNew, portB, Drop, 10, true},
		{"not out A", udpPkt("1.1.1.1", "2.2.2.2", 1, 2), stNew, portA, Accept, 4, true},
		{"not out A from B", udpPkt("1.1.1.1", "2.2.2.2", 1, 2), stNew, portB, Drop, 10, true},
		{"wildcard A", gre, stNew, portA, Accept, 5, true},
		{"wildcard B", gre, stNew, portB, Accept, 5, true},
		{"not in B", esp, stNew, portA, Accept, 6, true},
		{"not in B from B", esp, stNew, portB, Drop, 10, true},
		{"is-bridged always true in FORWARD", ah, stNew, portB, Accept, 8, true},
	})
}

func TestRaw(t *testing.T) {
	const in = `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:helpers - [0:0]
-A PREROUTING -m physdev --physdev-in ethB -p udp -m udp --dport 53 -j CT --notrack
-A PREROUTING -p udp -m udp --dport 53 -j NOTRACK
-A PREROUTING -j helpers
-A PREROUTING -s 198.51.100.0/24 -j DROP
-A helpers -p tcp -m tcp --dport 21 -j CT --helper ftp
-A helpers -p tcp -m tcp --dport 21 -j CT --helper irc
-A helpers -p udp -m udp --dport 69 -j CT --helper tftp
-A helpers -p udp -m udp --dport 10080 -j CT --helper amanda
-A helpers -p tcp -m tcp --dport 6667 -j CT --helper irc
-A helpers -m conntrack --ctstate INVALID -p tcp -m tcp --dport 7 -j NOTRACK
-A helpers -m physdev --physdev-is-bridged -j DROP
-A helpers -p tcp -m tcp --dport 9 -j ACCEPT
-A helpers -p tcp -m tcp --dport 9 -j CT --helper ftp
COMMIT
`
	rs := mustLoad(t, in, FamilyIPv4)
	tests := []struct {
		name string
		p    *packet.Packet
		in   uint8
		want RawResult
		line int
	}{
		{"ct notrack from B", udpPkt("1.1.1.1", "2.2.2.2", 1, 53), portB, RawResult{NoTrack: true}, 5},
		{"notrack from A", udpPkt("1.1.1.1", "2.2.2.2", 1, 53), portA, RawResult{NoTrack: true}, 6},
		{"ftp helper, first CT wins", tcpPkt("1.1.1.1", "2.2.2.2", 1, 21, syn), portA, RawResult{Helper: HelperFTP}, 9},
		{"tftp", udpPkt("1.1.1.1", "2.2.2.2", 1, 69), portA, RawResult{Helper: HelperTFTP}, 11},
		{"amanda", udpPkt("1.1.1.1", "2.2.2.2", 1, 10080), portB, RawResult{Helper: HelperAmanda}, 12},
		{"irc", tcpPkt("1.1.1.1", "2.2.2.2", 1, 6667, syn), portA, RawResult{Helper: HelperIRC}, 13},
		{"state is INVALID in raw", tcpPkt("1.1.1.1", "2.2.2.2", 1, 7, syn), portA, RawResult{NoTrack: true}, 14},
		{"is-bridged false in raw, nothing", tcpPkt("1.1.1.1", "2.2.2.2", 1, 80, syn), portA, RawResult{Passive: true}, 0},
		{"helper set, then dropped", tcpPkt("198.51.100.7", "2.2.2.2", 1, 21, syn), portA, RawResult{Helper: HelperFTP, Drop: true}, 8},
		{"raw ACCEPT ends the table", tcpPkt("1.1.1.1", "2.2.2.2", 1, 9, syn), portA, RawResult{Passive: true}, 16},
		{"ipv6 no raw rules", udpPkt("2001:db8::1", "2001:db8::2", 1, 53), portB, RawResult{Passive: true}, 0},
		{"non-ip", &packet.Packet{}, portA, RawResult{}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := rs.Raw(tc.p, tc.in)
			l := line(rs, got.Rule)
			got.Rule = 0
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			// A raw ACCEPT leaves no result, so only results name a rule.
			if tc.want != (RawResult{}) && tc.want != (RawResult{Passive: true}) && l != tc.line {
				t.Errorf("got rule line %d, want %d", l, tc.line)
			}
		})
	}

	pol := mustLoad(t, "*raw\n:PREROUTING DROP [0:0]\n-A PREROUTING -p udp -j ACCEPT\nCOMMIT\n", FamilyIPv4)
	if got := pol.Raw(tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, syn), portA); !got.Drop || got.Rule != PolicyRule {
		t.Errorf("raw DROP policy: got %+v, want Drop by policy", got)
	}
	if got := pol.Raw(udpPkt("1.1.1.1", "2.2.2.2", 1, 2), portA); got.Drop {
		t.Errorf("raw ACCEPT: got %+v, want no drop", got)
	}
	// Passive: nothing done and nothing per-packet read on the way.
	flags := mustLoad(t, "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --syn -j NOTRACK\n-A PREROUTING -p tcp --dport 21 -j CT --helper ftp\nCOMMIT\n", FamilyIPv4)
	for _, c := range []struct {
		name string
		rs   *RuleSet
		p    *packet.Packet
		want bool
	}{
		{"raw rules, none acting", pol, udpPkt("1.1.1.1", "2.2.2.2", 1, 2), true},
		{"raw DROP", pol, tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, syn), false},
		{"read the TCP flags", flags, tcpPkt("1.1.1.1", "2.2.2.2", 1, 80, ack), false},
		{"helper", flags, tcpPkt("1.1.1.1", "2.2.2.2", 1, 21, ack), false},
		{"not TCP: flags never read", flags, udpPkt("1.1.1.1", "2.2.2.2", 1, 80), true},
		{"empty rule set", Empty(), tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, ack), true},
	} {
		if got := c.rs.Raw(c.p, portA).Passive; got != c.want {
			t.Errorf("%s: Passive got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestEmpty(t *testing.T) {
	rs := Empty()
	for _, p := range []*packet.Packet{tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, syn), udpPkt("2001:db8::1", "2001:db8::2", 1, 2)} {
		if v, c := rs.Filter(p, stNew, portA); v != (Verdict{Action: Accept, Rule: PolicyRule}) || !c {
			t.Errorf("Filter on empty set: got %+v %v, want ACCEPT by policy, cacheable", v, c)
		}
		if r := rs.Raw(p, portA); r != (RawResult{Rule: PolicyRule, Passive: true}) {
			t.Errorf("Raw on empty set: got %+v, want nothing done (passive)", r)
		}
	}
	var l Loader
	rs2, err := l.Compile(testPorts)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := rs2.Filter(tcpPkt("1.1.1.1", "2.2.2.2", 1, 2, syn), stNew, portA); v.Action != Accept {
		t.Errorf("empty loader: got %v, want ACCEPT", v.Action)
	}
	if rs2.Generation() <= rs.Generation() {
		t.Errorf("generation: got %d after %d, want increasing", rs2.Generation(), rs.Generation())
	}
	if rs.Generation() == 0 {
		t.Errorf("generation 0 handed out")
	}
}

func TestAllocs(t *testing.T) {
	rs := mustLoad(t, statefulV4, FamilyIPv4)
	raw := mustLoad(t, wrap("raw", "-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp"), FamilyIPv4)
	p := tcpPkt("10.1.1.1", "172.16.0.1", 40000, 8050, syn)
	if n := testing.AllocsPerRun(1000, func() { rs.Filter(p, stNew, portA) }); n != 0 {
		t.Errorf("Filter: got %v allocs per run, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { raw.Raw(p, portA) }); n != 0 {
		t.Errorf("Raw: got %v allocs per run, want 0", n)
	}
}

func TestFilterMultiport(t *testing.T) {
	const in = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp -m multiport --sports 53,123 -j DROP
-A FORWARD -p tcp -m multiport --ports 25,110:111 -j DROP
-A FORWARD -p tcp -m multiport ! --dports 1:1000 -j DROP
COMMIT
`
	rs := mustLoad(t, in, FamilyIPv4)
	runFilter(t, rs, []filterCase{
		{"sports hit", udpPkt("1.1.1.1", "2.2.2.2", 123, 5000), stNew, portA, Drop, 3, true},
		{"sports miss on dport", udpPkt("1.1.1.1", "2.2.2.2", 5000, 123), stNew, portA, Accept, 0, true},
		{"ports by source", tcpPkt("1.1.1.1", "2.2.2.2", 111, 5000, ack), stEstablished, portA, Drop, 4, true},
		{"ports by destination", tcpPkt("1.1.1.1", "2.2.2.2", 5000, 25, syn), stNew, portA, Drop, 4, true},
		{"negated dports hit", tcpPkt("1.1.1.1", "2.2.2.2", 5000, 1001, syn), stNew, portA, Drop, 5, true},
		{"negated dports miss", tcpPkt("1.1.1.1", "2.2.2.2", 5000, 1000, syn), stNew, portA, Accept, 0, true},
	})
}

func TestLoadFiles(t *testing.T) {
	rs, err := LoadFiles("testdata/bridge.rules", "testdata/bridge6.rules", testPorts)
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Ports(); got != testPorts {
		t.Errorf("Ports() = %v, want %v", got, testPorts)
	}
	if r := rs.Raw(udpPkt("10.0.0.1", "10.0.1.1", 5000, 69), portA); r.Helper != HelperTFTP {
		t.Errorf("v4 tftp: got helper %v, want tftp", r.Helper)
	}
	if v, _ := rs.Filter(tcpPkt("2001:db8:a::1", "2001:db8:b::1", 5000, 443, syn), stNew, portA); v.Action != Accept || line(rs, v.Rule) != 11 {
		t.Errorf("v6 https from A: got %v line %d, want ACCEPT line 11", v.Action, line(rs, v.Rule))
	}
	// A single file serves both families.
	rs, err = LoadFiles("testdata/bridge.rules", "", testPorts)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := rs.Filter(udpPkt("2001:db8::1", "2001:db8::2", 5000, 69), stNew, portA); v.Action != Accept || line(rs, v.Rule) != 22 {
		t.Errorf("v6 tftp via v4 file: got %v line %d, want ACCEPT line 22", v.Action, line(rs, v.Rule))
	}
	if _, err := LoadFiles("testdata/missing.rules", "", testPorts); err == nil {
		t.Errorf("missing file: got no error")
	}
}
