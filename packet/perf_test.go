package packet_test

import (
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// hotFrames are the frames the allocation guard and benchmarks parse.
func hotFrames() map[string][]byte {
	udp4 := pt.UDP4(c4, s4, 5353, 53, []byte("query..."))
	syn6 := pt.TCP6(c6, s6, 40000, 25, synFields)
	// A 64-byte TCP frame: 14 + 20 + 20 + 10 bytes of payload.
	tcp64 := pt.TCP4(c4, s4, 40000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 1, Ack: 2, Window: 512, Payload: make([]byte, 10)})
	// IPv6 TCP without extension headers: 14 + 40 + 20 + 10 bytes of payload.
	tcp6 := pt.TCP6(c6, s6, 40000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 1, Ack: 2, Window: 512, Payload: make([]byte, 10)})
	// A full-size segment: what the checksum costs per byte.
	tcp1500 := pt.TCP4(c4, s4, 40000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 1, Ack: 2, Window: 512, Payload: make([]byte, 1460)})
	return map[string][]byte{
		"tcp64":        tcp64,
		"tcp1500":      tcp1500,
		"tcp6":         tcp6,
		"tcp-syn-opts": pt.TCP4(c4, s4, 40000, 80, synFields),
		"tcp-sack":     pt.TCP4(c4, s4, 40000, 80, dataFields),
		"udp":          udp4,
		"icmp-error":   pt.ICMP4Error(r4, c4, 3, 3, pt.Quote(udp4, 28)),
		"icmp6-error":  pt.ICMP6Error(r6, c6, 1, 4, 0, pt.Quote(pt.UDP6(c6, s6, 5353, 53, nil), 48)),
		"ipv6-ext": pt.Ext6(pt.Ext6(pt.Ext6(syn6, packet.ProtoRouting, make([]byte, 6)),
			packet.ProtoDestOpts, make([]byte, 6)), packet.ProtoHopByHop, make([]byte, 6)),
		"qinq-udp":  pt.VLAN(pt.VLAN(udp4, packet.EtherTypeVLAN, 20), packet.EtherTypeQinQ, 10),
		"ipv4-frag": pt.Frag4(pt.UDP4(c4, s4, 1, 2, make([]byte, 100)), 48, 100, false),
		// The same segments as a host that offloads checksums sends them.
		"tcp64-partial":   pt.Partial(tcp64),
		"tcp1500-partial": pt.Partial(tcp1500),
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	for name, f := range hotFrames() {
		for _, verify := range []bool{false, true} {
			var p packet.Packet
			opt := packet.Options{VerifyChecksum: verify}
			if r := packet.Parse(f, 0, opt, &p); r != packet.ReasonOK {
				t.Fatalf("%s: got %v, want ok", name, r)
			}
			allocs := testing.AllocsPerRun(100, func() {
				packet.Parse(f, 0, opt, &p)
				_ = p.Payload(f)
			})
			if allocs != 0 {
				t.Errorf("%s (verify %v): got %v allocations per Parse, want 0", name, verify, allocs)
			}
		}
	}
}

func BenchmarkParse(b *testing.B) {
	frames := hotFrames()
	for _, name := range []string{"tcp64", "tcp6", "tcp1500", "tcp64-partial", "tcp1500-partial", "tcp-syn-opts", "tcp-sack", "udp", "icmp-error", "ipv6-ext", "qinq-udp"} {
		f := frames[name]
		for _, verify := range []bool{false, true} {
			sub := name
			if verify {
				sub += "/csum"
			}
			b.Run(sub, func(b *testing.B) {
				var p packet.Packet
				opt := packet.Options{VerifyChecksum: verify}
				b.ReportAllocs()
				b.SetBytes(int64(len(f)))
				for b.Loop() {
					if packet.Parse(f, 0, opt, &p) != packet.ReasonOK {
						b.Fatal("parse failed")
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			})
		}
	}
}

// BenchmarkCompleteChecksum is what completing a partial checksum costs a
// bridge beyond the parse (BenchmarkParse's *-partial cases): one store
// into the frame, whatever its length. (After the first round the field no
// longer holds the pseudo-header sum; the arithmetic is the same.)
func BenchmarkCompleteChecksum(b *testing.B) {
	frames := hotFrames()
	for _, name := range []string{"tcp64-partial", "tcp1500-partial"} {
		b.Run(name, func(b *testing.B) {
			f := append([]byte(nil), frames[name]...)
			var p packet.Packet
			if packet.Parse(f, 0, packet.Options{VerifyChecksum: true}, &p) != packet.ReasonOK || !p.ChecksumPartial {
				b.Fatal("not parsed as partial")
			}
			q := p
			b.ReportAllocs()
			for b.Loop() {
				q = p
				packet.CompleteChecksum(f, &q)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// BenchmarkParsePcaps parses every frame of the capture corpus in turn.
func BenchmarkParsePcaps(b *testing.B) {
	caps := readCaptures(b)
	var p packet.Packet
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, c := range caps {
			packet.Parse(c.data, c.wireLen, packet.Options{}, &p)
		}
		n += len(caps)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "pkts/s")
}
