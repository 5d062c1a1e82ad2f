package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// htons converts a protocol number to network byte order for AF_PACKET.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket bound to ifc in ns, receiving every
// protocol, with PACKET_AUXDATA on so the VLAN tag the kernel strips on
// receive is reported.
func packetSocket(t *testing.T, l *lab.Lab, ns, ifc string) int {
	t.Helper()
	var fd int
	err := l.Do(ns, func() error {
		i, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: i.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket on %s: %v", ifc, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// taggedFrame builds an 802.1Q-tagged IPv4/UDP frame with valid checksums.
func taggedFrame(t *testing.T, src, dst net.HardwareAddr, vid uint16, sip, dip net.IP, sport uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeDot1Q}
	tag := &layers.Dot1Q{VLANIdentifier: vid, Type: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: sip, DstIP: dip}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 7000}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, tag, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// received is one captured frame with the tag the kernel reported.
type received struct {
	data   []byte
	vid    uint16
	tagged bool
}

// capture reads frames on fd until one contains marker or d passes.
func capture(fd int, marker []byte, d time.Duration) (received, bool) {
	buf := make([]byte, 4096)
	oob := make([]byte, 256)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil || !bytes.Contains(buf[:n], marker) {
			continue
		}
		r := received{data: append([]byte(nil), buf[:n]...)}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			// struct tpacket_auxdata: status, len, snaplen u32; mac, net,
			// vlan_tci, vlan_tpid u16.
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 20 {
				status := binary.NativeEndian.Uint32(m.Data[0:])
				tci := binary.NativeEndian.Uint16(m.Data[16:])
				r.tagged = status&unix.TP_STATUS_VLAN_VALID != 0
				r.vid = tci & 0x0fff
			}
		}
		// A tag still in the bytes (not stripped) counts too.
		if !r.tagged && n >= 18 && binary.BigEndian.Uint16(buf[12:]) == 0x8100 {
			r.tagged, r.vid = true, binary.BigEndian.Uint16(buf[14:])&0x0fff
		}
		return r, true
	}
	return received{}, false
}

// TestVLANTagged: 802.1Q-tagged frames injected on one host cross the bridge
// both ways and arrive with their tag. The kernel here has no VLAN devices,
// so frames are injected and captured with AF_PACKET.
func TestVLANTagged(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		l := r.Lab
		leftFD := packetSocket(t, l, l.LeftNS, l.LeftIf)
		rightFD := packetSocket(t, l, l.RightNS, l.RightIf)
		a, b := net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 1, 2)
		for _, tc := range []struct {
			name         string
			fromFD, toFD int
			src, dst     net.HardwareAddr
			sip, dip     net.IP
			vid          uint16
		}{
			{"left to right", leftFD, rightFD, l.LeftMAC, l.RightMAC, a, b, 100},
			{"right to left", rightFD, leftFD, l.RightMAC, l.LeftMAC, b, a, 100},
			{"left to right other vlan", leftFD, rightFD, l.LeftMAC, l.RightMAC, a, b, 3001},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for i := range 4 {
					marker := []byte(fmt.Sprintf("statewire-vlan-%s-%d-%d", tc.name, tc.vid, i))
					f := taggedFrame(t, tc.src, tc.dst, tc.vid, tc.sip, tc.dip, uint16(40000+i), marker)
					if _, err := unix.Write(tc.fromFD, f); err != nil {
						t.Fatalf("inject: %v", err)
					}
					got, ok := capture(tc.toFD, marker, 2*time.Second)
					if !ok {
						t.Fatalf("frame %d not captured at the far end", i)
					}
					if !got.tagged || got.vid != tc.vid {
						t.Errorf("frame %d: tag got (tagged %v, vid %d), want vid %d", i, got.tagged, got.vid, tc.vid)
					}
				}
			})
		}
		// The tag is the conntrack zone: the same 5-tuple on VLAN 100 and
		// VLAN 3001 are two connections. VLAN 100 has 4 flows each way
		// (different initiators), VLAN 3001 has 4.
		zones := map[uint16]int{}
		c := ctx(t, 5*time.Second)
		if err := r.DP.Table().Snapshot(c, func(es *flowtable.EntrySnapshot) {
			if es.Orig.Proto == 17 {
				zones[es.Orig.VLAN]++
			}
		}); err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		if zones[100] != 8 || zones[3001] != 4 || len(zones) != 2 {
			t.Errorf("UDP entries by VLAN got %v, want 8 in VLAN 100 and 4 in VLAN 3001", zones)
		}
	})
}
