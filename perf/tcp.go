package perf

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/statewire/statewire/lab"
)

// TCP flags.
const (
	tcpSYN = 0x02
	tcpPSH = 0x08
	tcpACK = 0x10
)

// Initial sequence numbers of the handshakes: every flow uses the same
// ones (the devices track each 5-tuple on its own).
const (
	isnLeft  = 1000
	isnRight = 5000
)

// Offsets in an IPv4 TCP frame without options.
const (
	offTCPCsum    = 50
	offTCPPayload = 54
)

// tcpLayout is where the generator and the sink find the fields of a TCP
// frame; reply frames (right to left) carry the flow's ports swapped.
func tcpLayout(reply bool) layout {
	l := layout{sport: offSport, dport: offDport, csum: offTCPCsum, magic: offTCPPayload, stamp: offTCPPayload + 4}
	if reply {
		l.sport, l.dport = offDport, offSport
	}
	return l
}

// tcpFrame builds an IPv4 TCP segment with both ports 0 and a checksum
// valid for them (the generator updates it for each flow's ports). With
// payload the segment fills size (including FCS) and carries Magic; without
// it is a bare header padded to the 60-byte minimum.
func tcpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, size int, flags uint8, seq, ack uint32, payload bool) []byte {
	ipLen := 40
	if payload {
		ipLen = size - 4 - 14
	}
	f := make([]byte, max(14+ipLen, 60))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:16], src.AsSlice())
	copy(ip[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip, 0)))
	tcp := f[34 : 14+ipLen]
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	if payload && len(tcp) >= 24 {
		binary.LittleEndian.PutUint32(f[offTCPPayload:], Magic)
	}
	var pseudo [12]byte
	copy(pseudo[0:4], src.AsSlice())
	copy(pseudo[4:8], dst.AsSlice())
	pseudo[9] = 6
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum16(tcp, sum16(pseudo[:], 0))))
	return f
}

// sum16 adds b as big-endian 16-bit words to s (one's complement, unfolded).
func sum16(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// handshakeRate paces the handshake phases.
const handshakeRate = 100e3

// handshake opens every flow of the TCP traffic with a real three-way
// handshake through the device (SYN from the left host, SYN/ACK from the
// right host, ACK from the left), so the data segments that follow are
// ESTABLISHED in every device. The reply comes from a generator on the
// right host's veth.
func (r *runner) handshake(d *device, flows int) error {
	l := d.lab
	left, right := lab.LeftIPv4.Addr(), lab.RightIPv4.Addr()
	fwd, rev := tcpLayout(false), tcpLayout(true)
	for _, ph := range []struct {
		name    string
		ns, ifc string
		tmpl    []byte
		lay     *layout
	}{
		{"SYN", l.LeftNS, l.LeftIf, tcpFrame(l.LeftMAC, l.RightMAC, left, right, 64, tcpSYN, isnLeft, 0, false), &fwd},
		{"SYN/ACK", l.RightNS, l.RightIf, tcpFrame(l.RightMAC, l.LeftMAC, right, left, 64, tcpSYN|tcpACK, isnRight, isnLeft+1, false), &rev},
		{"ACK", l.LeftNS, l.LeftIf, tcpFrame(l.LeftMAC, l.RightMAC, left, right, 64, tcpACK, isnLeft+1, isnRight+1, false), &fwd},
	} {
		g, err := NewGenerator(GenConfig{NS: ph.ns, Ifname: ph.ifc, FrameSize: 64, Flows: flows, CPU: r.o.GenCPU, tmpl: ph.tmpl, lay: ph.lay})
		if err != nil {
			return fmt.Errorf("perf: TCP %s generator: %w", ph.name, err)
		}
		_, _, err = g.SendCount(handshakeRate, uint64(flows))
		g.Close()
		if err != nil {
			return fmt.Errorf("perf: TCP %s: %w", ph.name, err)
		}
		time.Sleep(r.settle)
	}
	return nil
}
