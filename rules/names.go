package rules

import (
	"strconv"
	"strings"
)

// HelperID names a conntrack helper attached by `-j CT --helper NAME` in the
// raw table. The zero value means no helper.
type HelperID uint8

// Helpers statewire implements (see spec/conntrack.md §7).
const (
	HelperNone HelperID = iota
	HelperFTP
	HelperIRC
	HelperTFTP
	HelperAmanda
	NumHelpers
)

var helperNames = [...]string{
	HelperNone:   "",
	HelperFTP:    "ftp",
	HelperIRC:    "irc",
	HelperTFTP:   "tftp",
	HelperAmanda: "amanda",
}

// String returns the helper's iptables name ("ftp"), or "" for HelperNone.
func (h HelperID) String() string {
	if int(h) < len(helperNames) {
		return helperNames[h]
	}
	return "helper(" + strconv.Itoa(int(h)) + ")"
}

func parseHelper(s string) (HelperID, bool) {
	for i := HelperFTP; i < NumHelpers; i++ {
		if helperNames[i] == s {
			return i, true
		}
	}
	return HelperNone, false
}

// Protocol names accepted after -p. "all" (0) means any protocol.
var protoByName = map[string]uint8{
	"all":       0,
	"icmp":      1,
	"igmp":      2,
	"tcp":       6,
	"udp":       17,
	"gre":       47,
	"esp":       50,
	"ah":        51,
	"ipv6-icmp": 58,
	"icmpv6":    58,
	"icmp6":     58,
	"sctp":      132,
	"udplite":   136,
	"dccp":      33,
}

// protoName is the name iptables-save prints for a protocol number.
func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 2:
		return "igmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 33:
		return "dccp"
	case 47:
		return "gre"
	case 50:
		return "esp"
	case 51:
		return "ah"
	case 58:
		return "ipv6-icmp"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}

func parseProto(s string) (uint8, bool) {
	if p, ok := protoByName[strings.ToLower(s)]; ok {
		return p, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, false
	}
	return uint8(n), true
}

// icmpName is one named ICMP type, with a code range (0..255: any code).
type icmpName struct {
	name         string
	typ          uint8
	codeMin, max uint8
}

// icmp4Names follows libxt_icmp.c (iptables), aliases included.
var icmp4Names = []icmpName{
	{"any", 0xff, 0, 0xff},
	{"echo-reply", 0, 0, 0xff},
	{"pong", 0, 0, 0xff},
	{"destination-unreachable", 3, 0, 0xff},
	{"network-unreachable", 3, 0, 0},
	{"host-unreachable", 3, 1, 1},
	{"protocol-unreachable", 3, 2, 2},
	{"port-unreachable", 3, 3, 3},
	{"fragmentation-needed", 3, 4, 4},
	{"source-route-failed", 3, 5, 5},
	{"network-unknown", 3, 6, 6},
	{"host-unknown", 3, 7, 7},
	{"network-prohibited", 3, 9, 9},
	{"host-prohibited", 3, 10, 10},
	{"TOS-network-unreachable", 3, 11, 11},
	{"TOS-host-unreachable", 3, 12, 12},
	{"communication-prohibited", 3, 13, 13},
	{"host-precedence-violation", 3, 14, 14},
	{"precedence-cutoff", 3, 15, 15},
	{"source-quench", 4, 0, 0xff},
	{"redirect", 5, 0, 0xff},
	{"network-redirect", 5, 0, 0},
	{"host-redirect", 5, 1, 1},
	{"TOS-network-redirect", 5, 2, 2},
	{"TOS-host-redirect", 5, 3, 3},
	{"echo-request", 8, 0, 0xff},
	{"ping", 8, 0, 0xff},
	{"router-advertisement", 9, 0, 0xff},
	{"router-solicitation", 10, 0, 0xff},
	{"time-exceeded", 11, 0, 0xff},
	{"ttl-exceeded", 11, 0, 0xff},
	{"ttl-zero-during-transit", 11, 0, 0},
	{"ttl-zero-during-reassembly", 11, 1, 1},
	{"parameter-problem", 12, 0, 0xff},
	{"ip-header-bad", 12, 0, 0},
	{"required-option-missing", 12, 1, 1},
	{"timestamp-request", 13, 0, 0xff},
	{"timestamp-reply", 14, 0, 0xff},
	{"address-mask-request", 17, 0, 0xff},
	{"address-mask-reply", 18, 0, 0xff},
}

