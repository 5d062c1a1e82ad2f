package packet_test

import (
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// The kernel's tables, copied from Linux net/netfilter (mainline, 2025)
// with their own names: nf_conntrack_proto_icmp.c, nf_conntrack_proto_icmpv6.c
// and include/linux/icmp.h. kernelKind below walks them the way the kernel's
// code does, so the test states the kernel's logic, not icmp.go's table.
var (
	// include/uapi/linux/icmp.h: NR_ICMP_TYPES.
	nrICMPTypes = 18
	// nf_conntrack_proto_icmp.c invmap (the "+1" removed) and valid_new.
	icmpInvmap    = map[uint8]uint8{8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
	icmpValidNew  = map[uint8]bool{8: true, 13: true, 15: true, 17: true}
	icmpIsErr     = map[uint8]bool{3: true, 4: true, 5: true, 11: true, 12: true} // icmp_is_err()
	icmpv6Invmap  = map[uint8]uint8{128: 129, 129: 128, 139: 140, 140: 139}
	icmpv6Valid   = map[uint8]bool{128: true, 139: true}
	icmpv6NoctNew = map[uint8]bool{ // noct_valid_new, with MRDISC 151 and 152 as current kernels have it
		130: true, 131: true, 132: true, 133: true, 134: true, 135: true, 136: true, 143: true, 151: true, 152: true,
	}
	ndiscRedirect uint8 = 137
)

// kernelKind is what the kernel makes of a type, following the code:
// nf_conntrack_icmpv4_error / nf_conntrack_icmpv6_error first, then, for
// a packet that error handler passed on, init_conntrack (the tuple must
// invert) and nf_conntrack_icmp{,v6}_packet (only valid_new types create).
func kernelKind(v6 bool, typ uint8) packet.ICMPKind {
	if !v6 {
		switch {
		case int(typ) > nrICMPTypes: // "invalid icmp type"
			return packet.ICMPInvalid
		case icmpIsErr[typ]:
			return packet.ICMPError // nf_conntrack_inet_error
		}
		if _, ok := icmpInvmap[typ]; !ok {
			return packet.ICMPInvalid // nf_ct_invert_tuple fails
		}
		if icmpValidNew[typ] {
			return packet.ICMPRequest
		}
		return packet.ICMPReply // matches an entry, never creates one
	}
	switch {
	case icmpv6NoctNew[typ]:
		return packet.ICMPUntracked
	case typ == ndiscRedirect:
		return packet.ICMPRedirect // nf_conntrack_icmpv6_redirect
	case typ < 128: // "is not error message ?": type >= 128 passes on
		return packet.ICMPError
	}
	if _, ok := icmpv6Invmap[typ]; !ok {
		return packet.ICMPInvalid
	}
	if icmpv6Valid[typ] {
		return packet.ICMPRequest
	}
	return packet.ICMPReply
}

// TestICMPClassKernel checks the classification of every ICMP and ICMPv6
// type against the kernel's tables: kind, error or not, the pair.
func TestICMPClassKernel(t *testing.T) {
	for _, v := range []uint8{4, 6} {
		invmap := icmpInvmap
		if v == 6 {
			invmap = icmpv6Invmap
		}
		for i := 0; i < 256; i++ {
			typ := uint8(i)
			want := kernelKind(v == 6, typ)
			if got := packet.ICMPClass(v, typ); got != want {
				t.Errorf("ICMPClass(%d, %d): got %v, want %v", v, typ, got, want)
			}
			wantErr := want == packet.ICMPError || want == packet.ICMPRedirect
			if got := packet.IsICMPError(v, typ); got != wantErr {
				t.Errorf("IsICMPError(%d, %d): got %v, want %v", v, typ, got, wantErr)
			}
			wantPair, wantOK := invmap[typ]
			if got, ok := packet.ICMPPair(v, typ); ok != wantOK || got != wantPair {
				t.Errorf("ICMPPair(%d, %d): got %d, %v, want %d, %v", v, typ, got, ok, wantPair, wantOK)
			}
			req, reply, ok := packet.ICMPRequestOf(v, typ)
			switch {
			case want == packet.ICMPRequest:
				if req != typ || reply || !ok {
					t.Errorf("ICMPRequestOf(%d, %d): got %d, %v, %v, want %d, false, true", v, typ, req, reply, ok, typ)
				}
			case want == packet.ICMPReply:
				if req != wantPair || !reply || !ok {
					t.Errorf("ICMPRequestOf(%d, %d): got %d, %v, %v, want %d, true, true", v, typ, req, reply, ok, wantPair)
				}
			case ok:
				t.Errorf("ICMPRequestOf(%d, %d): got %d, %v, true, want no pair", v, typ, req, reply)
			}
		}
	}
	if got := packet.ICMPClass(6, 129).String(); got != "reply" {
		t.Errorf("ICMPReply.String(): got %q, want %q", got, "reply")
	}
}

// TestParseQuotesEveryErrorType: Parse reads the quoted packet of exactly
// the types the classifier calls errors, every ICMPv6 type below 128
// included, and of no other type.
func TestParseQuotesEveryErrorType(t *testing.T) {
	udp4 := pt.UDP4("198.18.0.1", "198.18.0.2", 5000, 6000, []byte("x"))
	udp6 := pt.UDP6("2001:2::1", "2001:2::2", 5000, 6000, []byte("x"))
	for i := 0; i < 256; i++ {
		typ := uint8(i)
		for _, v := range []uint8{4, 6} {
			var f []byte
			switch {
			case v == 4:
				f = pt.ICMP4("198.18.0.254", "198.18.0.1", typ, 0, 0, pt.Quote(udp4, 28))
			case typ == 137:
				f = pt.Redirect6("fe80::fe", "2001:2::1", "fe80::2", "2001:2::2", pt.Quote(udp6, 48))
			default:
				f = pt.ICMP6("2001:2::fe", "2001:2::1", typ, 0, 0, pt.Quote(udp6, 48))
			}
			var p packet.Packet
			if r := packet.Parse(f, 0, packet.Options{VerifyChecksum: true}, &p); r != packet.ReasonOK {
				t.Fatalf("v%d type %d: Parse got %v, want ok", v, typ, r)
			}
			want := packet.IsICMPError(v, typ)
			if p.IsICMPError() != want || p.HasInner != want {
				t.Errorf("v%d type %d: IsICMPError %v, HasInner %v, want both %v", v, typ, p.IsICMPError(), p.HasInner, want)
			}
			if want && (p.Inner.Proto != packet.ProtoUDP || p.Inner.SrcPort != 5000 || p.Inner.DstPort != 6000) {
				t.Errorf("v%d type %d: Inner got %+v, want the quoted UDP 5000 → 6000", v, typ, p.Inner)
			}
		}
	}
}

// TestIsICMPErrorOtherFamilies: ICMP only over IPv4 and ICMPv6 only over
// IPv6 are ICMP; a non-first fragment carries no ICMP header, so the zero
// type it leaves (an error number in ICMPv6) makes it no error.
func TestIsICMPErrorOtherFamilies(t *testing.T) {
	tests := []struct {
		name string
		p    packet.Packet
	}{
		{"icmp over ipv6", packet.Packet{IPVersion: 6, Proto: packet.ProtoICMP, ICMP: packet.ICMP{Type: 3}}},
		{"icmpv6 over ipv4", packet.Packet{IPVersion: 4, Proto: packet.ProtoICMPv6, ICMP: packet.ICMP{Type: 1}}},
		{"icmpv6 non-first fragment", packet.Packet{IPVersion: 6, Proto: packet.ProtoICMPv6, Fragment: true, FragOffset: 1232}},
	}
	for _, tt := range tests {
		if tt.p.IsICMPError() {
			t.Errorf("%s: IsICMPError got true, want false", tt.name)
		}
	}
}
