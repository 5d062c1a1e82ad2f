package rules

import (
	"errors"
	"strings"
	"testing"
)

// The saved forms below are what iptables-legacy-save and
// ip6tables-legacy-save 1.8.9 printed after iptables-legacy-restore read
// the input lines (run in a scratch namespace while writing this test).
var targetSaveCases = []struct {
	fam     Family
	in, out string
}{
	{FamilyIPv4, "-A FORWARD -j REJECT", "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with net-unreach", "-A FORWARD -j REJECT --reject-with icmp-net-unreachable"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with icmp-host-unreachable", "-A FORWARD -j REJECT --reject-with icmp-host-unreachable"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with proto-unreach", "-A FORWARD -j REJECT --reject-with icmp-proto-unreachable"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with icmp-net-prohibited", "-A FORWARD -j REJECT --reject-with icmp-net-prohibited"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with host-prohib", "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with admin-prohib", "-A FORWARD -j REJECT --reject-with icmp-admin-prohibited"},
	{FamilyIPv4, "-A FORWARD -p tcp -j REJECT --reject-with tcp-reset", "-A FORWARD -p tcp -j REJECT --reject-with tcp-reset"},
	{FamilyIPv4, "-A FORWARD -p tcp -j REJECT --reject-with tcp-rst", "-A FORWARD -p tcp -j REJECT --reject-with tcp-reset"},
	{FamilyIPv4, "-A FORWARD -p tcp -j REJECT --reject-with tcp", "-A FORWARD -p tcp -j REJECT --reject-with tcp-reset"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with icmp-port", "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"},
	{FamilyIPv4, "-A FORWARD -j REJECT --reject-with port", "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"},
	{FamilyIPv4, "-A user -j REJECT", "-A user -j REJECT --reject-with icmp-port-unreachable"},
	{FamilyIPv4, "-A FORWARD -j LOG", "-A FORWARD -j LOG"},
	{FamilyIPv4, `-A FORWARD -j LOG --log-prefix "a b\"c " --log-level 4`, `-A FORWARD -j LOG --log-prefix "a b\"c "`},
	{FamilyIPv4, "-A FORWARD -j LOG --log-prefix x --log-level info --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode",
		`-A FORWARD -j LOG --log-prefix "x" --log-level 6 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode`},
	{FamilyIPv4, "-A FORWARD -j LOG --log-level warning", "-A FORWARD -j LOG"},
	{FamilyIPv4, "-A FORWARD -j LOG --log-level 7", "-A FORWARD -j LOG --log-level 7"},
	{FamilyIPv4, "-A FORWARD -j LOG --log-prefix 012345678901234567890123456789", `-A FORWARD -j LOG --log-prefix "01234567890123456789012345678"`},
	{FamilyIPv6, "-A FORWARD -j REJECT", "-A FORWARD -j REJECT --reject-with icmp6-port-unreachable"},
	{FamilyIPv6, "-A FORWARD -j REJECT --reject-with no-route", "-A FORWARD -j REJECT --reject-with icmp6-no-route"},
	{FamilyIPv6, "-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited", "-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited"},
	{FamilyIPv6, "-A FORWARD -j REJECT --reject-with addr-unreach", "-A FORWARD -j REJECT --reject-with icmp6-addr-unreachable"},
	{FamilyIPv6, "-A FORWARD -j REJECT --reject-with adm-prohibited", "-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited"},
	{FamilyIPv6, "-A FORWARD -j REJECT --reject-with policy-fail", "-A FORWARD -j REJECT --reject-with icmp6-policy-fail"},
	{FamilyIPv6, "-A FORWARD -j REJECT --reject-with reject-route", "-A FORWARD -j REJECT --reject-with icmp6-reject-route"},
	{FamilyIPv6, "-A FORWARD -p tcp -j REJECT --reject-with tcp-reset", "-A FORWARD -p tcp -j REJECT --reject-with tcp-reset"},
}

func TestTargetSave(t *testing.T) {
	for _, c := range targetSaveCases {
		rs, err := load(t, wrap("filter", c.in), c.fam)
		if err != nil {
			t.Errorf("%s (%s): %v", c.in, c.fam, err)
			continue
		}
		var b strings.Builder
		if err := rs.Save(&b, c.fam); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "\n"+c.out+"\n") {
			t.Errorf("%s (%s): saved\n%s\nwant the line %q", c.in, c.fam, b.String(), c.out)
		}
		// What Save prints reads back to the same line.
		rs2, err := load(t, b.String(), c.fam)
		if err != nil {
			t.Errorf("%s: reading the saved form: %v", c.in, err)
			continue
		}
		var b2 strings.Builder
		rs2.Save(&b2, c.fam)
		if b2.String() != b.String() {
			t.Errorf("%s: save, load, save changed it:\n%s\nthen\n%s", c.in, b.String(), b2.String())
		}
	}
}

