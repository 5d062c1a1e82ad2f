package rules

import (
	"errors"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
)

// TestExtSaveForm: each new match loads from what iptables-legacy-save
// 1.8.9 printed for it (the input spelling on the left) and saves in that
// canonical form.
func TestExtSaveForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"-m iprange --src-range 10.0.0.1-10.0.0.9 ! --dst-range 10.0.1.1-10.0.1.5", ""},
		{"-m iprange --src-range 10.0.0.5", "-m iprange --src-range 10.0.0.5-10.0.0.5"},
		{"-m iprange --src-range 2001:db8::1-2001:db8::ff", ""},
		{"-m mac ! --mac-source 0A:00:00:00:00:01", "-m mac ! --mac-source 0a:00:00:00:00:01"},
		{"-m length ! --length 100:200", ""},
		{"-m length --length 300", ""},
		{"-m length --length :50", "-m length --length 0:50"},
		{"-m pkttype ! --pkt-type broadcast", ""},
		{"-m pkttype --pkt-type host", "-m pkttype --pkt-type unicast"},
		{"-m tos --tos Minimize-Delay", "-m tos --tos 0x10/0x3f"},
		{"-m tos ! --tos 0x20/0xfc", ""},
		{"-m dscp --dscp-class EF", "-m dscp --dscp 0x2e"},
		{"-m dscp ! --dscp 10", "-m dscp ! --dscp 0x0a"},
		{"-m ttl ! --ttl-eq 64", ""},
		{"-m ttl --ttl-lt 5", ""},
		{"-m ttl --ttl-gt 200", ""},
		{"-m hl ! --hl-eq 64", ""},
	}
	for _, tc := range tests {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		rs := mustLoad(t, wrap("filter", "-A FORWARD "+tc.in+" -j DROP"), FamilyBoth)
		if got := saveString(t, rs, FamilyBoth); !strings.Contains(got, "-A FORWARD "+want+" -j DROP\n") {
			t.Errorf("%q saved as\n%s\nwant %q", tc.in, got, want)
		}
	}
}

func TestExtParseErrors(t *testing.T) {
	for _, in := range []string{
		"-m ttl ! --ttl-lt 5", // iptables: "--ttl-lt" cannot be inverted
		"-m hl ! --hl-gt 5",
		"--ttl-eq 5",
		"-m iprange --src-range 10.0.0.9-10.0.0.1",
		"-m iprange --src-range 10.0.0.1-2001:db8::1",
		"-m mac --mac-source 0a:00:00:00:01",
		"-m length --length 9:3",
		"-m length --length 70000",
		"-m pkttype --pkt-type otherhost",
		"-m tos --tos 0x100",
		"-m dscp --dscp 64",
		"-m dscp --dscp-class XX",
		"-m ttl --ttl-eq 256",
		"-s 10.0.0.0/8 -m hl --hl-eq 5",
		"-s 2001:db8::/32 -m ttl --ttl-eq 5",
		"-m conntrack ! --ctdir REPLY", // --ctdir cannot be inverted
		"-m conntrack --ctstatus BOGUS",
	} {
		_, err := load(t, wrap("filter", "-A FORWARD "+in+" -j DROP"), FamilyBoth)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != 6 {
			t.Errorf("%q: got %v, want a *ParseError on line 6", in, err)
		}
	}
}

func ext4(src, dst string, ttl, tos uint8, iplen uint32, dmac, smac [6]byte) *packet.Packet {
	p := udpPkt(src, dst, 1000, 2000)
	p.TTL, p.TOS, p.IPLen = ttl, tos, iplen
	copy(p.MAC[:6], dmac[:])
	copy(p.MAC[6:], smac[:])
	return p
}

