package bridge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
)

// kernelAnswer turns a frame built by packettest from the answerer's side
// (source: the rejected packet's destination) into what the kernel's
// bridge reject sends: the MAC addresses of the rejected frame swapped
// (packettest's defaults, so swapping the built frame's two addresses
// gives them), IPv4 ID 0 and DF (nf_reject_iphdr_put), TTL/hop limit 64
// (packettest's default too), checksums recomputed.
func kernelAnswer(f []byte) []byte {
	var m [12]byte
	copy(m[:], f[0:12])
	copy(f[0:6], m[6:12])
	copy(f[6:12], m[0:6])
	l3 := 14
	for binary.BigEndian.Uint16(f[l3-2:]) == packet.EtherTypeVLAN || binary.BigEndian.Uint16(f[l3-2:]) == packet.EtherTypeQinQ {
		l3 += 4
	}
	if f[l3]>>4 == 4 {
		binary.BigEndian.PutUint16(f[l3+4:], 0)
		binary.BigEndian.PutUint16(f[l3+6:], 0x4000)
	}
	return pt.FixChecksums(f)
}

func TestRejectAnswers(t *testing.T) {
	payload := []byte("0123456789")
	syn := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1000, Window: 64240, MSS: 1460})
	data := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 80, pt.TCPFields{Flags: packet.TCPAck | packet.TCPPsh, Seq: 5000, Ack: 7000, Window: 501, Payload: payload})
	finNoAck := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 80, pt.TCPFields{Flags: packet.TCPFin, Seq: 9, Payload: payload})
	syn6 := pt.TCP6("2001:db8::1", "2001:db8::2", 40000, 443, pt.TCPFields{Flags: packet.TCPSyn, Seq: 0xfffffff0})
	udp := pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, []byte("query"))
	udp6 := pt.UDP6("2001:db8::1", "2001:db8::2", 5353, 53, []byte("query6"))
	big := pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, bytes.Repeat([]byte{0xab}, 1400))
	big6 := pt.UDP6("2001:db8::1", "2001:db8::2", 5353, 53, bytes.Repeat([]byte{0xcd}, 1400))
	echo := pt.ICMP4Echo("198.18.0.1", "198.18.0.2", 8, 7, 1, []byte("ping"))
	tagged := pt.VLAN(udp, packet.EtherTypeVLAN, 42)

	cases := []struct {
		name  string
		in    []byte
		k     rules.RejectWith
		want  []byte
		limit bool
	}{
		{"SYN: RST+ACK, seq 0, ack seq+1", syn, rules.RejectTCPReset,
			kernelAnswer(pt.TCP4("198.18.0.2", "198.18.0.1", 80, 40000, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Ack: 1001})), false},
		{"ACK with data: RST, seq = its ack", data, rules.RejectTCPReset,
			kernelAnswer(pt.TCP4("198.18.0.2", "198.18.0.1", 80, 40000, pt.TCPFields{Flags: packet.TCPRst, Seq: 7000})), false},
		{"FIN without ACK and payload: ack seq+len+1", finNoAck, rules.RejectTCPReset,
			kernelAnswer(pt.TCP4("198.18.0.2", "198.18.0.1", 80, 40000, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Ack: 9 + 10 + 1})), false},
		{"IPv6 SYN, ack wraps", syn6, rules.RejectTCPReset,
			kernelAnswer(pt.TCP6("2001:db8::2", "2001:db8::1", 443, 40000, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Ack: 0xfffffff1})), false},
		{"UDP: port unreachable quoting all of it", udp, rules.RejectPortUnreach,
			kernelAnswer(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 3, pt.Quote(udp, 0))), true},
		{"UDP: admin prohibited", udp, rules.RejectAdminProhib,
			kernelAnswer(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 13, pt.Quote(udp, 0))), true},
		{"UDP: host prohibited", udp, rules.RejectHostProhib,
			kernelAnswer(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 10, pt.Quote(udp, 0))), true},
		{"large UDP: 536 bytes quoted", big, rules.RejectNetUnreach,
			kernelAnswer(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 0, pt.Quote(big, 536))), true},
		{"echo request: an ICMP query is answered", echo, rules.RejectHostUnreach,
			kernelAnswer(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 1, pt.Quote(echo, 0))), true},
		{"UDP6: port unreachable", udp6, rules.Reject6PortUnreach,
			kernelAnswer(pt.ICMP6Error("2001:db8::2", "2001:db8::1", 1, 4, 0, pt.Quote(udp6, 0))), true},
		{"UDP6: no route", udp6, rules.Reject6NoRoute,
			kernelAnswer(pt.ICMP6Error("2001:db8::2", "2001:db8::1", 1, 0, 0, pt.Quote(udp6, 0))), true},
		{"UDP6: adm prohibited", udp6, rules.Reject6AdmProhib,
			kernelAnswer(pt.ICMP6Error("2001:db8::2", "2001:db8::1", 1, 1, 0, pt.Quote(udp6, 0))), true},
		{"UDP6: addr unreachable", udp6, rules.Reject6AddrUnreach,
			kernelAnswer(pt.ICMP6Error("2001:db8::2", "2001:db8::1", 1, 3, 0, pt.Quote(udp6, 0))), true},
		{"large UDP6: 1220 bytes quoted, 1268 in all", big6, rules.Reject6PortUnreach,
			kernelAnswer(pt.ICMP6Error("2001:db8::2", "2001:db8::1", 1, 4, 0, pt.Quote(big6, 1220))), true},
		{"VLAN tag kept", tagged, rules.RejectPortUnreach,
			kernelAnswer(pt.VLAN(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 3, pt.Quote(udp, 0)), packet.EtherTypeVLAN, 42)), true},
		{"partial checksum (a veth sender) is answered", pt.Partial(udp), rules.RejectPortUnreach,
			kernelAnswer(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 3, pt.Quote(pt.Partial(udp), 0))), true},
	}
	var p packet.Packet
	dst := make([]byte, MaxRejectFrame)
	for _, c := range cases {
		n, out := buildReject(dst, c.in, c.k, &p, nil, 0)
		if out != rejectBuilt || !bytes.Equal(dst[:n], c.want) {
			t.Errorf("%s: got %v\n% x\nwant\n% x", c.name, out, dst[:n], c.want)
			continue
		}
		// The answer is a valid frame with good checksums.
		var q packet.Packet
		if r := packet.Parse(dst[:n], 0, packet.Options{VerifyChecksum: true}, &q); r != packet.ReasonOK {
			t.Errorf("%s: the answer does not parse: %v", c.name, r)
		}
		if ip := dst[14+4*int(q.VLANTags):]; q.IPVersion == 6 && n-14 > 1280 || q.IPVersion == 4 && n-14-4*int(q.VLANTags) > 576 {
			t.Errorf("%s: answer of %d IP bytes is over the minimum MTU", c.name, len(ip))
		}
	}

	none := []struct {
		name string
		in   []byte
		k    rules.RejectWith
	}{
		{"RST is not answered with RST", pt.TCP4("198.18.0.1", "198.18.0.2", 1, 2, pt.TCPFields{Flags: packet.TCPRst | packet.TCPAck}), rules.RejectTCPReset},
		{"tcp-reset for UDP", udp, rules.RejectTCPReset},
		{"ICMP error is not answered", pt.ICMP4Error("198.18.0.1", "198.18.0.2", 3, 3, pt.Quote(udp, 0)), rules.RejectPortUnreach},
		{"unknown ICMP type counts as an error", pt.ICMP4("198.18.0.1", "198.18.0.2", 42, 0, 0, nil), rules.RejectPortUnreach},
		{"ICMPv6 error is not answered", pt.ICMP6Error("2001:db8::1", "2001:db8::2", 1, 4, 0, pt.Quote(udp6, 0)), rules.Reject6PortUnreach},
		{"broadcast destination", pt.UDP4("198.18.0.1", "255.255.255.255", 68, 67, nil), rules.RejectPortUnreach},
		{"multicast destination", pt.UDP4("198.18.0.1", "224.0.0.251", 5353, 5353, nil), rules.RejectPortUnreach},
		{"IPv6 multicast destination", pt.UDP6("2001:db8::1", "ff02::fb", 5353, 5353, nil), rules.Reject6PortUnreach},
		{"group MAC destination", func() []byte { f := append([]byte(nil), udp...); f[0] = 0x01; return f }(), rules.RejectPortUnreach},
		{"bad UDP checksum", func() []byte { f := append([]byte(nil), udp...); f[len(f)-1] ^= 0xff; return f }(), rules.RejectPortUnreach},
		{"bad TCP checksum", func() []byte { f := append([]byte(nil), syn...); f[len(f)-1] ^= 0xff; return f }(), rules.RejectTCPReset},
		{"later fragment", pt.Fragments4(big, 512)[1], rules.RejectPortUnreach},
		{"IPv4 packet, IPv6 answer kind", udp, rules.Reject6PortUnreach},
		{"ARP", append(make([]byte, 12), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1), rules.RejectPortUnreach},
	}
	for _, c := range none {
		if n, out := buildReject(dst, c.in, c.k, &p, nil, 0); out != rejectNone || n != 0 {
			t.Errorf("%s: got %v, %d bytes; want no answer", c.name, out, n)
		}
	}
	// The first fragment of a datagram is answered.
	if _, out := buildReject(dst, pt.Fragments4(big, 512)[0], rules.RejectPortUnreach, &p, nil, 0); out != rejectBuilt {
		t.Errorf("first fragment: got %v, want an answer", out)
	}
}

