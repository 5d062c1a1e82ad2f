package conformance

import (
	"encoding/binary"
	"net/netip"
)

// Ethertypes the oracle looks at.
const (
	etherIPv4  = 0x0800
	etherIPv6  = 0x86dd
	etherVLAN  = 0x8100
	etherQinQ  = 0x88a8
	etherQinQ2 = 0x9100
)

// l3 finds the network header of an Ethernet frame behind any number of
// 802.1Q/802.1ad tags. ok is false for frames too short for the tags.
func l3(frame []byte) (ethertype uint16, off int, ok bool) {
	if len(frame) < 14 {
		return 0, 0, false
	}
	off = 12
	for {
		if len(frame) < off+2 {
			return 0, 0, false
		}
		et := binary.BigEndian.Uint16(frame[off:])
		switch et {
		case etherVLAN, etherQinQ, etherQinQ2:
			off += 4
			continue
		}
		return et, off + 2, true
	}
}

// kind is what the oracle does with a frame.
type kind int

const (
	kindIP       kind = iota // inject and read the state back
	kindFragment             // inject (the kernel reassembles), label SKIP:fragment
	kindNonIP                // not injected, label SKIP:non-ip
)

// classify decides a frame's kind. Malformed IP (too short to tell) is
// kindIP: the kernel decides, usually by dropping it.
func classify(frame []byte) kind {
	et, off, ok := l3(frame)
	if !ok {
		return kindNonIP
	}
	switch et {
	case etherIPv4:
		if len(frame) < off+20 {
			return kindIP
		}
		if binary.BigEndian.Uint16(frame[off+6:])&0x3fff != 0 { // MF or offset
			return kindFragment
		}
		return kindIP
	case etherIPv6:
		if ipv6HasFragment(frame[off:]) {
			return kindFragment
		}
		return kindIP
	}
	return kindNonIP
}

// ipv6HasFragment walks the extension-header chain looking for a Fragment
// header (44).
func ipv6HasFragment(p []byte) bool {
	if len(p) < 40 {
		return false
	}
	nh := p[6]
	off := 40
	for i := 0; i < 16; i++ {
		switch nh {
		case 44:
			return true
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(p) < off+2 {
				return false
			}
			nh = p[off]
			off += (int(p[off+1]) + 1) * 8
		case 51: // AH: length in 4-octet units minus 2
			if len(p) < off+2 {
				return false
			}
			nh = p[off]
			off += (int(p[off+1]) + 2) * 4
		default:
			return false
		}
	}
	return false
}

// fixIPv4Checksum recomputes the IPv4 header checksum in place when the
// header is complete: the bridge drops a bad one before conntrack sees the
// packet, and capture tools often record checksums the NIC filled in later.
func fixIPv4Checksum(frame []byte) {
	et, off, ok := l3(frame)
	if !ok || et != etherIPv4 || len(frame) < off+20 || frame[off]>>4 != 4 {
		return
	}
	ihl := int(frame[off]&0x0f) * 4
	if ihl < 20 || len(frame) < off+ihl {
		return
	}
	h := frame[off : off+ihl]
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
}

// dscp reads the DSCP of the IP packet in frame; ok is false for non-IP.
func dscp(frame []byte) (v uint8, ok bool) {
	et, off, ok := l3(frame)
	if !ok {
		return 0, false
	}
	switch et {
	case etherIPv4:
		if len(frame) < off+2 {
			return 0, false
		}
		return frame[off+1] >> 2, true
	case etherIPv6:
		if len(frame) < off+2 {
			return 0, false
		}
		tc := frame[off]<<4 | frame[off+1]>>4
		return tc >> 2, true
	}
	return 0, false
}

