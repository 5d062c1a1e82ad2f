package rules

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Save writes the rule set for family f in iptables-save form (what
// iptables-save, or ip6tables-save for FamilyIPv6, would print), with zero
// counters. FamilyBoth is allowed when one file was loaded for both
// families. Only the filter and raw tables are written; a family with no
// rules writes nothing. Loading the output gives the same rule set.
func (rs *RuleSet) Save(w io.Writer, f Family) error {
	var src *source
	switch f {
	case FamilyIPv4:
		src = rs.srcs[0]
	case FamilyIPv6:
		src = rs.srcs[1]
	case FamilyBoth:
		src = rs.srcs[0]
		if src != rs.srcs[1] {
			return fmt.Errorf("%w: IPv4 and IPv6 rules come from different files; save them one family at a time", ErrFamily)
		}
	default:
		return fmt.Errorf("%w: bad family %d", ErrSyntax, f)
	}
	if src == nil {
		return nil
	}
	_, err := io.WriteString(w, saveSource(src, f))
	return err
}

// String returns the whole rule set in iptables-save form, each loaded file
// under a "# name (family)" header line.
func (rs *RuleSet) String() string {
	var b strings.Builder
	for i, s := range rs.srcs {
		if s == nil || (i == 1 && s == rs.srcs[0]) {
			continue
		}
		fmt.Fprintf(&b, "# %s (%s)\n", s.name, s.fam)
		b.WriteString(saveSource(s, s.fam))
	}
	return b.String()
}

// RuleText describes rule i (a Verdict.Rule or RawResult.Rule) for logs:
// "file:line: -A CHAIN ...", or "policy" for PolicyRule.
func (rs *RuleSet) RuleText(i int32) string {
	if i < 0 || int(i) >= len(rs.src) {
		return "policy"
	}
	r := rs.src[i]
	return fmt.Sprintf("%s:%d: %s", r.file, r.line, ruleString(r, r.fam))
}

func saveSource(s *source, f Family) string {
	var b strings.Builder
	for _, t := range s.tables {
		if t == nil {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", tableNames[t.id])
		for _, c := range t.chains {
			pol := "-"
			if c.builtin {
				pol = c.policy.String()
			}
			fmt.Fprintf(&b, ":%s %s [0:0]\n", c.name, pol)
		}
		for _, c := range t.chains {
			for _, r := range c.rules {
				if r.fam&f != 0 {
					b.WriteString(ruleString(r, f))
					b.WriteByte('\n')
				}
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// quote writes s as iptables-save does for comments: in double quotes with
// '"' and '\' escaped.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

func targetName(r *rule) string {
	switch r.target {
	case tAccept:
		return "ACCEPT"
	case tDrop:
		return "DROP"
	case tReturn:
		return "RETURN"
	case tNoTrack:
		return "NOTRACK"
	case tCTNoTrack:
		return "CT --notrack"
	case tCTHelper:
		return "CT --helper " + r.helper.String()
	case tCT:
		return "CT"
	case tMark, tConnmark:
		return markTargetString(r)
	case tReject:
		return "REJECT"
	case tLog:
		return "LOG"
	case tJump, tGoto:
		if r.jump != nil {
			return r.jump.name
		}
	}
	return ""
}

func portString(pr portRange) string {
	if pr.lo == pr.hi {
		return strconv.Itoa(int(pr.lo))
	}
	return strconv.Itoa(int(pr.lo)) + ":" + strconv.Itoa(int(pr.hi))
}

func tcpFlagsString(v uint8) string {
	if v == 0 {
		return "NONE"
	}
	var parts []string
	for _, n := range tcpFlagNames {
		if v&n.bit != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, ",")
}

// ruleString prints a rule in iptables-save's canonical order.
func ruleString(r *rule, f Family) string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(r.chain.name)
	opt := func(bit matchBits, name, val string) {
		if r.has&bit == 0 {
			return
		}
		if r.neg&bit != 0 {
			b.WriteString(" !")
		}
		b.WriteString(" " + name)
		if val != "" {
			b.WriteString(" " + val)
		}
	}
	w := func(s string) { b.WriteString(s) }
	opt(mSrc, "-s", r.src.String())
	opt(mDst, "-d", r.dst.String())
	opt(mIfIn, "-i", r.ifIn)
	opt(mIfOut, "-o", r.ifOut)
	opt(mProto, "-p", protoName(r.proto))
	opt(mFrag, "-f", "")
	if r.has&(mSport|mDport|mTCPFlags) != 0 {
		if r.proto == 17 {
			b.WriteString(" -m udp")
		} else {
			b.WriteString(" -m tcp")
		}
		opt(mSport, "--sport", portString(r.sport))
		opt(mDport, "--dport", portString(r.dport))
		opt(mTCPFlags, "--tcp-flags", tcpFlagsString(r.tcpMask)+" "+tcpFlagsString(r.tcpComp))
	}
	if r.has&mICMP != 0 {
		v := strconv.Itoa(int(r.icmpType))
		switch {
		case r.proto != 58 && r.icmpType == 0xff:
			v = "any"
		case r.icmpMin == r.icmpMax:
			v += "/" + strconv.Itoa(int(r.icmpMin))
		}
		if r.proto == 58 {
			b.WriteString(" -m icmp6")
			opt(mICMP, "--icmpv6-type", v)
		} else {
			b.WriteString(" -m icmp")
			opt(mICMP, "--icmp-type", v)
		}
	}
	if r.has&(mMultiSrc|mMultiDst|mMultiAny) != 0 {
		parts := make([]string, len(r.multi))
		for i, pr := range r.multi {
			parts[i] = portString(pr)
		}
		b.WriteString(" -m multiport")
		list := strings.Join(parts, ",")
		opt(mMultiSrc, "--sports", list)
		opt(mMultiDst, "--dports", list)
		opt(mMultiAny, "--ports", list)
	}
	if r.has&mState != 0 {
		var parts []string
		for _, n := range stateNames {
			if r.states&n.bit != 0 {
				parts = append(parts, n.name)
			}
		}
		if r.stateModule {
			b.WriteString(" -m state")
			opt(mState, "--state", strings.Join(parts, ","))
		} else {
			b.WriteString(" -m conntrack")
			opt(mState, "--ctstate", strings.Join(parts, ","))
			ctString(r, w)
		}
	}
	if r.has&(mCtFlow|mCtPacket) != 0 && (r.has&mState == 0 || r.stateModule) {
		b.WriteString(" -m conntrack")
		ctString(r, w)
	}
	if r.has&(mPhysIn|mPhysOut|mIsIn|mIsOut|mIsBridged) != 0 {
		b.WriteString(" -m physdev")
		opt(mPhysIn, "--physdev-in", r.physIn)
		opt(mPhysOut, "--physdev-out", r.physOut)
		opt(mIsIn, "--physdev-is-in", "")
		opt(mIsOut, "--physdev-is-out", "")
		opt(mIsBridged, "--physdev-is-bridged", "")
	}
	extString(r, opt, func(s string) { b.WriteString(s) })
	setString(r, func(s string) { b.WriteString(s) })
	ctxString(r, opt, w)
	if r.has&mHashlimit != 0 {
		hashlimitString(r, f, w)
	}
	if r.has&mComment != 0 {
		b.WriteString(" -m comment --comment " + quote(r.comment))
	}
	switch r.target {
	case tNone:
	case tGoto:
		b.WriteString(" -g " + targetName(r))
	default:
		b.WriteString(" -j " + targetName(r))
	}
	switch r.target {
	case tReject:
		b.WriteString(rejectString(r, f))
	case tLog:
		b.WriteString(logString(&r.log))
	}
	return b.String()
}
