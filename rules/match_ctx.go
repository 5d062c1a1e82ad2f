package rules

import (
	"net/netip"
	"strconv"

	"github.com/statewire/statewire/packet"
)

// The matches and targets of match_*.go read the evaluation's Ctx beyond
// the state and port: the time (-m limit), the packet mark (-m mark, MARK),
// the connection (-m connmark, CONNMARK, -m conntrack beyond --ctstate);
// -m addrtype reads the addresses only.
//
// What a cached verdict may depend on (cache.go), for each:
//
//   - -m limit, -m conntrack --ctstatus/--ctexpire, -m connlimit: change
//     from packet to packet; reaching one makes the verdict uncacheable.
//   - -m connmark, and a CONNMARK target that runs on a packet with a
//     connection: the connection mark can change between two packets of a
//     direction (any packet of either direction may run CONNMARK), so a
//     walk that read or wrote it is not cached. A walk that reached no
//     such rule neither read nor wrote it, and takes the same path again
//     for the same (flow, direction, state, port): it stays cacheable.
//   - -m mark and MARK: the packet mark starts at 0 for every packet, and
//     only MARK and CONNMARK --restore-mark change it during the walk. With
//     no CONNMARK on the path, the mark at each rule is a function of the
//     path so far, itself fixed for a cacheable walk: reading it keeps the
//     verdict cacheable. (A --restore-mark on the path already made it
//     uncacheable.) Nothing after the verdict reads the mark, so the fast
//     path, which skips the walk, loses nothing.
//   - -m conntrack --ctdir, --ctproto, --ctorig*/--ctrepl*: fixed for a
//     flow direction (statewire does no NAT: the tuples never change).
//   - -m addrtype: the addresses, fixed for a flow direction.

// ctxArgs holds the values of the matches and targets of match_*.go, in the
// source rule and, unchanged, in the compiled one (part of xmatch).
type ctxArgs struct {
	// afterLimit are the matches written after -m limit in the rule: the
	// kernel tests matches in rule order, so a token is spent when the
	// ones before it pass.
	afterLimit matchBits
	lim        limitArgs
	mark       markArgs
	ct         ctArgs
	at         addrTypeArgs
	tg         markTarget
	rc         recentArgs
	cl         connlimitArgs
	hlim       hashlimitArgs
}

// ctxMatch tests the matches of ctxBits and mAddrType present in h, in the
// kernel's order of cost; -m limit last, so that a token is spent only when
// everything else matched. perPacket reports whether it reached one whose
// result may change within a flow direction.
func (r *crule) ctxMatch(p *packet.Packet, c *Ctx, h matchBits) (ok, perPacket bool) {
	neg := r.neg
	x := &r.x.ctxArgs
	if h&mAddrType != 0 && !x.at.match(p) {
		return false, false
	}
	if h&mCtFlow != 0 && !x.ct.matchFlow(c, r.has&mState != 0) {
		return false, false
	}
	if h&mMark != 0 && (c.Mark&x.mark.mask == x.mark.val) == (neg&mMark != 0) {
		return false, false
	}
	if h&mConnmark != 0 {
		if c.Conn == nil {
			// xt_connmark: no conntrack, no match, whatever the negation.
			return false, true
		}
		if (c.Conn.Mark&x.mark.cmask == x.mark.cval) == (neg&mConnmark != 0) {
			return false, true
		}
		perPacket = true
	}
	if h&mCtPacket != 0 {
		if !x.ct.matchPacket(c, r.has&mState != 0) {
			return false, true
		}
		perPacket = true
	}
	if h&mRecent != 0 {
		return x.rc.match(p, c.Now), true
	}
	if h&mConnlimit != 0 {
		if c.rs == nil {
			return false, true
		}
		n, ok := c.rs.connlimitCount(&x.cl, p, c)
		if !ok {
			c.hotdrop = true
			return false, true
		}
		return x.cl.match(n), true
	}
	if h&mHashlimit != 0 {
		ok, hotdrop := x.hlim.matchLocal(p, c)
		c.hotdrop = hotdrop
		return ok, true
	}
	if h&mLimit != 0 {
		if c.Local == nil || int(x.lim.slot) >= len(c.Local.limits) || x.lim.slot < 0 {
			return false, true
		}
		return c.Local.limits[x.lim.slot].take(c.Now, &x.lim), true
	}
	return true, perPacket
}

// compileCtx numbers the rule's -m limit bucket and notes what the rule set
// needs from its callers.
func (rs *RuleSet) compileCtx(cr *crule, r *rule) error {
	if cr.has&mLimit != 0 {
		cr.x.lim.slot = rs.nlimit
		rs.nlimit++
	}
	if cr.has&(mConnmark|mCtFlow|mCtPacket) != 0 || cr.target == tConnmark {
		rs.readsConn = true
	}
	if cr.has&mRecent != 0 {
		rs.compileRecent(cr)
	}
	if cr.has&mConnlimit != 0 {
		rs.compileConnlimit(cr)
	}
	return nil
}

// ctAddr is a --ctorigsrc style address: kept as written (iptables-save
// prints the address unmasked) and compiled to a prefix.
type ctAddr struct {
	addr netip.Addr
	bits int
	pfx  prefix
}

