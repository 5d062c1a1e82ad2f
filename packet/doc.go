// Package packet parses a frame in place: Ethernet, 802.1Q/802.1ad tags,
// IPv4 (with options), IPv6 (with its extension header chain), fragments,
// TCP (flags, sequence numbers, window, options), UDP, ICMP, ICMPv6 and the
// packet quoted inside an ICMP error.
//
// Parse never allocates and never panics: every malformed input yields a
// Reason. A Packet holds offsets and copied fields only, so one Packet value
// per worker is reused for every frame. Packet values are owned by the
// goroutine that parsed into them; Parse itself keeps no state and may run
// on any number of goroutines at once, each with its own Packet.
//
// ICMPClass is statewire's one classification of ICMP and ICMPv6 types
// (request, reply, error, redirect, untracked, invalid, and the request/reply
// pairs), taken from the kernel's tables; every package reads it.
//
// What the tracker must know:
//
//   - Lengths come from the IP header (IPLen, PayloadLen), never from the
//     captured bytes: a snaplen-truncated capture (len(frame) < wireLen) sets
//     Truncated and parses the fields that were captured. TCP options cut by
//     the capture set TCP.OptsBroken and keep the options read so far.
//   - A non-first fragment (FragOffset != 0) returns ReasonOK with no L4
//     fields; L4Off and PayloadOff point at the fragment's payload. A first
//     fragment parses its L4 header from its own bytes (ReasonTinyFragment
//     when they cannot hold it) and is never checksum-verified. The fragment
//     tracker produces ReasonFragmentOverlap and ReasonNonFirstFragment;
//     Parse does not.
//   - ICMP errors (IsICMPError) fill Inner and set HasInner, or set
//     InnerReason and return ReasonICMPBadInner, the outer fields filled.
//     A quoted non-first fragment gives HasInner with Inner.NonFirstFragment
//     and no ports (conntrack: INVALID). For a quoted ICMP packet
//     Inner.SrcPort/DstPort stay 0 and Inner.ICMP holds type, code, id and
//     sequence. ICMP is only ICMP over IPv4 and ICMPv6 only over IPv6, as in
//     nf_ct_get_tuple; the other pairings are generic protocols.
//   - IPv6 "no next header" (59) returns ReasonOK with Proto 59 and no L4;
//     the kernel's ipv6_skip_exthdr fails on it (no tuple: INVALID).
//   - The IPv4 header checksum is never verified (the bridge drops those
//     before conntrack; the captures carry broken ones). L4 checksums are
//     verified only with Options.VerifyChecksum and a complete, unfragmented
//     datagram; a zero UDP checksum on IPv4 means none (ChecksumChecked
//     stays false).
//   - TCP.WScale is not clamped; the tracker clamps it to 14.
//
// Parse takes the common frame (complete, untagged or one 802.1Q tag, IPv4
// without options and not a fragment or IPv6 without extension headers, TCP
// or UDP) through a straight-line fast path (fast.go) and everything else
// through the general parser. The two must agree field for field:
// FuzzParseDifferential checks both against a frozen copy of the parser
// (refparse_test.go), so a change of behaviour shows up as a divergence.
//
// Package packettest builds frames for tests in every package.
package packet
