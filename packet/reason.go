package packet

// Reason says why a frame could not be parsed (or ReasonOK). It is a small
// integer so it can index counter arrays; String is for logs and reports
// only, never the hot path.
type Reason uint8

// Parse outcomes. Keep String and the order in sync; counters are indexed by
// these values.
const (
	ReasonOK                Reason = iota
	ReasonNotIP                    // not IPv4/IPv6 (ARP, LLDP, ...): not an error, no tracking
	ReasonTruncatedEthernet        // shorter than an Ethernet header
	ReasonTruncatedVLAN            // a VLAN tag cut short
	ReasonTooManyVLANTags          // more than two stacked tags
	ReasonTruncatedIPv4            // fewer than 20 bytes of IPv4 header
	ReasonIPv4BadIHL               // IHL < 5 or beyond the frame
	ReasonIPv4BadLength            // total length < IHL×4 or beyond the wire length
	ReasonIPv4BadVersion           // EtherType IPv4 but version field not 4
	ReasonTruncatedIPv6            // fewer than 40 bytes of IPv6 header
	ReasonIPv6BadVersion           // EtherType IPv6 but version field not 6
	ReasonIPv6BadLength            // payload length beyond the wire length
	ReasonIPv6ExtChain             // extension header chain truncated, too long or malformed
	ReasonTruncatedTCP             // fewer than 20 bytes of TCP header
	ReasonTCPBadDataOffset         // data offset × 4 < 20 or beyond the segment
	ReasonTruncatedUDP             // fewer than 8 bytes of UDP header
	ReasonUDPBadLength             // UDP length < 8 or beyond the IP payload
	ReasonTruncatedICMP            // fewer than 8 bytes of ICMP header
	ReasonICMPBadInner             // ICMP error whose quoted packet does not parse
	ReasonBadChecksum              // L4 checksum verified and wrong
	ReasonTinyFragment             // first fragment too small to hold the L4 header (RFC 1858)
	ReasonFragmentOverlap          // fragment overlapping another of the same datagram (RFC 1858/3128)
	ReasonNonFirstFragment         // a non-first fragment reached the tracker
	NumReasons
)

var reasonNames = [...]string{
	ReasonOK:                "ok",
	ReasonNotIP:             "not-ip",
	ReasonTruncatedEthernet: "truncated-ethernet",
	ReasonTruncatedVLAN:     "truncated-vlan",
	ReasonTooManyVLANTags:   "too-many-vlan-tags",
	ReasonTruncatedIPv4:     "truncated-ipv4",
	ReasonIPv4BadIHL:        "ipv4-bad-ihl",
	ReasonIPv4BadLength:     "ipv4-bad-length",
	ReasonIPv4BadVersion:    "ipv4-bad-version",
	ReasonTruncatedIPv6:     "truncated-ipv6",
	ReasonIPv6BadVersion:    "ipv6-bad-version",
	ReasonIPv6BadLength:     "ipv6-bad-length",
	ReasonIPv6ExtChain:      "ipv6-ext-chain",
	ReasonTruncatedTCP:      "truncated-tcp",
	ReasonTCPBadDataOffset:  "tcp-bad-data-offset",
	ReasonTruncatedUDP:      "truncated-udp",
	ReasonUDPBadLength:      "udp-bad-length",
	ReasonTruncatedICMP:     "truncated-icmp",
	ReasonICMPBadInner:      "icmp-bad-inner",
	ReasonBadChecksum:       "bad-checksum",
	ReasonTinyFragment:      "tiny-fragment",
	ReasonFragmentOverlap:   "fragment-overlap",
	ReasonNonFirstFragment:  "non-first-fragment",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}