// sameL3 reports whether got carries the IP packet of sent: everything from
// the addresses on is equal (the bridge changes only DSCP and, for IPv4, the
// header checksum; VLAN tags may move between the frame and metadata).
func sameL3(sent, got []byte) bool {
	et1, o1, ok1 := l3(sent)
	et2, o2, ok2 := l3(got)
	if !ok1 || !ok2 || et1 != et2 {
		return false
	}
	skip := 4 // IPv6: version, traffic class, flow label
	if et1 == etherIPv4 {
		skip = 12
	}
	// Ethernet padding beyond the IP length is trimmed by br_netfilter.
	end := len(sent)
	if n := ipLen(sent[o1:], et1); n > 0 && o1+n < end {
		end = o1 + n
	}
	a, b := sent[min(end, o1+skip):end], got[min(len(got), o2+skip):]
	if len(b) < len(a) {
		return false
	}
	return string(a) == string(b[:len(a)])
}

// ipLen is the length of the IP packet p claims (0 if unknown).
func ipLen(p []byte, et uint16) int {
	switch {
	case et == etherIPv4 && len(p) >= 4:
		return int(binary.BigEndian.Uint16(p[2:]))
	case et == etherIPv6 && len(p) >= 6:
		return 40 + int(binary.BigEndian.Uint16(p[4:]))
	}
	return 0
}

// side is the host a frame is injected from.
type side int

const (
	left side = iota
	right
)

// sider assigns each frame of a capture to a side: the first frame's source
// is left; afterwards a known source MAC (or a known destination MAC, on the
// other side) decides, then a known source (or destination) IP, which is
// the IP that started the flow; unknown frames go left. MACs that cannot
// locate a host (zero, multicast, source equal to destination, as in
// loopback captures) are ignored.
type sider struct {
	mac  map[[6]byte]side
	ip   map[netip.Addr]side
	seen bool // a first frame was assigned
}

func newSider() *sider {
	return &sider{mac: map[[6]byte]side{}, ip: map[netip.Addr]side{}}
}

func usableMAC(m [6]byte) bool {
	return m != [6]byte{} && m[0]&1 == 0
}

func (s *sider) side(frame []byte) side {
	var dst, src [6]byte
	if len(frame) >= 12 {
		copy(dst[:], frame[0:6])
		copy(src[:], frame[6:12])
	}
	macOK := src != dst
	sip, dip := ips(frame)
	ipOK := sip.IsValid() && sip != dip
	first := !s.seen
	s.seen = true
	d := left
	switch {
	case first:
	case macOK && usableMAC(src) && s.has(src):
		d = s.mac[src]
	case macOK && usableMAC(dst) && s.has(dst):
		d = s.mac[dst] ^ 1
	case ipOK && s.hasIP(sip):
		d = s.ip[sip]
	case ipOK && dip.IsValid() && s.hasIP(dip):
		d = s.ip[dip] ^ 1
	}
	if macOK && usableMAC(src) && !s.has(src) {
		s.mac[src] = d
	}
	if ipOK && !s.hasIP(sip) {
		s.ip[sip] = d
		if dip.IsValid() && !s.hasIP(dip) {
			s.ip[dip] = d ^ 1
		}
	}
	return d
}

func (s *sider) has(m [6]byte) bool      { _, ok := s.mac[m]; return ok }
func (s *sider) hasIP(a netip.Addr) bool { _, ok := s.ip[a]; return ok }

// ips returns the source and destination address of the IP packet in frame.
func ips(frame []byte) (src, dst netip.Addr) {
	et, off, ok := l3(frame)
	if !ok {
		return
	}
	switch et {
	case etherIPv4:
		if len(frame) >= off+20 {
			src = netip.AddrFrom4([4]byte(frame[off+12 : off+16]))
			dst = netip.AddrFrom4([4]byte(frame[off+16 : off+20]))
		}
	case etherIPv6:
		if len(frame) >= off+40 {
			src = netip.AddrFrom16([16]byte(frame[off+8 : off+24]))
			dst = netip.AddrFrom16([16]byte(frame[off+24 : off+40]))
		}
	}
	return
}
