package rules

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/statewire/statewire/statemachine"
)

// maxLine bounds one input line; iptables-restore's own buffer is smaller.
const maxLine = 1 << 16

// Limits from the kernel ABI, so a file we accept is one iptables accepts.
const (
	maxChainName  = 28  // XT_EXTENSION_MAXNAMELEN - 1 (user chain names)
	maxIfName     = 15  // IFNAMSIZ - 1
	maxCommentLen = 255 // XT_MAX_COMMENT_LEN - 1
)

// parser reads one file. Errors carry the file name and line number.
type parser struct {
	name string
	line int
	fam  Family
	src  *source
	cur  *table // table being read, nil between COMMIT and the next *table
	// skipTable names an unsupported table (nat, mangle, security) being
	// read: chain declarations are accepted, rules are an error.
	skipTable string
	skipLine  int
	seen      map[string]bool // tables already read in this file
	// hlUnits: the units of each -m hashlimit table name read so far, by
	// family (match_hashlimit.go: rules sharing a table must agree).
	hlUnits map[hlUnitsKey]uint32
}

func (p *parser) errf(sentinel error, format string, args ...any) error {
	return &ParseError{File: p.name, Line: p.line, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func parse(name string, r io.Reader, fam Family) (*source, error) {
	p := &parser{name: name, fam: fam, src: &source{name: name, fam: fam}, seen: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		p.line++
		return nil, p.errf(ErrSyntax, "cannot read line: %v", err)
	}
	if p.cur != nil {
		p.line = p.cur.line
		return nil, p.errf(ErrSyntax, "table %q has no COMMIT", tableNames[p.cur.id])
	}
	if p.skipTable != "" {
		p.line = p.skipLine
		return nil, p.errf(ErrSyntax, "table %q has no COMMIT", p.skipTable)
	}
	return p.src, nil
}

func (p *parser) inTable() bool { return p.cur != nil || p.skipTable != "" }

func (p *parser) parseLine(text string) error {
	s := strings.TrimSpace(text)
	if s == "" || s[0] == '#' {
		return nil
	}
	switch {
	case s[0] == '*':
		return p.startTable(s[1:])
	case s == "COMMIT":
		return p.commit()
	case s[0] == ':':
		f := strings.Fields(s[1:])
		if !p.inTable() {
			return p.errf(ErrSyntax, "chain %q declared outside a table", s)
		}
		if len(f) < 2 || len(f) > 3 {
			return p.errf(ErrSyntax, "bad chain declaration %q", s)
		}
		if len(f) == 3 {
			if _, _, ok := parseCounters(f[2]); !ok {
				return p.errf(ErrSyntax, "bad counters %q", f[2])
			}
		}
		return p.declareChain(f[0], f[1])
	}
	toks, err := tokenize(s)
	if err != nil {
		return p.errf(ErrSyntax, "%v", err)
	}
	// iptables-save -c prefixes rules with "[packets:bytes]".
	if len(toks) > 0 && strings.HasPrefix(toks[0], "[") {
		if _, _, ok := parseCounters(toks[0]); !ok {
			return p.errf(ErrSyntax, "bad counters %q", toks[0])
		}
		toks = toks[1:]
	}
	if len(toks) == 0 {
		return p.errf(ErrSyntax, "counters without a rule")
	}
	if !p.inTable() {
		return p.errf(ErrSyntax, "%q outside a table (missing *filter or *raw)", toks[0])
	}
	switch toks[0] {
	case "-A", "--append":
		if len(toks) < 2 {
			return p.errf(ErrSyntax, "%q needs a chain", toks[0])
		}
		if p.skipTable != "" {
			return p.errf(ErrUnsupported, "rules in table %q are not supported (only filter and raw)", p.skipTable)
		}
		c := p.cur.byName[toks[1]]
		if c == nil {
			return p.errf(ErrUnknown, "unknown chain %q", toks[1])
		}
		r, err := p.parseRule(c, toks[2:])
		if err != nil {
			return err
		}
		c.rules = append(c.rules, r)
		return nil
	case "-N", "--new-chain":
		if len(toks) != 2 {
			return p.errf(ErrSyntax, "%q needs exactly one chain name", toks[0])
		}
		return p.declareChain(toks[1], "-")
	case "-P", "--policy":
		if len(toks) != 3 {
			return p.errf(ErrSyntax, "%q needs a chain and a policy", toks[0])
		}
		if p.skipTable != "" {
			return nil
		}
		c := p.cur.byName[toks[1]]
		if c == nil || !c.builtin {
			return p.errf(ErrUnknown, "unknown built-in chain %q", toks[1])
		}
		a, ok := parsePolicy(toks[2])
		if !ok {
			return p.errf(ErrSyntax, "bad policy %q", toks[2])
		}
		c.policy = a
		return nil
	}
	return p.errf(ErrUnknown, "unknown command %q", toks[0])
}

func parsePolicy(s string) (Action, bool) {
	switch s {
	case "ACCEPT":
		return Accept, true
	case "DROP":
		return Drop, true
	}
	return 0, false
}

// parseCounters reads "[packets:bytes]".
func parseCounters(s string) (uint64, uint64, bool) {
	if len(s) < 5 || s[0] != '[' || s[len(s)-1] != ']' {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(s[1:len(s)-1], ":")
	if !ok {
		return 0, 0, false
	}
	pk, err1 := strconv.ParseUint(a, 10, 64)
	by, err2 := strconv.ParseUint(b, 10, 64)
	return pk, by, err1 == nil && err2 == nil
}

func (p *parser) startTable(name string) error {
	if p.inTable() {
		return p.errf(ErrSyntax, "table %q starts before COMMIT of the previous table", name)
	}
	if p.seen[name] {
		return p.errf(ErrSyntax, "table %q given twice", name)
	}
	p.seen[name] = true
	for id, n := range tableNames {
		if n == name {
			t := &table{id: tableID(id), line: p.line, byName: map[string]*chain{}}
			for _, cn := range builtinChains[id] {
				c := &chain{name: cn, builtin: true, policy: Accept, line: p.line}
				t.chains = append(t.chains, c)
				t.byName[cn] = c
			}
			p.cur = t
			return nil
		}
	}
	switch name {
	case "nat", "mangle", "security":
		// Accepted as long as they hold no rules: a plain iptables-save dump
		// lists them with empty chains.
		p.skipTable, p.skipLine = name, p.line
		return nil
	}
	return p.errf(ErrUnknown, "unknown table %q", name)
}

func (p *parser) commit() error {
	if p.skipTable != "" {
		p.skipTable = ""
		return nil
	}
	if p.cur == nil {
		return p.errf(ErrSyntax, "COMMIT outside a table")
	}
	if err := p.checkLoops(p.cur); err != nil {
		return err
	}
	p.src.tables[p.cur.id] = p.cur
	p.cur = nil
	return nil
}

func validChainName(s string) bool {
	if s == "" || len(s) > maxChainName || s[0] == '-' || s[0] == '!' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' || s[i] == '\'' || s[i] == '\\' {
			return false
		}
	}
	switch s {
	case "ACCEPT", "DROP", "RETURN", "QUEUE", "NOTRACK", "CT":
		return false
	}
	return true
}

func (p *parser) declareChain(name, policy string) error {
	if p.skipTable != "" {
		return nil
	}
	if c := p.cur.byName[name]; c != nil {
		if !c.builtin {
			return p.errf(ErrSyntax, "chain %q declared twice", name)
		}
		a, ok := parsePolicy(policy)
		if !ok {
			return p.errf(ErrSyntax, "built-in chain %q needs policy ACCEPT or DROP, not %q", name, policy)
		}
		c.policy = a
		return nil
	}
	if policy != "-" {
		return p.errf(ErrSyntax, "user chain %q cannot have policy %q", name, policy)
	}
	if !validChainName(name) {
		return p.errf(ErrSyntax, "bad chain name %q", name)
	}
	for _, bs := range builtinChains {
		for _, b := range bs {
			if b == name {
				return p.errf(ErrSyntax, "chain %q is built in to another table", name)
			}
		}
	}
	c := &chain{name: name, line: p.line}
	p.cur.chains = append(p.cur.chains, c)
	p.cur.byName[name] = c
	return nil
}

// maxDepth bounds nested chain calls; Raw and Filter keep their call stack
// in a fixed array of this size.
const maxDepth = 32

// checkLoops rejects jump cycles and nesting deeper than maxDepth, as
// iptables-restore rejects loops at COMMIT.
func (p *parser) checkLoops(t *table) error {
	const (
		unvisited = iota
		onStack
		done
	)
	mark := map[*chain]int{}
	depth := map[*chain]int{}
	var visit func(c *chain) (int, *rule)
	visit = func(c *chain) (int, *rule) {
		mark[c] = onStack
		d := 1
		for _, r := range c.rules {
			if r.jump == nil {
				continue
			}
			switch mark[r.jump] {
			case onStack:
				return -1, r
			case unvisited:
				if sd, bad := visit(r.jump); bad != nil {
					return -1, bad
				} else if sd+1 > d {
					d = sd + 1
				}
			case done:
				if depth[r.jump]+1 > d {
					d = depth[r.jump] + 1
				}
			}
			if d > maxDepth {
				return -1, r
			}
		}
		mark[c] = done
		depth[c] = d
		return d, nil
	}
	for _, c := range t.chains {
		if mark[c] == unvisited {
			if _, bad := visit(c); bad != nil {
				p.line = bad.line
				return p.errf(ErrChainLoop, "jump to %q makes a loop or nests deeper than %d chains", bad.jump.name, maxDepth)
			}
		}
	}
	return nil
}

// tokenize splits a rule line into words the way iptables-restore does:
// whitespace separates words, double or single quotes group, a backslash
// escapes the next character.
func tokenize(s string) ([]string, error) {
	var toks []string
	var b strings.Builder
	inTok := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			inTok = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				b.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
			inTok = true
		case c == ' ' || c == '\t' || c == '\r':
			if inTok {
				toks = append(toks, b.String())
				b.Reset()
				inTok = false
			}
		default:
			b.WriteByte(c)
			inTok = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote %q", string(quote))
	}
	if inTok {
		toks = append(toks, b.String())
	}
	return toks, nil
}

// Match modules a rule has loaded, explicitly (-m) or implied by -p.
type modBits uint32

const (
	modTCP modBits = 1 << iota
	modUDP
	modICMP
	modICMP6
	modMultiport
	modState
	modConntrack
	modPhysdev
	modComment
	modIPRange
	modMAC
	modLength
	modPktType
	modTOS
	modDSCP
	modTTL
	modHL
	modSet
	modLimit
	modMark
	modConnmark
	modAddrType
	modRecent
	modConnlimit
	modHashlimit
)

var modByName = map[string]modBits{
	"tcp": modTCP, "udp": modUDP, "icmp": modICMP, "icmp6": modICMP6, "icmpv6": modICMP6,
	"multiport": modMultiport, "state": modState, "conntrack": modConntrack,
	"physdev": modPhysdev, "comment": modComment,
	"iprange": modIPRange, "mac": modMAC, "length": modLength, "pkttype": modPktType,
	"tos": modTOS, "dscp": modDSCP, "ttl": modTTL, "hl": modHL, "set": modSet,
	"limit": modLimit, "mark": modMark, "connmark": modConnmark, "addrtype": modAddrType, "recent": modRecent,
	"connlimit": modConnlimit,
	"hashlimit": modHashlimit,
}

// optionAlias maps long option names to the short or canonical spelling.
var optionAlias = map[string]string{
	"--protocol": "-p", "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
	"--in-interface": "-i", "--out-interface": "-o", "--fragment": "-f", "--match": "-m",
	"--jump": "-j", "--goto": "-g", "--source-port": "--sport", "--destination-port": "--dport",
	"--source-ports": "--sports", "--destination-ports": "--dports", "--set-counters": "-c",
}

// parseRule reads the words after "-A CHAIN".
func (p *parser) parseRule(c *chain, toks []string) (*rule, error) {
	r := &rule{file: p.name, line: p.line, chain: c, fam: p.fam}
	var mods modBits
	var lastMark modBits     // modMark or modConnmark, whichever -m came last: --mark is its
	var statefulAt matchBits // r.has at -m limit or -m recent
	tid := p.cur.id
	neg := false
	for i := 0; i < len(toks); i++ {
		word := toks[i]
		if word == "!" {
			if neg {
				return nil, p.errf(ErrSyntax, "double negation %q", word)
			}
			neg = true
			continue
		}
		opt := word
		if a, ok := optionAlias[opt]; ok {
			opt = a
		}
		value := func() (string, error) {
			if i+1 >= len(toks) {
				return "", p.errf(ErrSyntax, "option %q needs a value", word)
			}
			i++
			return toks[i], nil
		}
		// set records a match bit, refusing duplicates.
		set := func(b matchBits) error {
			if r.has&b != 0 {
				return p.errf(ErrSyntax, "option %q given twice", word)
			}
			r.has |= b
			if neg {
				r.neg |= b
			}
			return nil
		}
		need := func(m modBits, what string) error {
			if mods&m == 0 {
				return p.errf(ErrSyntax, "option %q needs %s", word, what)
			}
			return nil
		}
		noNeg := func() error {
			if neg {
				return p.errf(ErrSyntax, "%q cannot be negated", word)
			}
			return nil
		}
		if handled, err := p.targetOption(r, opt, neg, value); handled {
			if err != nil {
				return nil, err
			}
			neg = false
			continue
		}
		var err error
		switch opt {
		case "-p":
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			pr, ok := parseProto(v)
			if !ok {
				return nil, p.errf(ErrUnknown, "unknown protocol %q", v)
			}
			if pr == 0 {
				if neg {
					return nil, p.errf(ErrSyntax, "protocol %q cannot be negated: the rule would never match", v)
				}
				break // -p all: no constraint
			}
			if err = set(mProto); err != nil {
				return nil, err
			}
			r.proto = pr
			if !neg {
				switch pr {
				case 6:
					mods |= modTCP
				case 17:
					mods |= modUDP
				case 1:
					mods |= modICMP
				case 58:
					mods |= modICMP6
				}
			}
		case "-s", "-d":
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			pfx, perr := p.parseAddr(v, r)
			if perr != nil {
				return nil, perr
			}
			if opt == "-s" {
				err, r.src = set(mSrc), pfx
			} else {
				err, r.dst = set(mDst), pfx
			}
		case "-i", "-o", "--physdev-in", "--physdev-out":
			if opt[1] == '-' {
				if err = need(modPhysdev, "-m physdev"); err != nil {
					return nil, err
				}
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			if v == "" || len(v) > maxIfName || strings.ContainsAny(v, " \t/\"'\\") || (strings.Contains(v, "+") && !strings.HasSuffix(v, "+")) {
				return nil, p.errf(ErrSyntax, "bad interface name %q", v)
			}
			if (opt == "-o" || opt == "--physdev-out") && tid == tableRaw {
				return nil, p.errf(ErrSyntax, "option %q is not available in the raw table (PREROUTING has no output port)", word)
			}
			switch opt {
			case "-i":
				err, r.ifIn = set(mIfIn), v
			case "-o":
				err, r.ifOut = set(mIfOut), v
			case "--physdev-in":
				err, r.physIn = set(mPhysIn), v
			default:
				err, r.physOut = set(mPhysOut), v
			}
		case "--physdev-is-in", "--physdev-is-out", "--physdev-is-bridged":
			if err = need(modPhysdev, "-m physdev"); err != nil {
				return nil, err
			}
			switch opt {
			case "--physdev-is-in":
				err = set(mIsIn)
			case "--physdev-is-out":
				err = set(mIsOut)
			default:
				err = set(mIsBridged)
			}
		case "-f":
			if p.fam&FamilyIPv4 == 0 {
				return nil, p.errf(ErrUnsupported, "option %q is IPv4 only (ip6tables has -m frag, which statewire does not support)", word)
			}
			r.fam &= FamilyIPv4
			err = set(mFrag)
		case "-m":
			if err = noNeg(); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			m, ok := modByName[v]
			if !ok {
				if unsupportedMatches[v] {
					return nil, p.errf(ErrUnsupported, "match module %q is not supported", v)
				}
				return nil, p.errf(ErrUnknown, "unknown match module %q", v)
			}
			switch m {
			case modLimit, modRecent, modConnlimit, modHashlimit:
				// The matches with state of their own, tested where
				// the rule names them (match_ctx.go): one per rule.
				if r.has&(mLimit|mRecent|mConnlimit|mHashlimit) != 0 {
					return nil, p.errf(ErrUnsupported, "one -m limit, -m recent or -m connlimit per rule (-m hashlimit included)")
				}
				statefulAt = r.has
				switch m {
				case modLimit:
					// -m limit alone is 3/hour, burst 5.
					r.x.lim.avg, r.x.lim.burst = limitDefAvg, limitDefBurst
					r.has |= mLimit
				case modRecent:
					r.has |= mRecent
				case modConnlimit:
					r.x.cl.plen = -1
					r.has |= mConnlimit
				default:
					// hashlimit_mt4_init / hashlimit_mt6_init.
					r.x.hlim = hashlimitArgs{burst: hlDefBurst, gcInterval: hlDefGC, srcMask: -1, dstMask: -1}
					r.has |= mHashlimit
				}
			case modMark, modConnmark:
				lastMark = m
			}
			mods |= m
			if m == modSet {
				r.sets = append(r.sets, setMatch{}) // each -m set is one more set match
			}
		case "--match-set", "--return-nomatch", "--update-counters", "--update-subcounters",
			"--packets-eq", "--packets-lt", "--packets-gt", "--bytes-eq", "--bytes-lt", "--bytes-gt":
			if err = need(modSet, "-m set"); err == nil {
				err = p.setOption(r, word, opt, neg, value)
			}
		case "--sport", "--dport":
			if err = need(modTCP|modUDP, "-p tcp or -p udp"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			pr, ok := parsePortRange(v)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad port or range %q", v)
			}
			if opt == "--sport" {
				err, r.sport = set(mSport), pr
			} else {
				err, r.dport = set(mDport), pr
			}
		case "--syn":
			if err = need(modTCP, "-p tcp"); err != nil {
				return nil, err
			}
			err = set(mTCPFlags)
			r.tcpMask, r.tcpComp = tcpFIN|tcpSYN|tcpRST|tcpACK, tcpSYN
		case "--tcp-flags":
			if err = need(modTCP, "-p tcp"); err != nil {
				return nil, err
			}
			var m, cmp string
			if m, err = value(); err != nil {
				return nil, err
			}
			if cmp, err = value(); err != nil {
				return nil, err
			}
			mv, ok1 := parseTCPFlags(m)
			if !ok1 {
				return nil, p.errf(ErrSyntax, "bad TCP flag list %q", m)
			}
			cv, ok2 := parseTCPFlags(cmp)
			if !ok2 {
				return nil, p.errf(ErrSyntax, "bad TCP flag list %q", cmp)
			}
			err = set(mTCPFlags)
			r.tcpMask, r.tcpComp = mv, cv
		case "--icmp-type", "--icmpv6-type":
			v6 := opt == "--icmpv6-type"
			if v6 {
				err = need(modICMP6, "-p ipv6-icmp")
			} else {
				err = need(modICMP, "-p icmp")
			}
			if err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			t, lo, hi, ok := parseICMPType(v, v6)
			if !ok {
				return nil, p.errf(ErrUnknown, "unknown ICMP type %q", v)
			}
			err = set(mICMP)
			r.icmpType, r.icmpMin, r.icmpMax = t, lo, hi
		case "--sports", "--dports", "--ports":
			if err = need(modMultiport, "-m multiport"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			list, ok := parsePortList(v)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad multiport list %q (at most %d ports, a range counts as two)", v, maxMultiport)
			}
			if r.has&(mMultiSrc|mMultiDst|mMultiAny) != 0 {
				return nil, p.errf(ErrSyntax, "option %q: one multiport list per rule", word)
			}
			switch opt {
			case "--sports":
				err = set(mMultiSrc)
			case "--dports":
				err = set(mMultiDst)
			default:
				err = set(mMultiAny)
			}
			r.multi = list
		case "--state", "--ctstate":
			if opt == "--state" {
				err = need(modState, "-m state")
			} else {
				err = need(modConntrack, "-m conntrack")
			}
			if err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			st, bad, ok := parseStates(v)
			if !ok {
				if bad == "SNAT" || bad == "DNAT" {
					return nil, p.errf(ErrUnsupported, "state %q is not supported (statewire does no NAT)", bad)
				}
				return nil, p.errf(ErrUnknown, "unknown state %q", bad)
			}
			err = set(mState)
			r.states, r.stateModule = st, opt == "--state"
		case "--comment":
			if err = need(modComment, "-m comment"); err != nil {
				return nil, err
			}
			if err = noNeg(); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			if len(v) > maxCommentLen {
				return nil, p.errf(ErrSyntax, "comment longer than %d bytes", maxCommentLen)
			}
			err, r.comment = set(mComment), v
		case "--src-range", "--dst-range":
			if err = need(modIPRange, "-m iprange"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			lo, hi, ok := parseIPRange(v)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad address range %q", v)
			}
			f := FamilyIPv6
			if lo.Is4() {
				f = FamilyIPv4
			}
			if r.fam&f == 0 {
				return nil, p.errf(ErrSyntax, "address range %q is not of the rule's family", v)
			}
			r.fam &= f
			if opt == "--src-range" {
				err = set(mSrcRange)
				r.x.srcRange, r.x.srcR = [2]netip.Addr{lo, hi}, makeAddrRange(lo, hi)
			} else {
				err = set(mDstRange)
				r.x.dstRange, r.x.dstR = [2]netip.Addr{lo, hi}, makeAddrRange(lo, hi)
			}
		case "--mac-source":
			if err = need(modMAC, "-m mac"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			m, ok := parseMAC(v)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad MAC address %q", v)
			}
			err, r.x.mac = set(mMAC), m
		case "--length":
			if err = need(modLength, "-m length"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			lo, hi, ok := parseLength(v)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad length or range %q", v)
			}
			err, r.x.lenLo, r.x.lenHi = set(mLength), lo, hi
		case "--pkt-type":
			if err = need(modPktType, "-m pkttype"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			t := -1
			if strings.EqualFold(v, "host") {
				t = int(pktUnicast) // PACKET_HOST, iptables-save writes unicast
			}
			for k, n := range pktTypeNames {
				if strings.EqualFold(v, n) {
					t = k
				}
			}
			if t < 0 {
				if strings.EqualFold(v, "otherhost") {
					return nil, p.errf(ErrUnsupported, "packet type %q is not supported (br_netfilter shows forwarded unicast as host: unicast, broadcast, multicast)", v)
				}
				return nil, p.errf(ErrUnknown, "unknown packet type %q", v)
			}
			err, r.x.pktType = set(mPktType), uint8(t)
		case "--tos":
			if err = need(modTOS, "-m tos"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			val, mask, ok := parseTOS(v)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad TOS value %q", v)
			}
			err, r.x.tosVal, r.x.tosMask = set(mTOS), val, mask
		case "--dscp", "--dscp-class":
			if err = need(modDSCP, "-m dscp"); err != nil {
				return nil, err
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			var d uint8
			if opt == "--dscp" {
				n, ok := parseUintMax(v, 0x3f)
				if !ok {
					return nil, p.errf(ErrSyntax, "bad DSCP value %q (0..63)", v)
				}
				d = uint8(n)
			} else {
				n, ok := dscpClasses[strings.ToUpper(v)]
				if !ok {
					return nil, p.errf(ErrUnknown, "unknown DSCP class %q", v)
				}
				d = n
			}
			err, r.x.dscp = set(mDSCP), d
		case "--ttl-eq", "--ttl-lt", "--ttl-gt", "--hl-eq", "--hl-lt", "--hl-gt":
			hl := opt[2] == 'h'
			if hl {
				err = need(modHL, "-m hl")
			} else {
				err = need(modTTL, "-m ttl")
			}
			if err != nil {
				return nil, err
			}
			mode := map[string]uint8{"eq": ttlEq, "lt": ttlLt, "gt": ttlGt}[opt[len(opt)-2:]]
			if mode != ttlEq {
				if err = noNeg(); err != nil {
					return nil, err
				}
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			n, ok := parseUintMax(v, 255)
			if !ok {
				return nil, p.errf(ErrSyntax, "bad TTL %q (0..255)", v)
			}
			f := FamilyIPv4
			if hl {
				f = FamilyIPv6
			}
			if r.fam&f == 0 {
				return nil, p.errf(ErrSyntax, "option %q is not for this family (-m ttl is IPv4, -m hl IPv6)", word)
			}
			r.fam &= f
			err = set(mTTL)
			r.x.ttlMode, r.x.ttlVal, r.x.hl = mode, uint8(n), hl
		case "--ctstatus", "--ctdir", "--ctproto", "--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst",
			"--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport", "--ctexpire":
			if err = need(modConntrack, "-m conntrack"); err != nil {
				return nil, err
			}
			_, err = p.parseCtOpt(r, opt, word, neg, value)
		case "--limit", "--limit-burst", "--mark", "--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out":
			err = p.parseCtxOpt(r, opt, word, neg, mods, lastMark, value)
		case "--set", "--rcheck", "--update", "--remove", "--seconds", "--hitcount", "--reap", "--rttl",
			"--name", "--rsource", "--rdest", "--mask":
			if r.target == tMark || r.target == tConnmark {
				if err = noNeg(); err != nil {
					return nil, err
				}
				if handled, terr := p.parseMarkTargetOpt(r, opt, word, value); handled || terr != nil {
					err = terr
					break
				}
			}
			if err = need(modRecent, "-m recent"); err != nil {
				return nil, err
			}
			_, err = p.parseRecentOpt(r, opt, word, neg, value)
		case "--connlimit-above", "--connlimit-upto", "--connlimit-mask", "--connlimit-saddr", "--connlimit-daddr":
			if err = need(modConnlimit, "-m connlimit"); err == nil {
				err = p.parseConnlimitOpt(r, opt, word, neg, value)
			}
		case "--hashlimit", "--hashlimit-upto", "--hashlimit-above", "--hashlimit-burst", "--hashlimit-mode",
			"--hashlimit-srcmask", "--hashlimit-dstmask", "--hashlimit-name", "--hashlimit-htable-size",
			"--hashlimit-htable-max", "--hashlimit-htable-gcinterval", "--hashlimit-htable-expire",
			"--hashlimit-rate-match", "--hashlimit-rate-interval":
			if err = need(modHashlimit, "-m hashlimit"); err != nil {
				return nil, err
			}
			err = p.parseHashlimitOpt(r, opt, word, neg, value)
		case "-j", "-g":
			if err = noNeg(); err != nil {
				return nil, err
			}
			if r.target != tNone {
				return nil, p.errf(ErrSyntax, "second target %q", word)
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			if err = p.setTarget(r, opt == "-g", v); err != nil {
				return nil, err
			}
		case "--notrack", "--helper":
			if err = noNeg(); err != nil {
				return nil, err
			}
			if r.target != tCT {
				if r.target == tCTNoTrack || r.target == tCTHelper {
					return nil, p.errf(ErrSyntax, "-j CT takes one of --notrack or --helper, not %q as well", word)
				}
				return nil, p.errf(ErrSyntax, "option %q needs -j CT", word)
			}
			if opt == "--notrack" {
				r.target = tCTNoTrack
				break
			}
			var v string
			if v, err = value(); err != nil {
				return nil, err
			}
			h, ok := parseHelper(v)
			if !ok {
				return nil, p.errf(ErrUnsupported, "unknown or unsupported helper %q (ftp, irc, tftp, amanda)", v)
			}
			r.target, r.helper = tCTHelper, h
		case "-c":
			if err = noNeg(); err != nil {
				return nil, err
			}
			var a, b string
			if a, err = value(); err != nil {
				return nil, err
			}
			if b, err = value(); err != nil {
				return nil, err
			}
			if _, _, ok := parseCounters("[" + a + ":" + b + "]"); !ok {
				return nil, p.errf(ErrSyntax, "bad counters %q %q", a, b)
			}
		default:
			if r.target == tMark || r.target == tConnmark {
				if err = noNeg(); err != nil {
					return nil, err
				}
				var handled bool
				if handled, err = p.parseMarkTargetOpt(r, opt, word, value); handled {
					break
				}
			}
			if r.target == tCT && strings.HasPrefix(word, "--") {
				return nil, p.errf(ErrUnsupported, "CT option %q is not supported (only --notrack and --helper)", word)
			}
			if strings.HasPrefix(word, "-") {
				return nil, p.errf(ErrUnknown, "unknown match %q", word)
			}
			return nil, p.errf(ErrSyntax, "unexpected word %q", word)
		}
		if err != nil {
			return nil, err
		}
		neg = false
	}
	if neg {
		return nil, p.errf(ErrSyntax, "%q at end of rule", "!")
	}
	if err := p.checkSets(r); err != nil {
		return nil, err
	}
	if err := p.checkCtxRule(r, mods, statefulAt); err != nil {
		return nil, err
	}
	return r, p.checkRule(r)
}

// checkRule validates combinations that need the whole rule: protocol for
// L4 matches, family of addresses and ICMP, targets allowed in the table.
func (p *parser) checkRule(r *rule) error {
	pos := r.has&mProto != 0 && r.neg&mProto == 0
	if r.has&(mSport|mDport) != 0 && !(pos && (r.proto == 6 || r.proto == 17)) {
		return p.errf(ErrSyntax, "--sport/--dport need -p tcp or -p udp")
	}
	if r.has&mTCPFlags != 0 && !(pos && r.proto == 6) {
		return p.errf(ErrSyntax, "--syn/--tcp-flags need -p tcp")
	}
	if r.has&(mMultiSrc|mMultiDst|mMultiAny) != 0 {
		switch {
		case pos && (r.proto == 6 || r.proto == 17 || r.proto == 33 || r.proto == 132 || r.proto == 136):
		default:
			return p.errf(ErrSyntax, "-m multiport needs -p tcp, udp, udplite, sctp or dccp")
		}
	}
	if r.has&mICMP != 0 {
		if !pos || (r.proto != 1 && r.proto != 58) {
			return p.errf(ErrSyntax, "--icmp-type/--icmpv6-type need -p icmp or -p ipv6-icmp")
		}
		if r.proto == 58 {
			if p.fam&FamilyIPv6 == 0 {
				return p.errf(ErrSyntax, "--icmpv6-type in an IPv4 rule file")
			}
			r.fam &= FamilyIPv6
		} else {
			if p.fam&FamilyIPv4 == 0 {
				return p.errf(ErrSyntax, "--icmp-type is IPv4 only (use -p ipv6-icmp --icmpv6-type)")
			}
			r.fam &= FamilyIPv4
		}
	}
	// In a file for both families the ICMP protocols pick their family.
	if p.fam == FamilyBoth && pos {
		switch r.proto {
		case 1:
			r.fam &= FamilyIPv4
		case 58:
			r.fam &= FamilyIPv6
		}
	}
	if r.fam == 0 {
		return p.errf(ErrSyntax, "rule mixes IPv4 and IPv6")
	}
	tid := p.cur.id
	switch r.target {
	case tCT:
		return p.errf(ErrUnsupported, "-j CT needs --notrack or --helper NAME (other CT options are not supported)")
	case tNoTrack, tCTNoTrack, tCTHelper:
		if tid != tableRaw {
			return p.errf(ErrSyntax, "target %s is only valid in the raw table", targetName(r))
		}
	case tReject:
		return p.checkReject(r)
	case tLog:
		if tid != tableFilter {
			return p.errf(ErrUnsupported, "target LOG in the raw table is not supported (statewire logs from the filter table)")
		}
	}
	return nil
}

// parseAddr reads an address or CIDR (also a dotted netmask), narrowing the
// rule's family to the address family.
func (p *parser) parseAddr(v string, r *rule) (netip.Prefix, error) {
	var pfx netip.Prefix
	addr, bits, hasBits := strings.Cut(v, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		if strings.Contains(v, ",") {
			return pfx, p.errf(ErrUnsupported, "address lists are not supported, write one rule per address: %q", v)
		}
		return pfx, p.errf(ErrSyntax, "bad address %q (host names are not resolved)", v)
	}
	a = a.Unmap()
	n := a.BitLen()
	if hasBits {
		if m, err := netip.ParseAddr(bits); err == nil && m.Is4() && a.Is4() {
			n = maskLen(m.As4())
			if n < 0 {
				return pfx, p.errf(ErrSyntax, "non-contiguous netmask in %q", v)
			}
		} else {
			b, err := strconv.Atoi(bits)
			if err != nil || b < 0 || b > a.BitLen() {
				return pfx, p.errf(ErrSyntax, "bad prefix length in %q", v)
			}
			n = b
		}
	}
	f := FamilyIPv6
	if a.Is4() {
		f = FamilyIPv4
	}
	if p.fam&f == 0 {
		return pfx, p.errf(ErrSyntax, "address %q is not %s", v, p.fam)
	}
	r.fam &= f
	if r.fam == 0 {
		return pfx, p.errf(ErrSyntax, "rule mixes IPv4 and IPv6 addresses: %q", v)
	}
	// iptables masks host bits off (10.1.2.3/8 is saved as 10.0.0.0/8).
	return netip.PrefixFrom(a, n).Masked(), nil
}

func maskLen(m [4]byte) int {
	v := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
	n := 0
	for v&0x80000000 != 0 {
		n++
		v <<= 1
	}
	if v != 0 {
		return -1
	}
	return n
}

func (p *parser) setTarget(r *rule, isGoto bool, v string) error {
	if !isGoto {
		switch v {
		case "ACCEPT":
			r.target = tAccept
			return nil
		case "DROP":
			r.target = tDrop
			return nil
		case "RETURN":
			r.target = tReturn
			return nil
		case "NOTRACK":
			r.target = tNoTrack
			return nil
		case "CT":
			r.target = tCT
			return nil
		case "MARK":
			r.target = tMark
			return nil
		case "CONNMARK":
			r.target = tConnmark
			return nil
		case "REJECT":
			r.target = tReject
			return nil
		case "LOG":
			r.target, r.log.Level = tLog, defaultLogLevel
			return nil
		}
	}
	if c := p.cur.byName[v]; c != nil {
		if c.builtin {
			return p.errf(ErrSyntax, "cannot jump to built-in chain %q", v)
		}
		r.target, r.jump = tJump, c
		if isGoto {
			r.target = tGoto
		}
		return nil
	}
	if unsupportedTargets[v] {
		return p.errf(ErrUnsupported, "target %q is not supported", v)
	}
	return p.errf(ErrUnknown, "unknown target or chain %q", v)
}

func parsePort(s string) (uint16, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil
}

// parsePortRange reads "N", "A:B", ":B" or "A:".
func parsePortRange(s string) (portRange, bool) {
	a, b, isRange := strings.Cut(s, ":")
	if !isRange {
		n, ok := parsePort(s)
		return portRange{n, n}, ok
	}
	pr := portRange{0, 0xffff}
	var ok bool
	if a != "" {
		if pr.lo, ok = parsePort(a); !ok {
			return pr, false
		}
	}
	if b != "" {
		if pr.hi, ok = parsePort(b); !ok {
			return pr, false
		}
	}
	return pr, pr.lo <= pr.hi
}

// parsePortList reads a multiport list "a,b,c:d". As libxt_multiport, a
// range needs both ends and the first below the second ("80:80", "80:"
// and ":80" are refused, unlike after --dport).
func parsePortList(s string) ([]portRange, bool) {
	var list []portRange
	slots := 0
	for _, f := range strings.Split(s, ",") {
		pr, ok := parsePortRange(f)
		if a, b, isRange := strings.Cut(f, ":"); !ok || isRange && (a == "" || b == "" || pr.lo == pr.hi) {
			return nil, false
		}
		slots++
		if strings.Contains(f, ":") {
			slots++
		}
		list = append(list, pr)
	}
	return list, slots <= maxMultiport
}

// TCP flag bits as the iptables names use them.
const (
	tcpFIN uint8 = 0x01
	tcpSYN uint8 = 0x02
	tcpRST uint8 = 0x04
	tcpPSH uint8 = 0x08
	tcpACK uint8 = 0x10
	tcpURG uint8 = 0x20
	tcpALL       = tcpFIN | tcpSYN | tcpRST | tcpPSH | tcpACK | tcpURG
)

var tcpFlagNames = []struct {
	name string
	bit  uint8
}{{"FIN", tcpFIN}, {"SYN", tcpSYN}, {"RST", tcpRST}, {"PSH", tcpPSH}, {"ACK", tcpACK}, {"URG", tcpURG}}

func parseTCPFlags(s string) (uint8, bool) {
	var v uint8
	for _, f := range strings.Split(s, ",") {
		switch strings.ToUpper(f) {
		case "ALL":
			v |= tcpALL
			continue
		case "NONE":
			continue
		}
		found := false
		for _, n := range tcpFlagNames {
			if strings.EqualFold(n.name, f) {
				v |= n.bit
				found = true
			}
		}
		if !found {
			return 0, false
		}
	}
	return v, true
}

var stateNames = []struct {
	name string
	bit  statemachine.CtState
}{
	// iptables-save order.
	{"INVALID", statemachine.StateInvalid},
	{"NEW", statemachine.StateNew},
	{"RELATED", statemachine.StateRelated},
	{"ESTABLISHED", statemachine.StateEstablished},
	{"UNTRACKED", statemachine.StateUntracked},
}

// parseStates reads "NEW,ESTABLISHED"; on failure bad is the first unknown
// name (possibly empty).
func parseStates(s string) (st statemachine.CtState, bad string, ok bool) {
	for _, f := range strings.Split(s, ",") {
		found := false
		for _, n := range stateNames {
			if strings.EqualFold(n.name, f) {
				st |= n.bit
				found = true
			}
		}
		if !found {
			return 0, f, false
		}
	}
	return st, "", true
}
