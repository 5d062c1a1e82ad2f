package conformance

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// build serialises an Ethernet frame with gopacket (test only).
func build(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

var (
	macA = []byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = []byte{0x02, 0, 0, 0, 0, 0x0b}
)

func ipv4Frame(t *testing.T, src, dst string, flags layers.IPv4Flag, fragOff uint16, vlans ...uint16) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, Flags: flags, FragOffset: fragOff,
		SrcIP: parseIP(src), DstIP: parseIP(dst)}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 53}
	udp.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth}
	if len(vlans) > 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		for i, v := range vlans {
			next := layers.EthernetTypeDot1Q
			if i == len(vlans)-1 {
				next = layers.EthernetTypeIPv4
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: v, Type: next})
		}
	}
	ls = append(ls, ip, udp, gopacket.Payload("hello"))
	return build(t, ls...)
}

func parseIP(s string) []byte { return net.ParseIP(s).To4() }

func TestClassify(t *testing.T) {
	v6 := build(t,
		&layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolIPv6Fragment, HopLimit: 64,
			SrcIP: make([]byte, 16), DstIP: make([]byte, 16)},
		gopacket.Payload([]byte{17, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4}))
	arp := build(t, &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeARP},
		gopacket.Payload(make([]byte, 28)))
	tests := []struct {
		name  string
		frame []byte
		want  kind
	}{
		{"ipv4", ipv4Frame(t, "198.18.0.1", "198.18.0.2", 0, 0), kindIP},
		{"ipv4 DF", ipv4Frame(t, "198.18.0.1", "198.18.0.2", layers.IPv4DontFragment, 0), kindIP},
		{"ipv4 MF", ipv4Frame(t, "198.18.0.1", "198.18.0.2", layers.IPv4MoreFragments, 0), kindFragment},
		{"ipv4 offset", ipv4Frame(t, "198.18.0.1", "198.18.0.2", 0, 100), kindFragment},
		{"ipv4 in QinQ", ipv4Frame(t, "198.18.0.1", "198.18.0.2", 0, 0, 10, 20), kindIP},
		{"ipv6 fragment header", v6, kindFragment},
		{"arp", arp, kindNonIP},
		{"runt", []byte{1, 2, 3}, kindNonIP},
		{"truncated ipv4", ipv4Frame(t, "198.18.0.1", "198.18.0.2", 0, 0)[:20], kindIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.frame); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestFixIPv4Checksum(t *testing.T) {
	for _, vlans := range [][]uint16{nil, {7}} {
		f := ipv4Frame(t, "198.18.0.1", "198.18.0.2", 0, 0, vlans...)
		_, off, _ := l3(f)
		want := binary.BigEndian.Uint16(f[off+10:])
		f[off+10], f[off+11] = 0x99, 0x99
		fixIPv4Checksum(f)
		if got := binary.BigEndian.Uint16(f[off+10:]); got != want {
			t.Errorf("vlans %v: got checksum %#04x, want %#04x", vlans, got, want)
		}
	}
	// Never panics on short or odd input.
	for _, f := range [][]byte{nil, {0}, make([]byte, 14), append(make([]byte, 12), 0x08, 0x00, 0x4f)} {
		fixIPv4Checksum(f)
	}
}

func TestSameL3AndDSCP(t *testing.T) {
	sent := ipv4Frame(t, "198.18.0.1", "198.18.0.2", 0, 0)
	padded := append(append([]byte(nil), sent...), make([]byte, 20)...) // Ethernet padding
	got := append([]byte(nil), sent...)
	_, off, _ := l3(got)
	got[off+1] = 42 << 2 // DSCP set by the bridge
	if !sameL3(padded, got) {
		t.Errorf("sameL3(padded sent, marked got) = false, want true")
	}
	if v, ok := dscp(got); !ok || v != 42 {
		t.Errorf("dscp: got %d, %v; want 42, true", v, ok)
	}
	if l := label(got); l != "ESTABLISHED" {
		t.Errorf("label: got %s, want ESTABLISHED", l)
	}
	if l := label(nil); l != Dropped {
		t.Errorf("label(nil): got %s, want %s", l, Dropped)
	}
	other := ipv4Frame(t, "198.18.0.1", "198.18.0.3", 0, 0)
	if sameL3(sent, other) {
		t.Errorf("sameL3 of different packets = true, want false")
	}
}

func TestSider(t *testing.T) {
	c2s := ipv4Frame(t, "10.0.0.1", "10.0.0.2", 0, 0)
	s2c := ipv4Frame(t, "10.0.0.2", "10.0.0.1", 0, 0)
	copy(s2c[0:6], macA)
	copy(s2c[6:12], macB)
	// A router (new MAC, new IP) sends an ICMP error to the client.
	router := ipv4Frame(t, "10.0.0.254", "10.0.0.1", 0, 0)
	copy(router[0:6], macA)
	copy(router[6:12], []byte{0x02, 0, 0, 0, 0, 0x0c})
	// Loopback capture: zero MACs, decided by IP only.
	lo := ipv4Frame(t, "10.0.0.2", "10.0.0.1", 0, 0)
	copy(lo[0:12], make([]byte, 12))
	s := newSider()
	for i, tt := range []struct {
		frame []byte
		want  side
	}{{c2s, left}, {s2c, right}, {c2s, left}, {router, right}, {lo, right}} {
		if got := s.side(tt.frame); got != tt.want {
			t.Errorf("frame %d: got side %d, want %d", i, got, tt.want)
		}
	}
}

func TestRuleset(t *testing.T) {
	for _, h := range []bool{false, true} {
		rs := Ruleset(h)
		for _, s := range stateDSCP {
			if !strings.Contains(rs, "ct state "+s.ct+" ip dscp set") || !strings.Contains(rs, "ct state "+s.ct+" ip6 dscp set") {
				t.Errorf("helpers=%v: ruleset lacks the %s marks:\n%s", h, s.ct, rs)
			}
		}
		if got := strings.Contains(rs, `ct helper set "h_ftp"`); got != h {
			t.Errorf("helpers=%v: ftp helper rule present = %v", h, got)
		}
	}
}
