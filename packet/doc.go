// Package packet parses a frame in place: Ethernet, 802.1Q/802.1ad tags,
// IPv4 (with options), IPv6 (with its extension header chain), fragments,
// TCP (flags, sequence numbers, window, options), UDP, ICMP, ICMPv6 and the
// packet quoted inside an ICMP error.
//
// Parse never allocates and never panics: every malformed input yields a
// Reason. A Packet holds offsets and copied fields only, so one Packet value
// per worker is reused for every frame. Packet values are owned by the
// goroutine that parsed into them.
package packet
