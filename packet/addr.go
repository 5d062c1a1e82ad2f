package packet

import "net/netip"

// AddrFrom16 returns the address with the given 16 bytes (an IPv6 address,
// or an IPv4-mapped one).
func AddrFrom16(b [16]byte) Addr { return Addr(b) }

// AddrFromNetip returns a in the 16-byte form, IPv4 mapped. The zero
// netip.Addr gives the zero Addr.
func AddrFromNetip(a netip.Addr) Addr {
	if !a.IsValid() {
		return Addr{}
	}
	return Addr(a.As16())
}

// Netip returns a as a netip.Addr: IPv4 for an IPv4-mapped address, IPv6
// otherwise.
func (a Addr) Netip() netip.Addr { return netip.AddrFrom16(a).Unmap() }

// String formats a as netip does. It allocates: keep it off the hot path.
func (a Addr) String() string { return a.Netip().String() }

// Payload returns the captured L4 payload of the frame p was parsed from:
// frame[PayloadOff:PayloadOff+PayloadLen], cut to the captured bytes, so it
// may be shorter than PayloadLen (snaplen) and is nil when nothing of it
// was captured. It never panics, whatever p and frame hold.
func (p *Packet) Payload(frame []byte) []byte {
	off := int(p.PayloadOff)
	if off >= len(frame) {
		return nil
	}
	end := off + int(p.PayloadLen)
	if end > len(frame) {
		end = len(frame)
	}
	return frame[off:end:end]
}

// L4 returns the captured bytes from the L4 header to the end of the
// datagram (by its IP header), cut to the captured bytes; nil when none.
func (p *Packet) L4(frame []byte) []byte {
	off := int(p.L4Off)
	end := int(p.L3Off) + int(p.IPLen)
	if p.IPVersion == 0 || off >= len(frame) || end <= off {
		return nil
	}
	if end > len(frame) {
		end = len(frame)
	}
	return frame[off:end:end]
}

// IsICMPError reports whether p is an ICMP or ICMPv6 error that quotes a
// packet (see IsICMPError). A non-first fragment carries no ICMP header,
// so it is none.
func (p *Packet) IsICMPError() bool {
	return IsICMP(p.IPVersion, p.Proto) && !(p.Fragment && p.FragOffset != 0) &&
		IsICMPError(p.IPVersion, p.ICMP.Type)
}
