package statemachine

// ICMPKind classifies an ICMP or ICMPv6 type for the tracker.
type ICMPKind uint8

const (
	// ICMPInvalid: a type that can neither create nor match an entry
	// (unknown, > 18 for ICMPv4, or without a request/reply pair).
	ICMPInvalid ICMPKind = iota
	// ICMPRequest creates an entry (echo, timestamp, info, mask, node info).
	ICMPRequest
	// ICMPReply matches the reply tuple of a request's entry; it never
	// creates one.
	ICMPReply
	// ICMPError quotes a packet whose connection it is RELATED to.
	ICMPError
	// ICMPUntracked is never tracked (ICMPv6 ND and MLD).
	ICMPUntracked
)

var icmpKindNames = [...]string{"invalid", "request", "reply", "error", "untracked"}

func (k ICMPKind) String() string {
	if int(k) < len(icmpKindNames) {
		return icmpKindNames[k]
	}
	return "unknown"
}

// icmp4Kind is indexed by ICMPv4 type 0..18 (kernel NR_ICMP_TYPES).
var icmp4Kind = [19]ICMPKind{
	0: ICMPReply, 8: ICMPRequest, // echo
	13: ICMPRequest, 14: ICMPReply, // timestamp
	15: ICMPRequest, 16: ICMPReply, // information
	17: ICMPRequest, 18: ICMPReply, // address mask
	3: ICMPError, 4: ICMPError, 5: ICMPError, 11: ICMPError, 12: ICMPError,
}

// icmp4Inverse maps request↔reply types (kernel icmp invmap).
var icmp4Inverse = [19]uint8{0: 8, 8: 0, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}

// ICMPClass classifies an ICMP (l3ver 4) or ICMPv6 (l3ver 6) type. For
// ICMPv6 every type below 128 is an error (the kernel treats all of them
// so); 130-136, 143, 151 and 152 (ND, MLD, multicast router discovery) are
// untracked; redirect 137 with code 0 is reported as an error: the caller
// must still check hop limit 255, a link-local source and the
// redirected-header option before treating it as RELATED.
func ICMPClass(l3ver uint8, typ, code uint8) ICMPKind {
	if l3ver == 6 {
		switch {
		case typ < 128:
			return ICMPError
		case typ == 128 || typ == 139:
			return ICMPRequest
		case typ == 129 || typ == 140:
			return ICMPReply
		case typ >= 130 && typ <= 136, typ == 143, typ == 151, typ == 152:
			return ICMPUntracked
		case typ == 137 && code == 0:
			return ICMPError
		}
		return ICMPInvalid
	}
	if int(typ) < len(icmp4Kind) {
		return icmp4Kind[typ]
	}
	return ICMPInvalid
}

// ICMPReplyType returns the type of the answer to a request type (and of
// the request for a reply type): the type in the reply tuple. ok is false
// for types without a pair.
func ICMPReplyType(l3ver, typ uint8) (uint8, bool) {
	if l3ver == 6 {
		switch typ {
		case 128:
			return 129, true
		case 129:
			return 128, true
		case 139:
			return 140, true
		case 140:
			return 139, true
		}
		return 0, false
	}
	if int(typ) < len(icmp4Inverse) {
		k := icmp4Kind[typ]
		if k == ICMPRequest || k == ICMPReply {
			return icmp4Inverse[typ], true
		}
	}
	return 0, false
}
