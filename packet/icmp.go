package packet

// ICMPKind is what conntrack makes of an ICMP or ICMPv6 type. It is the one
// classification of ICMP types in statewire: the parser (which types quote
// a packet), the tracker (which types may create an entry), the flow table
// (which types have a key, and which type answers which) and the rules
// (which packets are judged in another connection's context) all read it.
type ICMPKind uint8

const (
	// ICMPInvalid is a type that neither creates nor matches an entry
	// (ICMPv4 types above 18 and the unpaired ones below, ICMPv6 types
	// from 128 up that are not listed below): INVALID.
	ICMPInvalid ICMPKind = iota
	// ICMPRequest creates an entry: echo, timestamp, information and
	// address mask requests; ICMPv6 echo and node information queries.
	ICMPRequest
	// ICMPReply matches the reply tuple of a request's entry; it never
	// creates one.
	ICMPReply
	// ICMPError quotes a packet and is RELATED to that packet's
	// connection (nf_conntrack_inet_error).
	ICMPError
	// ICMPRedirect is the ICMPv6 redirect (137): it quotes a packet in its
	// redirected-header option and is RELATED like an error when its code
	// is 0, its hop limit 255 and its source link-local
	// (nf_conntrack_icmpv6_redirect, kernel commit 7d7cfb48d813);
	// otherwise INVALID. The ICMPv4 redirect (5) is a plain error.
	ICMPRedirect
	// ICMPUntracked is never tracked: ICMPv6 neighbour discovery, MLD and
	// multicast router discovery (noct_valid_new): UNTRACKED.
	ICMPUntracked
)

var icmpKindNames = [...]string{"invalid", "request", "reply", "error", "redirect", "untracked"}

func (k ICMPKind) String() string {
	if int(k) < len(icmpKindNames) {
		return icmpKindNames[k]
	}
	return "unknown"
}

// icmpType is one row of the classification: the kind and, for a request
// or a reply, the type of the other half of the pair.
type icmpType struct {
	kind ICMPKind
	pair uint8
}

// icmpTypes[0] classifies ICMPv4 types, icmpTypes[1] ICMPv6 types, from
// Linux net/netfilter/nf_conntrack_proto_icmp.c and
// nf_conntrack_proto_icmpv6.c:
//
//   - ICMPv4 errors are icmp_is_err(): destination unreachable 3, source
//     quench 4, redirect 5, time exceeded 11, parameter problem 12.
//     Pairs are invmap: echo 8/0, timestamp 13/14, information 15/16,
//     address mask 17/18; valid_new holds the requests. Every other type
//     (and every type above NR_ICMP_TYPES, 18) is INVALID.
//   - ICMPv6: nf_conntrack_icmpv6_error first marks noct_valid_new
//     UNTRACKED (130-136, 143, 151, 152), sends redirect 137 to
//     nf_conntrack_icmpv6_redirect, then treats every type below 128 as an
//     error ("if (icmp6h->icmp6_type >= 128) return NF_ACCEPT", i.e. not
//     an error). Pairs are invmap: echo 128/129, node information 139/140;
//     valid_new holds the requests. Every other type is INVALID.
var icmpTypes = func() (t [2][256]icmpType) {
	v4, v6 := &t[0], &t[1]
	for _, typ := range []uint8{3, 4, 5, 11, 12} {
		v4[typ].kind = ICMPError
	}
	for typ := 0; typ < 128; typ++ {
		v6[typ].kind = ICMPError
	}
	v6[137].kind = ICMPRedirect
	for _, typ := range []uint8{130, 131, 132, 133, 134, 135, 136, 143, 151, 152} {
		v6[typ].kind = ICMPUntracked
	}
	pair := func(tab *[256]icmpType, req, reply uint8) {
		tab[req] = icmpType{ICMPRequest, reply}
		tab[reply] = icmpType{ICMPReply, req}
	}
	pair(v4, 8, 0)
	pair(v4, 13, 14)
	pair(v4, 15, 16)
	pair(v4, 17, 18)
	pair(v6, 128, 129)
	pair(v6, 139, 140)
	return t
}()

// icmpRow returns the classification of typ for IP version ipVersion:
// version 6 reads the ICMPv6 table, anything else the ICMPv4 one.
func icmpRow(ipVersion, typ uint8) icmpType {
	if ipVersion == 6 {
		return icmpTypes[1][typ]
	}
	return icmpTypes[0][typ]
}

// ICMPClass classifies an ICMP (ipVersion 4) or ICMPv6 (ipVersion 6) type
// as conntrack does (see ICMPKind). The code does not enter: a redirect's
// code is one of the checks the caller makes before calling it RELATED.
func ICMPClass(ipVersion, typ uint8) ICMPKind { return icmpRow(ipVersion, typ).kind }

// IsICMPError reports whether an ICMP (version 4) or ICMPv6 (version 6)
// type quotes a packet that conntrack looks up: ICMPv4 3, 4, 5, 11, 12;
// ICMPv6 every type below 128 and redirect 137. Parse fills Packet.Inner
// for exactly these types.
func IsICMPError(ipVersion, typ uint8) bool {
	k := icmpRow(ipVersion, typ).kind
	return k == ICMPError || k == ICMPRedirect
}

// ICMPPair returns the type of the other half of a request/reply pair:
// the reply type of a request type, the request type of a reply type (the
// kernel's invmap, which inverts a tuple). ok is false for every other
// type.
func ICMPPair(ipVersion, typ uint8) (other uint8, ok bool) {
	r := icmpRow(ipVersion, typ)
	return r.pair, r.kind == ICMPRequest || r.kind == ICMPReply
}

// ICMPRequestOf returns the request type of the pair typ belongs to, and
// whether typ is the reply: a connection is known by its request type
// whichever half is seen. ok is false for types without a pair.
func ICMPRequestOf(ipVersion, typ uint8) (req uint8, reply, ok bool) {
	switch r := icmpRow(ipVersion, typ); r.kind {
	case ICMPRequest:
		return typ, false, true
	case ICMPReply:
		return r.pair, true, true
	}
	return 0, false, false
}

// IsICMP reports whether an IP protocol number is the ICMP of its IP
// version: ICMP over IPv4, ICMPv6 over IPv6. Conntrack tracks the other
// pairings as neither (nf_conntrack_icmp{,v6}_packet refuse the other
// family), and Parse reads no ICMP header from them.
func IsICMP(ipVersion, proto uint8) bool {
	return proto == ProtoICMP && ipVersion == 4 || proto == ProtoICMPv6 && ipVersion == 6
}
