package packettest_test

import (
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// reserialize decodes frame with gopacket, has gopacket compute the
// checksums again and returns the resulting bytes: equal to frame when the
// builder's checksums are right.
func reserialize(t *testing.T, frame []byte) []byte {
	t.Helper()
	g := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := g.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	var net gopacket.NetworkLayer
	var ls []gopacket.SerializableLayer
	for _, l := range g.Layers() {
		switch l := l.(type) {
		case *layers.IPv4, *layers.IPv6:
			net = l.(gopacket.NetworkLayer)
		case *layers.TCP:
			if err := l.SetNetworkLayerForChecksum(net); err != nil {
				t.Fatal(err)
			}
		case *layers.UDP:
			if err := l.SetNetworkLayerForChecksum(net); err != nil {
				t.Fatal(err)
			}
		case *layers.ICMPv6:
			if err := l.SetNetworkLayerForChecksum(net); err != nil {
				t.Fatal(err)
			}
		}
		s, ok := l.(gopacket.SerializableLayer)
		if !ok {
			t.Fatalf("layer %v not serializable", l.LayerType())
		}
		ls = append(ls, s)
		switch l.(type) {
		case *layers.TCP, *layers.UDP, *layers.ICMPv4, *layers.ICMPv6:
			// The rest as raw bytes: gopacket splits ICMPv6 echo in
			// two layers that do not serialize back to one.
			ls = append(ls, gopacket.Payload(l.LayerPayload()))
		default:
			continue
		}
		break
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestChecksumsMatchGopacket(t *testing.T) {
	udp := pt.UDP4("10.0.0.1", "10.0.0.2", 1, 2, []byte("hello"))
	for name, f := range map[string][]byte{
		"tcp4":       pt.TCP4("10.0.0.1", "10.0.0.2", 1000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 7, Window: 100, MSS: 1460, SACKPerm: true, HasWScale: true, WScale: 3, Payload: []byte("abc")}),
		"tcp6":       pt.TCP6("2001:db8::1", "2001:db8::2", 1000, 80, pt.TCPFields{Flags: packet.TCPAck, TS: true, TSVal: 5, Payload: []byte("abcde")}),
		"udp4":       udp,
		"udp6":       pt.UDP6("2001:db8::1", "2001:db8::2", 1, 2, []byte("odd")),
		"icmp4 echo": pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 1, 2, []byte("ping!")),
		"icmp6 echo": pt.ICMP6Echo("2001:db8::1", "2001:db8::2", 128, 1, 2, []byte("ping!")),
		"vlan udp":   pt.VLAN(udp, packet.EtherTypeVLAN, 7),
	} {
		t.Run(name, func(t *testing.T) {
			got := reserialize(t, f)
			// gopacket pads to the 60-byte Ethernet minimum.
			if len(got) < len(f) || string(got[:len(f)]) != string(f) {
				t.Errorf("gopacket re-serialized\n%x\nbuilder built\n%x", got, f)
			}
		})
	}
}

func TestFramesDecode(t *testing.T) {
	base := pt.UDP4("10.0.0.1", "10.0.0.2", 1, 2, make([]byte, 64))
	frags := pt.Fragments4(base, 24)
	if len(frags) != 3 {
		t.Fatalf("got %d fragments, want 3", len(frags))
	}
	g := gopacket.NewPacket(frags[1], layers.LayerTypeEthernet, gopacket.Default)
	ip := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip.FragOffset != 3 || ip.Flags&layers.IPv4MoreFragments == 0 || ip.Length != 20+24 {
		t.Errorf("fragment 1: got offset %d flags %v length %d, want 3, MF, 44", ip.FragOffset, ip.Flags, ip.Length)
	}
	ip2 := gopacket.NewPacket(frags[2], layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip2.Flags&layers.IPv4MoreFragments != 0 || ip2.Length != 20+72-48 {
		t.Errorf("last fragment: got flags %v length %d, want no MF, 44", ip2.Flags, ip2.Length)
	}

	f6 := pt.Fragments6(pt.UDP6("2001:db8::1", "2001:db8::2", 1, 2, make([]byte, 64)), 9, 32)
	if len(f6) != 3 {
		t.Fatalf("got %d IPv6 fragments, want 3", len(f6))
	}
	fh, ok := gopacket.NewPacket(f6[1], layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
	if !ok || fh.FragmentOffset != 4 || !fh.MoreFragments || fh.Identification != 9 {
		t.Errorf("IPv6 fragment 1: got %+v", fh)
	}

	q := pt.VLAN(pt.VLAN(base, packet.EtherTypeVLAN, 20), packet.EtherTypeQinQ, 10)
	var vids []uint16
	for _, l := range gopacket.NewPacket(q, layers.LayerTypeEthernet, gopacket.Default).Layers() {
		if d, ok := l.(*layers.Dot1Q); ok {
			vids = append(vids, d.VLANIdentifier)
		}
	}
	if len(vids) != 2 || vids[0] != 10 || vids[1] != 20 {
		t.Errorf("QinQ: got VLAN ids %v, want [10 20]", vids)
	}

	e := pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 4, pt.Quote(base, 28))
	ic := gopacket.NewPacket(e, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || len(ic.Payload) != 28 {
		t.Errorf("ICMP error: got %v with %d quoted bytes, want 3/4 with 28", ic.TypeCode, len(ic.Payload))
	}
}