// icmp6Names follows libip6t_icmp6.c.
var icmp6Names = []icmpName{
	{"destination-unreachable", 1, 0, 0xff},
	{"no-route", 1, 0, 0},
	{"communication-prohibited", 1, 1, 1},
	{"beyond-scope", 1, 2, 2},
	{"address-unreachable", 1, 3, 3},
	{"port-unreachable", 1, 4, 4},
	{"failed-policy", 1, 5, 5},
	{"reject-route", 1, 6, 6},
	{"packet-too-big", 2, 0, 0xff},
	{"time-exceeded", 3, 0, 0xff},
	{"ttl-exceeded", 3, 0, 0xff},
	{"ttl-zero-during-transit", 3, 0, 0},
	{"ttl-zero-during-reassembly", 3, 1, 1},
	{"parameter-problem", 4, 0, 0xff},
	{"bad-header", 4, 0, 0},
	{"unknown-header-type", 4, 1, 1},
	{"unknown-option", 4, 2, 2},
	{"echo-request", 128, 0, 0xff},
	{"ping", 128, 0, 0xff},
	{"echo-reply", 129, 0, 0xff},
	{"pong", 129, 0, 0xff},
	{"mld-listener-query", 130, 0, 0xff},
	{"mld-listener-report", 131, 0, 0xff},
	{"mld-listener-done", 132, 0, 0xff},
	{"mld-listener-reduction", 132, 0, 0xff},
	{"router-solicitation", 133, 0, 0xff},
	{"router-advertisement", 134, 0, 0xff},
	{"neighbour-solicitation", 135, 0, 0xff},
	{"neighbor-solicitation", 135, 0, 0xff},
	{"neighbour-advertisement", 136, 0, 0xff},
	{"neighbor-advertisement", 136, 0, 0xff},
	{"redirect", 137, 0, 0xff},
}

// parseICMPType reads NAME, N or N/C. v6 selects the ICMPv6 name table;
// only IPv4 knows "any".
func parseICMPType(s string, v6 bool) (typ, codeMin, codeMax uint8, ok bool) {
	names := icmp4Names
	if v6 {
		names = icmp6Names
	}
	for _, n := range names {
		if strings.EqualFold(n.name, s) {
			return n.typ, n.codeMin, n.max, true
		}
	}
	ts, cs, hasCode := strings.Cut(s, "/")
	t, err := strconv.ParseUint(ts, 10, 8)
	if err != nil {
		return 0, 0, 0, false
	}
	if !v6 && t == 0xff {
		// 255 is the kernel's "any" marker, not a type one can name by number.
		return 0, 0, 0, false
	}
	if !hasCode {
		return uint8(t), 0, 0xff, true
	}
	c, err := strconv.ParseUint(cs, 10, 8)
	if err != nil {
		return 0, 0, 0, false
	}
	return uint8(t), uint8(c), uint8(c), true
}

// Known iptables targets and modules that statewire does not implement; they
// get ErrUnsupported instead of ErrUnknown so the message says so.
var unsupportedTargets = map[string]bool{
	"NFLOG": true, "MASQUERADE": true, "SNAT": true, "DNAT": true, "REDIRECT": true,
	"TCPMSS": true, "TRACE": true, "NFQUEUE": true, "QUEUE": true, "TEE": true,
	"CLASSIFY": true, "DSCP": true, "TOS": true, "SET": true, "AUDIT": true,
	"CHECKSUM": true, "CONNSECMARK": true, "SECMARK": true, "TPROXY": true,
}

var unsupportedMatches = map[string]bool{
	"string": true,
	"owner":  true, "u32": true,
	"time": true, "helper": true, "policy": true, "frag": true, "ipv6header": true,
	"rt": true, "hbh": true, "dst": true, "ah": true, "esp": true, "sctp": true,
	"dccp": true, "ecn": true, "statistic": true, "quota": true, "bpf": true,
	"cgroup": true, "socket": true, "rpfilter": true, "connbytes": true,
	"devgroup": true, "realm": true, "cluster": true, "nfacct": true,
	"osf": true, "ipvs": true, "cpu": true, "tcpmss": true, "udplite": true,
}