func TestTargetErrors(t *testing.T) {
	cases := []struct {
		fam      Family
		text     string
		want     string
		sentinel error
	}{
		// What iptables 1.8.9 and the kernel refuse.
		{FamilyIPv4, wrap("filter", "-A FORWARD -j REJECT --reject-with tcp-reset"), "tcp-reset needs -p tcp", ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -p udp -j REJECT --reject-with tcp-reset"), "tcp-reset needs -p tcp", ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD ! -p tcp -j REJECT --reject-with tcp-reset"), "tcp-reset needs -p tcp", ErrSyntax},
		{FamilyIPv6, wrap("filter", "-A FORWARD -j REJECT --reject-with tcp-reset"), "tcp-reset needs -p tcp", ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -j REJECT --reject-with icmp-echo-reply"), `unknown reject type "icmp-echo-reply"`, ErrUnknown},
		{FamilyIPv6, wrap("filter", "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"), `reject type "icmp-port-unreachable" is not for ipv6`, ErrSyntax},
		{FamilyIPv6, wrap("filter", "-A FORWARD -j REJECT --reject-with not-neighbour"), `unknown reject type "not-neighbour"`, ErrUnknown},
		{FamilyIPv4, wrap("raw", "-A PREROUTING -j REJECT"), "REJECT is valid only in the filter table", ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -j LOG --log-level 8"), `log level "8" unknown`, ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -j ACCEPT --reject-with tcp-reset"), `option "--reject-with" needs -j REJECT`, ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -j REJECT --log-prefix x"), `option "--log-prefix" needs -j LOG`, ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -j LOG --log-uid --log-uid"), `given twice`, ErrSyntax},
		{FamilyIPv4, wrap("filter", "-A FORWARD -j REJECT --reject-with port --reject-with port"), `given twice`, ErrSyntax},
		{FamilyIPv4, wrap("raw", "-A PREROUTING -j LOG"), "LOG in the raw table is not supported", ErrUnsupported},
	}
	for _, c := range cases {
		_, err := load(t, c.text, c.fam)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, c.sentinel) {
			t.Errorf("%q: got %v, want an error with %q wrapping %v", c.text, err, c.want, c.sentinel)
		}
	}
}

// In a file for both families the reject type picks the family, as the
// ICMP protocols do: an icmp-* name is IPv4 only, an icmp6-* one IPv6
// only, a name both tables know serves both with each family's answer.
func TestRejectBothFamilies(t *testing.T) {
	rs, err := load(t, wrap("filter", strings.Join([]string{
		"-A FORWARD -p udp --dport 1 -j REJECT --reject-with icmp-host-prohibited",
		"-A FORWARD -p udp --dport 2 -j REJECT --reject-with icmp6-adm-prohibited",
		"-A FORWARD -p udp --dport 3 -j REJECT --reject-with port-unreach",
		"-A FORWARD -p tcp --dport 4 -j REJECT --reject-with tcp-reset",
		"-A FORWARD -p udp --dport 5 -j REJECT",
	}, "\n")), FamilyBoth)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		p    string
		port uint16
		tcp  bool
		want RejectWith
	}{
		{"10.0.0.1", 1, false, RejectHostProhib},
		{"2001:db8::1", 1, false, RejectNone},
		{"10.0.0.1", 2, false, RejectNone},
		{"2001:db8::1", 2, false, Reject6AdmProhib},
		{"10.0.0.1", 3, false, RejectPortUnreach},
		{"2001:db8::1", 3, false, Reject6PortUnreach},
		{"10.0.0.1", 4, true, RejectTCPReset},
		{"2001:db8::1", 4, true, RejectTCPReset},
		{"10.0.0.1", 5, false, RejectPortUnreach},
		{"2001:db8::1", 5, false, Reject6PortUnreach},
	}
	for _, c := range cases {
		dst := "10.0.0.2"
		if strings.Contains(c.p, ":") {
			dst = "2001:db8::2"
		}
		p := udpPkt(c.p, dst, 9, c.port)
		if c.tcp {
			p = tcpPkt(c.p, dst, 9, c.port, syn)
		}
		v, cacheable := rs.Filter(p, stNew, portA)
		if v.Reject != c.want {
			t.Errorf("%s port %d: got reject %v, want %v", c.p, c.port, v.Reject, c.want)
		}
		if c.want != RejectNone && (v.Action != Drop || cacheable) {
			t.Errorf("%s port %d: got %v cacheable=%v, want DROP, not cacheable", c.p, c.port, v.Action, cacheable)
		}
		if c.want == RejectNone && (v.Action != Accept || !cacheable) {
			t.Errorf("%s port %d: got %v cacheable=%v, want ACCEPT by policy, cacheable", c.p, c.port, v.Action, cacheable)
		}
	}
	if RejectHostProhib.ICMPCode() != 10 || Reject6AdmProhib.ICMPCode() != 1 || Reject6PortUnreach.ICMPCode() != 4 ||
		RejectAdminProhib.ICMPCode() != 13 || !Reject6NoRoute.IPv6() || RejectPortUnreach.IPv6() {
		t.Errorf("ICMP codes or families wrong")
	}
}