// parseCtxOpt reads the options of -m limit, -m mark, -m connmark and -m
// addrtype. lastMark is the module --mark belongs to (the later of -m mark
// and -m connmark).
func (p *parser) parseCtxOpt(r *rule, opt, word string, neg bool, mods, lastMark modBits, value func() (string, error)) error {
	need := func(m modBits, what string) error {
		if mods&m == 0 {
			return p.errf(ErrSyntax, "option %q needs %s", word, what)
		}
		return nil
	}
	switch opt {
	case "--limit", "--limit-burst":
		if err := need(modLimit, "-m limit"); err != nil {
			return err
		}
		if neg {
			return p.errf(ErrSyntax, "limit: option %q cannot be inverted", word)
		}
		v, err := value()
		if err != nil {
			return err
		}
		a := &r.x.lim
		if opt == "--limit" {
			avg, ok, tooFast := parseRate(v)
			switch {
			case tooFast:
				return p.errf(ErrSyntax, "rate too fast %q (at most 10000/second)", v)
			case !ok:
				return p.errf(ErrSyntax, "bad rate %q (N/second, N/minute, N/hour or N/day)", v)
			}
			a.avg = avg
			return nil
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n > limitBurstMax {
			return p.errf(ErrSyntax, "bad --limit-burst %q (0-%d)", v, limitBurstMax)
		}
		a.burst = uint32(n)
		return nil
	case "--mark":
		if err := need(modMark|modConnmark, "-m mark or -m connmark"); err != nil {
			return err
		}
		v, err := value()
		if err != nil {
			return err
		}
		val, mask, ok := parseMarkMask(v)
		if !ok {
			return p.errf(ErrSyntax, "bad mark %q (value[/mask], 32 bits)", v)
		}
		bit := mMark
		if lastMark == modConnmark {
			bit = mConnmark
			r.x.mark.cval, r.x.mark.cmask = val, mask
		} else {
			r.x.mark.val, r.x.mark.mask = val, mask
		}
		if r.has&bit != 0 {
			return p.errf(ErrSyntax, "option %q given twice", word)
		}
		r.has |= bit
		if neg {
			r.neg |= bit
		}
		return nil
	}
	if err := need(modAddrType, "-m addrtype"); err != nil {
		return err
	}
	_, err := p.parseAddrTypeOpt(r, opt, word, neg, value)
	return err
}

// headerBits are the matches of the rule's IP header part (ipt_ip), which
// the kernel tests before every match module.
const headerBits = mProto | mSrc | mDst | mIfIn | mIfOut | mFrag

// checkCtxRule finishes the rule's matches and targets of match_*.go:
// a module without its option, iptables' and the kernel's refusals, what
// statewire does not carry in the raw table, and the matches written after
// -m limit.
func (p *parser) checkCtxRule(r *rule, mods modBits, statefulAt matchBits) error {
	switch {
	case mods&modMark != 0 && r.has&mMark == 0:
		return p.errf(ErrSyntax, "mark: option \"--mark\" must be specified")
	case mods&modConnmark != 0 && r.has&mConnmark == 0:
		return p.errf(ErrSyntax, "connmark: option \"--mark\" must be specified")
	case mods&modAddrType != 0 && r.has&mAddrType == 0:
		return p.errf(ErrSyntax, "addrtype: you must specify --src-type or --dst-type")
	}
	if r.target == tMark || r.target == tConnmark {
		if err := p.checkMarkTarget(r); err != nil {
			return err
		}
	}
	if mods&modRecent != 0 {
		if err := p.checkRecent(r); err != nil {
			return err
		}
	}
	if mods&modConnlimit != 0 {
		if err := p.checkConnlimit(r); err != nil {
			return err
		}
	}
	if mods&modHashlimit != 0 {
		if err := p.checkHashlimit(r); err != nil {
			return err
		}
	}
	if r.has&mLimit != 0 {
		if p.cur.id == tableRaw {
			return p.errf(ErrUnsupported, "-m limit in the raw table is not supported; limit in the filter table")
		}
		if !r.x.lim.setup() {
			return p.errf(ErrSyntax, "limit: rate %s with burst %d is refused by the kernel (burst 0, or rate × burst overflows): lower the burst or raise the rate",
				rateString(r.x.lim.avg), r.x.lim.burst)
		}
	}
	if r.has&(mLimit|mRecent|mConnlimit|mHashlimit) == 0 {
		return nil
	}
	after := r.has &^ statefulAt &^ (mLimit | mRecent | mConnlimit | mHashlimit | headerBits | mComment)
	if after&(mPhysIn|mPhysOut|mIsIn|mIsOut|mIsBridged) != 0 {
		after |= mPorts
	}
	r.x.afterLimit = after
	return nil
}

// ctxString appends -m mark, -m connmark, -m addrtype and -m limit in
// iptables-save's form (the conntrack options go with -m conntrack).
func ctxString(r *rule, opt func(matchBits, string, string), w func(string)) {
	if r.has&mMark != 0 {
		w(" -m mark")
		opt(mMark, "--mark", markValString(r.x.mark.val, r.x.mark.mask))
	}
	if r.has&mConnmark != 0 {
		w(" -m connmark")
		opt(mConnmark, "--mark", markValString(r.x.mark.cval, r.x.mark.cmask))
	}
	if r.has&mAddrType != 0 {
		addrTypeString(r, w)
	}
	if r.has&mLimit != 0 {
		limitString(r, w)
	}
	if r.has&mRecent != 0 {
		recentString(r, w)
	}
	if r.has&mConnlimit != 0 {
		connlimitString(r, w)
	}
}
