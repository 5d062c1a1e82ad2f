package packet

// Addr is an IP address in 16-byte form. IPv4 addresses are stored
// IPv4-mapped (::ffff:a.b.c.d) so that one fixed-size, comparable type serves
// both families in flow keys; netip.AddrFrom16(a).Unmap() turns it back.
type Addr [16]byte

// L4 protocol numbers the tracker knows by name.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// TCP flag bits as they appear in byte 13 of the TCP header.
const (
	TCPFin uint8 = 0x01
	TCPSyn uint8 = 0x02
	TCPRst uint8 = 0x04
	TCPPsh uint8 = 0x08
	TCPAck uint8 = 0x10
	TCPUrg uint8 = 0x20
	TCPEce uint8 = 0x40
	TCPCwr uint8 = 0x80
)

// WScaleAbsent is TCP.WScale when the segment carried no window scale option.
const WScaleAbsent uint8 = 0xff

// MaxSACKBlocks is the most SACK blocks a TCP option can carry (40 option
// bytes: 2 + 4×8 = 34).
const MaxSACKBlocks = 4

// SACKBlock is one left/right edge pair of a TCP SACK option.
type SACKBlock struct{ Left, Right uint32 }

// TCP holds the parsed TCP header fields the tracker needs.
type TCP struct {
	Seq, Ack   uint32
	Flags      uint8  // TCPFin..TCPCwr
	DataOff    uint8  // header length in bytes (data offset × 4)
	Window     uint16 // raw, unscaled
	MSS        uint16 // 0 when absent
	WScale     uint8  // WScaleAbsent when absent; not clamped (the tracker clamps to 14)
	SACKPerm   bool
	HasTS      bool
	NumSACK    uint8
	TSVal      uint32
	TSEcr      uint32
	SACK       [MaxSACKBlocks]SACKBlock
	OptsBroken bool // options were cut short by the header length; parsed as far as they went
}

// ICMP holds the ICMP or ICMPv6 header fields. ID is meaningful for the
// request/reply types only.
type ICMP struct {
	Type, Code uint8
	ID         uint16
	Seq        uint16
}

// Inner is the IP header and first L4 bytes quoted inside an ICMP or ICMPv6
// error message.
type Inner struct {
	IPVersion        uint8
	Src, Dst         Addr
	Proto            uint8
	SrcPort, DstPort uint16 // TCP/UDP (and other port-based protocols)
	ICMP             ICMP   // when Proto is ICMP/ICMPv6
	NonFirstFragment bool   // a non-first fragment was quoted: no L4 header
}

// Packet is the parse result of one frame. It holds offsets into the frame
// and copies of the few fields the tracker reads, never a reference to the
// frame itself, so it can be reused across frames without allocation.
//
// Lengths are taken from the IP header, not from the captured bytes, so a
// snaplen-truncated capture still accounts sequence space correctly.
type Packet struct {
	// Layer 2.
	EtherType uint16   // after VLAN tags
	VLAN      uint16   // VLAN id of the innermost tag (0: untagged)
	OuterVLAN uint16   // VLAN id of the outer tag when two tags (QinQ), else 0
	VLANTags  uint8    // number of 802.1Q/802.1ad tags
	L3Off     uint16   // offset of the IP header in the frame
	MAC       [12]byte // the frame's destination (0..5) and source (6..11) MAC addresses

	// Layer 3. IPVersion is 0 for non-IP frames (ARP, LLDP, ...).
	IPVersion uint8
	Proto     uint8 // L4 protocol after the IPv6 extension header chain
	TTL       uint8 // TTL or hop limit
	TOS       uint8 // IPv4 TOS byte or IPv6 traffic class (DSCP << 2 | ECN)
	Src, Dst  Addr
	IPLen     uint32 // IP total length (IPv4) or 40 + payload length (IPv6), from the header
	L4Off     uint16 // offset of the L4 header in the frame
	Truncated bool   // fewer bytes captured than the IP header says (snaplen)

	// Fragments. A datagram that is not a fragment has Fragment == false.
	Fragment   bool
	FragOffset uint16 // in bytes
	MoreFrags  bool
	FragID     uint32

	// Layer 4.
	SrcPort, DstPort uint16 // TCP, UDP, SCTP, DCCP, UDP-Lite
	TCP              TCP
	ICMP             ICMP
	HasInner         bool // ICMP error with a quoted packet that parsed
	Inner            Inner
	InnerReason      Reason // why the quoted packet did not parse (when !HasInner on an error type)

	// PayloadOff is the offset of the L4 payload in the frame; PayloadLen its
	// length from the IP header (may exceed the captured bytes).
	PayloadOff uint16
	PayloadLen uint32

	// ChecksumOK reports whether the L4 checksum verified; only set when the
	// caller asked for checksum verification and all bytes were present.
	ChecksumChecked bool
	ChecksumOK      bool

	// ChecksumPartial reports a TCP or UDP datagram whose checksum field
	// holds the folded pseudo-header sum instead of the checksum: the frame
	// of a local sender that offloads checksums (the kernel's
	// CHECKSUM_PARTIAL; a veth hands such frames over as they are). The
	// kernel sees CHECKSUM_PARTIAL as valid, so Parse returns ReasonOK for
	// it with or without VerifyChecksum (ChecksumOK stays false); the
	// receiver, which never sees the sender's skb, would drop it, so
	// whoever forwards it calls CompleteChecksum first. Set only for a
	// complete, unfragmented datagram whose full check fails.
	ChecksumPartial bool
	// PartialSum is, when ChecksumPartial, the folded one's-complement sum
	// of the pseudo-header and the segment as received; CompleteChecksum
	// derives the checksum from it without summing the segment again.
	PartialSum uint16
}

// IsIPv4 reports whether a is an IPv4-mapped address.
func (a Addr) IsIPv4() bool {
	return a[10] == 0xff && a[11] == 0xff && a[0]|a[1]|a[2]|a[3]|a[4]|a[5]|a[6]|a[7]|a[8]|a[9] == 0
}

// AddrFrom4 returns the IPv4-mapped form of an IPv4 address.
func AddrFrom4(b [4]byte) Addr {
	var a Addr
	a[10], a[11] = 0xff, 0xff
	a[12], a[13], a[14], a[15] = b[0], b[1], b[2], b[3]
	return a
}
