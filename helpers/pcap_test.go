package helpers

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// capPacket is one captured frame reduced to what Inspect reads, decoded
// with gopacket (test only; the hot path uses package packet).
type capPacket struct {
	p       packet.Packet
	payload []byte
}

func readCapture(t *testing.T, name string) []capPacket {
	t.Helper()
	var pkts []capPacket
	for _, c := range pt.ReadPcap(t, filepath.Join(testenv.Pcaps(t), name)) {
		pkts = append(pkts, decode(t, c.Data))
	}
	return pkts
}

func decode(t *testing.T, data []byte) capPacket {
	t.Helper()
	g := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
	var c capPacket
	var ipPayload int
	if ip4, ok := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		c.p.IPVersion = 4
		c.p.Proto = uint8(ip4.Protocol)
		c.p.Src = packet.AddrFrom4([4]byte(ip4.SrcIP.To4()))
		c.p.Dst = packet.AddrFrom4([4]byte(ip4.DstIP.To4()))
		ipPayload = int(ip4.Length) - int(ip4.IHL)*4
	} else if ip6, ok := g.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		c.p.IPVersion = 6
		c.p.Proto = uint8(ip6.NextHeader) // the corpus has no extension headers here
		c.p.Src = packet.Addr(ip6.SrcIP.To16())
		c.p.Dst = packet.Addr(ip6.DstIP.To16())
		ipPayload = int(ip6.Length)
	} else {
		t.Fatalf("frame without IP: %v", g)
	}
	switch c.p.Proto {
	case packet.ProtoTCP:
		tcp, ok := g.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			t.Fatalf("TCP frame did not decode: %v", g)
		}
		c.p.SrcPort, c.p.DstPort = uint16(tcp.SrcPort), uint16(tcp.DstPort)
		c.p.TCP.Seq = tcp.Seq
		c.p.TCP.DataOff = tcp.DataOffset * 4
		c.p.PayloadLen = uint32(ipPayload - int(tcp.DataOffset)*4)
		c.payload = tcp.Payload
	case packet.ProtoUDP:
		udp, ok := g.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			t.Fatalf("UDP frame did not decode: %v", g)
		}
		c.p.SrcPort, c.p.DstPort = uint16(udp.SrcPort), uint16(udp.DstPort)
		c.p.PayloadLen = uint32(ipPayload - 8)
		c.payload = udp.Payload
	}
	return c
}

type flowKey struct {
	a, b   packet.Addr
	pa, pb uint16
	proto  uint8
}

func keyOf(p *packet.Packet) flowKey {
	return flowKey{p.Src, p.Dst, p.SrcPort, p.DstPort, p.Proto}
}

func (k flowKey) reverse() flowKey { return flowKey{k.b, k.a, k.pb, k.pa, k.proto} }

type flow struct {
	helper    ID
	st        State
	seenReply bool
	expected  bool
}

type pendingExp struct {
	e      Expectation
	master *flow
}

// replay is a minimal tracker: one flow per tuple, an expectation table
// with the helpers' per-master limits, and the user-land state per packet
// (NEW, ESTABLISHED, RELATED) the way conntrack derives it. Helpers are
// attached by the classic ports, as the kernel reference run did by rule.
type replay struct {
	t       *testing.T
	flows   map[flowKey]*flow
	pending []pendingExp
	created []Expectation
}

func (r *replay) expect(master *flow, e Expectation) {
	r.created = append(r.created, e)
	count, oldest := 0, -1
	for i := 0; i < len(r.pending); i++ {
		pe := r.pending[i]
		if pe.e == e { // nf_ct_expect_related: an identical one is replaced
			r.pending = append(r.pending[:i], r.pending[i+1:]...)
			i--
			continue
		}
		if pe.master == master {
			count++
			if oldest < 0 {
				oldest = i
			}
		}
	}
	if count >= e.Helper.Policy().MaxExpected && oldest >= 0 {
		r.pending = append(r.pending[:oldest], r.pending[oldest+1:]...)
	}
	r.pending = append(r.pending, pendingExp{e, master})
}

func (r *replay) match(p *packet.Packet) bool {
	for i, pe := range r.pending {
		e := pe.e
		if e.L3 == p.IPVersion && e.Proto == p.Proto && e.Dst == p.Dst && e.DstPort == p.DstPort &&
			(e.SrcAny || e.Src == p.Src) && (e.SrcPort == 0 || e.SrcPort == p.SrcPort) {
			r.pending = append(r.pending[:i], r.pending[i+1:]...)
			return true
		}
	}
	return false
}