// LOG does not decide: the walk goes on, and the packets that matched a
// LOG rule (only those) have an uncacheable verdict, with the rules
// reported in order.
func TestLogHits(t *testing.T) {
	rs, err := load(t, wrap("filter", strings.Join([]string{
		"-A FORWARD -p tcp --dport 22 -j LOG --log-prefix \"ssh \"",
		"-A FORWARD -p tcp --dport 22 -j user",
		"-A FORWARD -p tcp --dport 80 -j ACCEPT",
		"-A user -j LOG --log-prefix \"user \" --log-level debug",
		"-A user -j DROP",
	}, "\n")), FamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var logs LogHits
	v, cacheable := rs.FilterLog(tcpPkt("10.0.0.1", "10.0.0.2", 1000, 22, syn), stNew, portA, &logs)
	if v.Action != Drop || cacheable || logs.N != 2 {
		t.Fatalf("port 22: got %v cacheable=%v, %d lines; want DROP, not cacheable, 2 LOG rules", v.Action, cacheable, logs.N)
	}
	if l := rs.Log(logs.Rule[0]); l == nil || l.Prefix != "ssh " || l.Level != 4 {
		t.Errorf("first LOG: got %+v, want prefix \"ssh \" level 4", l)
	}
	if l := rs.Log(logs.Rule[1]); l == nil || l.Prefix != "user " || l.Level != 7 {
		t.Errorf("second LOG: got %+v, want prefix \"user \" level 7", l)
	}
	v, cacheable = rs.FilterLog(tcpPkt("10.0.0.1", "10.0.0.2", 1000, 80, syn), stNew, portA, &logs)
	if v.Action != Accept || !cacheable || logs.N != 0 {
		t.Errorf("port 80: got %v cacheable=%v, %d lines; want ACCEPT, cacheable, none (reset from the last call)", v.Action, cacheable, logs.N)
	}
	if rs.Log(int32(len(rs.src))) != nil || rs.Log(PolicyRule) != nil {
		t.Errorf("Log of a non-LOG index is not nil")
	}
	pk := tcpPkt("10.0.0.1", "10.0.0.2", 1000, 22, syn)
	if n := testing.AllocsPerRun(1000, func() { rs.FilterLog(pk, stNew, portA, &logs) }); n != 0 {
		t.Errorf("FilterLog allocates %v times per call", n)
	}
}

// A file for both families saves a REJECT that answers both in the words
// it was written with, so it reads back answering both.
func TestRejectBothSave(t *testing.T) {
	for _, line := range []string{
		"-A FORWARD -p udp -j REJECT",
		"-A FORWARD -p udp -j REJECT --reject-with port-unreach",
		"-A FORWARD -p tcp -j REJECT --reject-with tcp-reset",
	} {
		rs, err := load(t, wrap("filter", line), FamilyBoth)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		rs.Save(&b, FamilyBoth)
		rs2, err := load(t, b.String(), FamilyBoth)
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range []string{"10.0.0.1", "2001:db8::1"} {
			dst := "10.0.0.2"
			if strings.Contains(src, ":") {
				dst = "2001:db8::2"
			}
			p := udpPkt(src, dst, 1, 2)
			if strings.Contains(line, "tcp") {
				p = tcpPkt(src, dst, 1, 2, syn)
			}
			v1, _ := rs.Filter(p, stNew, portA)
			v2, _ := rs2.Filter(p, stNew, portA)
			if v1 != v2 || v1.Reject == RejectNone {
				t.Errorf("%s, %s: got %+v, after save and load %+v (saved:\n%s)", line, src, v1, v2, b.String())
			}
		}
	}
}
