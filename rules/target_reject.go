package rules

import "strings"

// RejectWith is the answer a REJECT rule sends (--reject-with). The ICMP
// kinds are family-specific, as in iptables and ip6tables; RejectTCPReset
// serves both.
type RejectWith uint8

// The answers of REJECT. RejectNone means the verdict is a plain DROP.
const (
	RejectNone RejectWith = iota
	RejectTCPReset
	// IPv4 ICMP destination unreachable (type 3), by code.
	RejectNetUnreach   // icmp-net-unreachable, code 0
	RejectHostUnreach  // icmp-host-unreachable, code 1
	RejectProtoUnreach // icmp-proto-unreachable, code 2
	RejectPortUnreach  // icmp-port-unreachable, code 3 (the IPv4 default)
	RejectNetProhib    // icmp-net-prohibited, code 9
	RejectHostProhib   // icmp-host-prohibited, code 10
	RejectAdminProhib  // icmp-admin-prohibited, code 13
	// ICMPv6 destination unreachable (type 1), by code.
	Reject6NoRoute     // icmp6-no-route, code 0
	Reject6AdmProhib   // icmp6-adm-prohibited, code 1
	Reject6AddrUnreach // icmp6-addr-unreachable, code 3
	Reject6PortUnreach // icmp6-port-unreachable, code 4 (the IPv6 default)
	Reject6PolicyFail  // icmp6-policy-fail, code 5
	Reject6RejectRoute // icmp6-reject-route, code 6
	NumRejectWith
)

// rejectName is one entry of libipt_REJECT's / libip6t_REJECT's table: the
// name iptables-save prints and the alias it also reads.
type rejectName struct {
	name, alias string
	with        RejectWith
	code        uint8
}

// rejectNames4 and rejectNames6 are in the order of the kernel's enums
// (ipt_reject_with, ip6t_reject_with), which is the order iptables tries
// them in: a --reject-with value is the first name or alias it is a
// case-insensitive prefix of ("tcp" is tcp-reset, "port" is
// port-unreach).
var rejectNames4 = []rejectName{
	{"icmp-net-unreachable", "net-unreach", RejectNetUnreach, 0},
	{"icmp-host-unreachable", "host-unreach", RejectHostUnreach, 1},
	{"icmp-proto-unreachable", "proto-unreach", RejectProtoUnreach, 2},
	{"icmp-port-unreachable", "port-unreach", RejectPortUnreach, 3},
	{"icmp-net-prohibited", "net-prohib", RejectNetProhib, 9},
	{"icmp-host-prohibited", "host-prohib", RejectHostProhib, 10},
	{"tcp-reset", "tcp-rst", RejectTCPReset, 0},
	{"icmp-admin-prohibited", "admin-prohib", RejectAdminProhib, 13},
}

var rejectNames6 = []rejectName{
	{"icmp6-no-route", "no-route", Reject6NoRoute, 0},
	{"icmp6-adm-prohibited", "adm-prohibited", Reject6AdmProhib, 1},
	{"icmp6-addr-unreachable", "addr-unreach", Reject6AddrUnreach, 3},
	{"icmp6-port-unreachable", "port-unreach", Reject6PortUnreach, 4},
	{"tcp-reset", "tcp-reset", RejectTCPReset, 0},
	{"icmp6-policy-fail", "policy-fail", Reject6PolicyFail, 5},
	{"icmp6-reject-route", "reject-route", Reject6RejectRoute, 6},
}

// lookupReject finds v in one family's table as iptables does.
func lookupReject(v string, table []rejectName) (RejectWith, bool) {
	if v == "" {
		return RejectNone, false
	}
	for _, n := range table {
		if len(v) <= len(n.name) && strings.EqualFold(n.name[:len(v)], v) ||
			len(v) <= len(n.alias) && strings.EqualFold(n.alias[:len(v)], v) {
			return n.with, true
		}
	}
	return RejectNone, false
}

// String returns the name iptables-save (or ip6tables-save) prints.
func (k RejectWith) String() string {
	for _, t := range [2][]rejectName{rejectNames4, rejectNames6} {
		for _, n := range t {
			if n.with == k {
				return n.name
			}
		}
	}
	return "none"
}

// IPv6 reports whether k is an ICMPv6 answer.
func (k RejectWith) IPv6() bool { return k >= Reject6NoRoute && k < NumRejectWith }

// ICMPCode returns the destination-unreachable code of an ICMP or ICMPv6
// answer (ICMP type 3, ICMPv6 type 1).
func (k RejectWith) ICMPCode() uint8 {
	for _, t := range [2][]rejectName{rejectNames4, rejectNames6} {
		for _, n := range t {
			if n.with == k {
				return n.code
			}
		}
	}
	return 0
}

// parseRejectWith reads --reject-with for the rule's families: the
// families where the value names an answer stay, each with its answer
// (index 0 IPv4, 1 IPv6).
func (p *parser) parseRejectWith(r *rule, v string) error {
	w4, ok4 := lookupReject(v, rejectNames4)
	w6, ok6 := lookupReject(v, rejectNames6)
	var f Family
	if ok4 && r.fam&FamilyIPv4 != 0 {
		f |= FamilyIPv4
	}
	if ok6 && r.fam&FamilyIPv6 != 0 {
		f |= FamilyIPv6
	}
	if f == 0 {
		if ok4 || ok6 {
			return p.errf(ErrSyntax, "reject type %q is not for %s (iptables: icmp-*, ip6tables: icmp6-*; tcp-reset for both)", v, r.fam)
		}
		return p.errf(ErrUnknown, "unknown reject type %q", v)
	}
	r.fam &= f
	r.reject = [2]RejectWith{w4, w6}
	r.rejectArg = v
	return nil
}

// checkReject applies ipt_REJECT's and ip6t_REJECT's checkentry: REJECT is
// a filter-table target (the kernel refuses it in raw), and tcp-reset
// needs -p tcp, not negated.
func (p *parser) checkReject(r *rule) error {
	if p.cur.id != tableFilter {
		return p.errf(ErrSyntax, "target REJECT is valid only in the filter table (INPUT, FORWARD, OUTPUT and their chains)")
	}
	if r.reject[0] == RejectTCPReset || r.reject[1] == RejectTCPReset {
		if r.has&mProto == 0 || r.neg&mProto != 0 || r.proto != 6 {
			return p.errf(ErrSyntax, "--reject-with tcp-reset needs -p tcp (the kernel refuses it for other protocols)")
		}
	}
	return nil
}

// rejectFor returns a rule's answer for family index fi.
func (r *rule) rejectFor(fi int) RejectWith {
	w := r.reject[fi&1]
	if w == RejectNone {
		if fi == 0 {
			return RejectPortUnreach
		}
		return Reject6PortUnreach
	}
	return w
}

// rejectString is what iptables-save prints after -j REJECT for family f.
// A rule of a file for both families that answers both keeps the words it
// was written with (no one name of iptables or ip6tables says "port
// unreachable" for both but the alias port-unreach), so that it reads
// back the same.
func rejectString(r *rule, f Family) string {
	if f == FamilyBoth && r.fam == FamilyBoth {
		if r.rejectSet {
			return " --reject-with " + r.rejectArg
		}
		return ""
	}
	fi := 0
	if f == FamilyIPv6 || r.fam == FamilyIPv6 {
		fi = 1
	}
	return " --reject-with " + r.rejectFor(fi).String()
}