// step tracks one packet and returns its state.
func (r *replay) step(c *capPacket) string {
	p := &c.p
	dir := statemachine.Original
	f := r.flows[keyOf(p)]
	if f == nil {
		if f = r.flows[keyOf(p).reverse()]; f != nil {
			dir = statemachine.Reply
		}
	}
	if f == nil {
		f = &flow{expected: r.match(p)}
		if !f.expected {
			f.helper = ByPort(p.IPVersion, p.Proto, p.DstPort)
		}
		r.flows[keyOf(p)] = f
	}
	state := "ESTABLISHED"
	established := dir == statemachine.Reply || f.seenReply
	if !established {
		state = "NEW"
		if f.expected {
			state = "RELATED"
		}
	}
	if f.helper != IDNone {
		var out [MaxExpectPerPacket]Expectation
		n, drop, reason := Inspect(f.helper, &f.st, p, c.payload, dir, established, &out)
		if drop {
			state = "DROPPED:" + reason.String()
		}
		for _, e := range out[:n] {
			r.expect(f, e)
		}
	}
	if dir == statemachine.Reply {
		f.seenReply = true
	}
	return state
}

func (e Expectation) String() string {
	src := "any"
	if !e.SrcAny {
		src = addrString(e.Src)
	}
	return fmt.Sprintf("%s/%d %s -> %s:%d %v", map[uint8]string{6: "tcp", 17: "udp"}[e.Proto], e.L3, src, addrString(e.Dst), e.DstPort, e.Helper)
}

func addrString(a packet.Addr) string {
	if a.IsIPv4() {
		return fmt.Sprintf("%d.%d.%d.%d", a[12], a[13], a[14], a[15])
	}
	return fmt.Sprintf("%x", a[:])
}

// TestCaptures replays the FTP, IRC and TFTP captures through Inspect and
// checks (1) the expectations created, read off the captures by hand, and
// (2) that the state of every packet, with those expectations in a table,
// is the one Linux gave it.
func TestCaptures(t *testing.T) {
	v6srv := addrString(addr("2001:470:4867:99::21"))
	v6cli := addrString(addr("2001:470:1f11:81f:c999:d94:aa7c:2e3e"))
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"ftp-active-port-download.pcap", []string{ // PORT 172,23,0,3,174,127 etc.
			"tcp/4 172.23.0.2 -> 172.23.0.3:44671 ftp",
			"tcp/4 172.23.0.2 -> 172.23.0.3:43585 ftp",
			"tcp/4 172.23.0.2 -> 172.23.0.3:43439 ftp",
		}},
		{"ftp-passive-pasv-download.pcap", []string{ // 227 (172,23,0,2,82,9), (…,82,16) ×2
			"tcp/4 172.23.0.3 -> 172.23.0.2:21001 ftp",
			"tcp/4 172.23.0.3 -> 172.23.0.2:21008 ftp",
			"tcp/4 172.23.0.3 -> 172.23.0.2:21008 ftp",
		}},
		{"ftp-ipv4-epsv-retr.pcap", []string{ // 229 (|||38141|), retransmitted
			"tcp/4 141.142.228.5 -> 141.142.192.162:38141 ftp",
			"tcp/4 141.142.228.5 -> 141.142.192.162:38141 ftp",
		}},
		{"ftp-ipv6-eprt-epsv.pcap", []string{ // 229 ×3, then EPRT |2| ×2
			"tcp/6 " + v6cli + " -> " + v6srv + ":57086 ftp",
			"tcp/6 " + v6cli + " -> " + v6srv + ":57087 ftp",
			"tcp/6 " + v6cli + " -> " + v6srv + ":57088 ftp",
			"tcp/6 " + v6srv + " -> " + v6cli + ":49189 ftp",
			"tcp/6 " + v6srv + " -> " + v6cli + ":49190 ftp",
		}},
		{"irc-dcc-send-with-data-conn.pcap", []string{ // DCC SEND hello.txt 167772161 5555
			"tcp/4 any -> 10.0.0.1:5555 irc",
		}},
		// The segment starts with "NICK", not "PRIVMSG", and every offer
		// names 192.0.2.30/31, not the client 192.0.2.10: nothing.
		{"irc-dcc-send-many-offers.pcapng", nil},
		{"tftp-rrq-octet.pcap", []string{"udp/4 192.168.1.1 -> 192.168.1.2:44935 tftp"}},
		{"tftp-wrq-octet.pcap", []string{"udp/4 192.168.0.13 -> 192.168.0.1:57509 tftp"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			pkts := readCapture(t, tc.file)
			kernel := testenv.KernelStates(t, "helpers", tc.file)
			if len(kernel) != len(pkts) {
				t.Fatalf("%d packets, %d kernel states", len(pkts), len(kernel))
			}
			r := &replay{t: t, flows: map[flowKey]*flow{}}
			for i := range pkts {
				if got := r.step(&pkts[i]); got != kernel[i] {
					t.Errorf("packet %d: state %s, kernel %s", i+1, got, kernel[i])
				}
			}
			var got []string
			for _, e := range r.created {
				if e.Timeout != e.Helper.Policy().Timeout || e.SrcPort != 0 {
					t.Errorf("expectation %v: timeout %d, src port %d", e, e.Timeout, e.SrcPort)
				}
				got = append(got, e.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("expectations:\n got  %q\n want %q", got, tc.want)
			}
		})
	}
}