// ICMP answers follow icmp_ratelimit per destination (a burst of 6, then
// one a second) and icmp_msgs_per_sec overall (a burst of 50, then 1000 a
// second); RSTs are never limited.
func TestRejectRateLimit(t *testing.T) {
	var lim icmpLimit
	var p packet.Packet
	dst := make([]byte, MaxRejectFrame)
	now := int64(time.Hour)
	udp := pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, nil)
	sent := 0
	for i := 0; i < 100; i++ {
		if _, out := buildReject(dst, udp, rules.RejectPortUnreach, &p, &lim, now); out == rejectBuilt {
			sent++
		}
	}
	if sent != icmpPeerBurst {
		t.Errorf("100 at once to one host: %d answered, want the burst of %d", sent, icmpPeerBurst)
	}
	if _, out := buildReject(dst, udp, rules.RejectPortUnreach, &p, &lim, now+int64(999*time.Millisecond)); out != rejectLimited {
		t.Errorf("0.999 s later: got %v, want limited", out)
	}
	if _, out := buildReject(dst, udp, rules.RejectPortUnreach, &p, &lim, now+int64(time.Second)); out != rejectBuilt {
		t.Errorf("1 s later: got %v, want one more answer", out)
	}
	// Many hosts: the global bucket's burst of 50.
	var lim2 icmpLimit
	sent = 0
	for i := 0; i < 200; i++ {
		f := pt.UDP4(fmt.Sprintf("198.18.%d.%d", i/200, i%200+1), "198.18.1.2", 5353, 53, nil)
		if _, out := buildReject(dst, f, rules.RejectPortUnreach, &p, &lim2, now); out == rejectBuilt {
			sent++
		}
	}
	if sent != icmpMsgsBurst {
		t.Errorf("200 hosts at once: %d answered, want the global burst of %d", sent, icmpMsgsBurst)
	}
	syn := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 80, pt.TCPFields{Flags: packet.TCPSyn})
	for i := 0; i < 100; i++ {
		if _, out := buildReject(dst, syn, rules.RejectTCPReset, &p, &lim, now); out != rejectBuilt {
			t.Fatalf("RST %d: got %v, RSTs are not limited", i, out)
		}
	}
}