// TestExtMatch checks each match's value and negation against the kernel
// modules' tests (xt_iprange, xt_mac, xt_length, xt_pkttype with the bridge's
// pkt_type, xt_dscp's tos and dscp, xt_hl), and that only iprange leaves the
// verdict cacheable.
func TestExtMatch(t *testing.T) {
	uni := [6]byte{0x0a, 0, 0, 0, 0, 2}
	h1 := [6]byte{0x0a, 0, 0, 0, 0, 1}
	bc := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mc := [6]byte{0x01, 0, 0x5e, 0, 0, 1}
	base := func() *packet.Packet { return ext4("10.0.0.5", "10.0.1.1", 64, 0, 100, uni, h1) }
	tests := []struct {
		rule      string
		p         func(*packet.Packet)
		match     bool
		cacheable bool
	}{
		{"-m iprange --src-range 10.0.0.1-10.0.0.5", nil, true, true},
		{"-m iprange --src-range 10.0.0.6-10.0.0.9", nil, false, true},
		{"-m iprange ! --src-range 10.0.0.6-10.0.0.9", nil, true, true},
		{"-m iprange --dst-range 10.0.1.1-10.0.1.1", nil, true, true},
		{"-m iprange ! --dst-range 10.0.0.0-10.0.1.0", nil, true, true},
		{"-m mac --mac-source 0a:00:00:00:00:01", nil, true, false},
		{"-m mac ! --mac-source 0a:00:00:00:00:01", nil, false, false},
		{"-m length --length 100", nil, true, false},
		{"-m length --length 101:200", nil, false, false},
		{"-m length ! --length 101:200", nil, true, false},
		{"-m pkttype --pkt-type unicast", nil, true, false},
		{"-m pkttype --pkt-type broadcast", func(p *packet.Packet) { copy(p.MAC[:6], bc[:]) }, true, false},
		{"-m pkttype --pkt-type multicast", func(p *packet.Packet) { copy(p.MAC[:6], bc[:]) }, false, false},
		{"-m pkttype --pkt-type multicast", func(p *packet.Packet) { copy(p.MAC[:6], mc[:]) }, true, false},
		{"-m pkttype ! --pkt-type unicast", func(p *packet.Packet) { copy(p.MAC[:6], mc[:]) }, true, false},
		{"-m tos --tos 0x10/0x3f", func(p *packet.Packet) { p.TOS = 0xd0 }, true, false},
		{"-m tos --tos 0x10", func(p *packet.Packet) { p.TOS = 0xd0 }, false, false},
		{"-m tos ! --tos 0x10", nil, true, false},
		{"-m dscp --dscp-class EF", func(p *packet.Packet) { p.TOS = 0xb8 | 2 }, true, false},
		{"-m dscp ! --dscp 0", nil, false, false},
		{"-m ttl --ttl-eq 64", nil, true, false},
		{"-m ttl ! --ttl-eq 64", nil, false, false},
		{"-m ttl --ttl-lt 64", nil, false, false},
		{"-m ttl --ttl-lt 65", nil, true, false},
		{"-m ttl --ttl-gt 63", nil, true, false},
		{"-m ttl --ttl-gt 64", nil, false, false},
	}
	for _, tc := range tests {
		rs := mustLoad(t, wrap("filter", "-A FORWARD "+tc.rule+" -j DROP"), FamilyIPv4)
		p := base()
		if tc.p != nil {
			tc.p(p)
		}
		v, c := rs.Filter(p, stNew, portA)
		if (v.Action == Drop) != tc.match || c != tc.cacheable {
			t.Errorf("%q: got %v cacheable %v, want match %v cacheable %v", tc.rule, v.Action, c, tc.match, tc.cacheable)
		}
	}
	// -m hl on IPv6.
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m hl --hl-lt 2 -j DROP"), FamilyIPv6)
	p := udpPkt("2001:db8::1", "2001:db8::2", 1, 2)
	for _, hl := range []uint8{1, 2} {
		p.TTL = hl
		if v, c := rs.Filter(p, stNew, portA); (v.Action == Drop) != (hl < 2) || c {
			t.Errorf("-m hl --hl-lt 2, hop limit %d: got %v cacheable %v", hl, v.Action, c)
		}
	}
}

func TestExtFilterNoAllocs(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m iprange --src-range 10.0.0.1-10.0.0.9 -m mac ! --mac-source 0a:00:00:00:00:09 -m length --length 0:1000 -m pkttype --pkt-type unicast -m tos --tos 0/0xff -m dscp --dscp 0 -m ttl --ttl-gt 1 -j DROP"), FamilyIPv4)
	p := ext4("10.0.0.5", "10.0.1.1", 64, 0, 100, [6]byte{0x0a, 0, 0, 0, 0, 2}, [6]byte{0x0a, 0, 0, 0, 0, 1})
	if v, _ := rs.Filter(p, stNew, portA); v.Action != Drop {
		t.Fatalf("the rule with every match did not match: %v", v)
	}
	if n := testing.AllocsPerRun(1000, func() { rs.Filter(p, stNew, portA) }); n != 0 {
		t.Errorf("Filter: got %v allocs per run, want 0", n)
	}
}

func TestStillUnsupportedMatch(t *testing.T) {
	_, err := load(t, wrap("filter", "-A FORWARD -m string --algo bm --string x -j ACCEPT"), FamilyIPv4)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"string"`) {
		t.Errorf("got %v, want ErrUnsupported naming string", err)
	}
}