func TestRejectAnswerAllocs(t *testing.T) {
	pl := newTestPipeline(t, nil, 64)
	syn := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 80, pt.TCPFields{Flags: packet.TCPSyn})
	if n := testing.AllocsPerRun(1000, func() { pl.RejectAnswer(syn, rules.RejectTCPReset, 1) }); n != 0 {
		t.Errorf("RejectAnswer allocates %v times per call", n)
	}
}

// FuzzRejectAnswer: no frame and no kind makes the builder panic, and what
// it builds is a frame that parses, with valid checksums, no longer than
// MaxRejectFrame.
func FuzzRejectAnswer(f *testing.F) {
	f.Add(pt.TCP4("198.18.0.1", "198.18.0.2", 1, 2, pt.TCPFields{Flags: packet.TCPSyn}), uint8(rules.RejectTCPReset))
	f.Add(pt.UDP6("2001:db8::1", "2001:db8::2", 1, 2, []byte("x")), uint8(rules.Reject6PortUnreach))
	f.Add(pt.VLAN(pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, nil), packet.EtherTypeQinQ, 7), uint8(rules.RejectPortUnreach))
	f.Add(pt.Ext6(pt.TCP6("2001:db8::1", "2001:db8::2", 1, 2, pt.TCPFields{Flags: packet.TCPAck, Ack: 5}), 60, make([]byte, 6)), uint8(rules.RejectTCPReset))
	f.Add(pt.IPv4Options(pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, nil), []byte{1, 1, 1, 1}), uint8(rules.RejectHostProhib))
	dst := make([]byte, MaxRejectFrame)
	f.Fuzz(func(t *testing.T, frame []byte, k uint8) {
		var p packet.Packet
		var lim icmpLimit
		n, out := buildReject(dst, frame, rules.RejectWith(k%uint8(rules.NumRejectWith)), &p, &lim, 1)
		if out != rejectBuilt {
			if n != 0 {
				t.Fatalf("no answer but %d bytes", n)
			}
			return
		}
		if n > MaxRejectFrame {
			t.Fatalf("answer of %d bytes", n)
		}
		var q packet.Packet
		// The quoted packet is the sender's and may be any bytes (the
		// kernel quotes it as it is): only the answer's own headers and
		// checksum must be right.
		if r := packet.Parse(dst[:n], 0, packet.Options{VerifyChecksum: true}, &q); r != packet.ReasonOK && r != packet.ReasonICMPBadInner {
			t.Fatalf("answer does not parse: %v\n% x", r, dst[:n])
		}
		if q.Src != p.Dst || q.Dst != p.Src {
			t.Fatalf("answer addresses not swapped")
		}
	})
}
