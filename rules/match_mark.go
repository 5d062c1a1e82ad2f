package rules

import (
	"strconv"
	"strings"
)

// -m mark, -m connmark, and the MARK and CONNMARK targets (xt_mark.c,
// xt_connmark.c, libxt_MARK.c and libxt_CONNMARK.c revision 1). The packet
// mark is Ctx.Mark, the connection mark Ctx.Conn.Mark; ctx.go and
// match_ctx.go say how long each lives and what it does to caching.

// markArgs: -m mark --mark val/mask and -m connmark --mark cval/cmask.
// The value is kept as written (not masked), as the kernel compares
// (mark & mask) == val and iptables-save prints it.
type markArgs struct {
	val, mask   uint32
	cval, cmask uint32
}

// CONNMARK modes.
const (
	cmSet uint8 = iota
	cmSave
	cmRestore
)

// markTarget is a MARK or CONNMARK target in the kernel's form: MARK and
// CONNMARK set are mark = (mark &^ mask) ^ val; CONNMARK --save-mark is
// ctmark = (ctmark &^ ctmask) ^ (mark & nfmask), --restore-mark
// mark = (mark &^ nfmask) ^ (ctmark & ctmask).
type markTarget struct {
	mode           uint8
	val, mask      uint32 // MARK; CONNMARK set (ctmark, ctmask)
	nfmask, ctmask uint32 // CONNMARK save/restore
	// opts records the target options seen, for iptables' "cannot be used
	// together" and "required" errors (parser only).
	opts int
}

// runMarkTarget applies a MARK or CONNMARK target (the caller checked the
// rule's target is one of them). CONNMARK does nothing without a
// connection, as xt_connmark returns XT_CONTINUE then.
func (x *xmatch) runMarkTarget(c *Ctx, connmark bool) {
	t := &x.tg
	if !connmark {
		c.Mark = (c.Mark &^ t.mask) ^ t.val
		return
	}
	if c.Conn == nil {
		return
	}
	switch t.mode {
	case cmSet:
		c.Conn.Mark = (c.Conn.Mark &^ t.mask) ^ t.val
	case cmSave:
		c.Conn.Mark = (c.Conn.Mark &^ t.ctmask) ^ (c.Mark & t.nfmask)
	case cmRestore:
		c.Mark = (c.Mark &^ t.nfmask) ^ (c.Conn.Mark & t.ctmask)
	}
}

// parseMarkNum reads a 32-bit number as strtoul with base 0 does (decimal,
// 0x hex or 0 octal), refusing Go's extra forms (0b, 0o, underscores).
func parseMarkNum(s string) (uint32, bool) {
	if s == "" || strings.ContainsAny(s, "_+-") || strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0B") ||
		strings.HasPrefix(s, "0o") || strings.HasPrefix(s, "0O") {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 0, 32)
	return uint32(n), err == nil
}

// parseMarkMask reads "value[/mask]"; the mask is 0xffffffff when absent.
func parseMarkMask(s string) (val, mask uint32, ok bool) {
	a, b, hasMask := strings.Cut(s, "/")
	if val, ok = parseMarkNum(a); !ok {
		return 0, 0, false
	}
	mask = 0xffffffff
	if hasMask {
		if mask, ok = parseMarkNum(b); !ok {
			return 0, 0, false
		}
	}
	return val, mask, true
}

func hex32(n uint32) string { return "0x" + strconv.FormatUint(uint64(n), 16) }

// markValString is libxt_mark's print: "0xV", and "/0xM" unless M is all
// ones.
func markValString(val, mask uint32) string {
	if mask == 0xffffffff {
		return hex32(val)
	}
	return hex32(val) + "/" + hex32(mask)
}

// markTargetString is the target as iptables-save 1.8.9 prints it: MARK
// always as --set-xmark, CONNMARK set as --set-xmark, save and restore
// with both masks.
func markTargetString(r *rule) string {
	t := &r.x.tg
	if r.target == tMark {
		return "MARK --set-xmark " + hex32(t.val) + "/" + hex32(t.mask)
	}
	switch t.mode {
	case cmSave:
		return "CONNMARK --save-mark --nfmask " + hex32(t.nfmask) + " --ctmask " + hex32(t.ctmask)
	case cmRestore:
		return "CONNMARK --restore-mark --nfmask " + hex32(t.nfmask) + " --ctmask " + hex32(t.ctmask)
	}
	return "CONNMARK --set-xmark " + hex32(t.val) + "/" + hex32(t.mask)
}

// Target option bits (markTarget.opts).
const (
	tgoSetX = 1 << iota
	tgoSet
	tgoAnd
	tgoOr
	tgoXor
	tgoSave
	tgoRestore
	tgoMask
	tgoNfMask
	tgoCtMask
)

// parseMarkTargetOpt reads one option of -j MARK or -j CONNMARK. It
// returns handled=false for an option that is not one of theirs.
func (p *parser) parseMarkTargetOpt(r *rule, opt, word string, value func() (string, error)) (handled bool, err error) {
	t := &r.x.tg
	conn := r.target == tConnmark
	var bit int
	switch opt {
	case "--set-xmark":
		bit = tgoSetX
	case "--set-mark":
		bit = tgoSet
	case "--and-mark":
		bit = tgoAnd
	case "--or-mark":
		bit = tgoOr
	case "--xor-mark":
		bit = tgoXor
	case "--save-mark", "--restore-mark", "--mask", "--nfmask", "--ctmask":
		if !conn {
			return false, nil
		}
		bit = map[string]int{"--save-mark": tgoSave, "--restore-mark": tgoRestore, "--mask": tgoMask,
			"--nfmask": tgoNfMask, "--ctmask": tgoCtMask}[opt]
	default:
		return false, nil
	}
	const ops = tgoSetX | tgoSet | tgoAnd | tgoOr | tgoXor | tgoSave | tgoRestore
	if t.opts&bit != 0 {
		return true, p.errf(ErrSyntax, "option %q given twice", word)
	}
	if bit&ops != 0 && t.opts&ops != 0 {
		return true, p.errf(ErrSyntax, "%s: option %q cannot be used together with another operation", targetName(r), word)
	}
	t.opts |= bit
	if bit == tgoSave || bit == tgoRestore {
		t.mode = cmSave
		if bit == tgoRestore {
			t.mode = cmRestore
		}
		if t.opts&(tgoMask|tgoNfMask|tgoCtMask) == 0 {
			t.nfmask, t.ctmask = 0xffffffff, 0xffffffff
		}
		return true, nil
	}
	v, err := value()
	if err != nil {
		return true, err
	}
	switch bit {
	case tgoSetX, tgoSet:
		val, mask, ok := parseMarkMask(v)
		if !ok {
			return true, p.errf(ErrSyntax, "bad mark %q (value[/mask], 32 bits)", v)
		}
		if bit == tgoSet {
			mask |= val // libxt_MARK: --set-mark clears the mask's bits and the value's
		}
		t.mode, t.val, t.mask = cmSet, val, mask
	default:
		n, ok := parseMarkNum(v)
		if !ok {
			return true, p.errf(ErrSyntax, "bad mark %q (32 bits)", v)
		}
		switch bit {
		case tgoAnd:
			t.mode, t.val, t.mask = cmSet, 0, ^n
		case tgoOr:
			t.mode, t.val, t.mask = cmSet, n, n
		case tgoXor:
			t.mode, t.val, t.mask = cmSet, n, 0
		case tgoMask:
			if t.opts&tgoSet != 0 {
				// --set-mark V --mask M: libxt_CONNMARK's older spelling.
				t.mask = t.val | n
			}
			t.nfmask, t.ctmask = n, n
			if t.opts&tgoNfMask != 0 || t.opts&tgoCtMask != 0 {
				return true, p.errf(ErrSyntax, "CONNMARK: --mask cannot be used with --nfmask or --ctmask")
			}
		case tgoNfMask:
			if t.opts&tgoMask != 0 {
				return true, p.errf(ErrSyntax, "CONNMARK: --nfmask cannot be used with --mask")
			}
			if t.opts&tgoCtMask == 0 {
				t.ctmask = 0xffffffff
			}
			t.nfmask = n
		case tgoCtMask:
			if t.opts&tgoMask != 0 {
				return true, p.errf(ErrSyntax, "CONNMARK: --ctmask cannot be used with --mask")
			}
			if t.opts&tgoNfMask == 0 {
				t.nfmask = 0xffffffff
			}
			t.ctmask = n
		}
	}
	return true, nil
}

// checkMarkTarget is the final check of a MARK/CONNMARK target.
func (p *parser) checkMarkTarget(r *rule) error {
	const ops = tgoSetX | tgoSet | tgoAnd | tgoOr | tgoXor | tgoSave | tgoRestore
	t := &r.x.tg
	if t.opts&ops == 0 {
		if r.target == tMark {
			return p.errf(ErrSyntax, "MARK: one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark is required")
		}
		return p.errf(ErrSyntax, "CONNMARK: no operation given (--set-mark, --save-mark, --restore-mark, ...)")
	}
	if t.opts&(tgoNfMask|tgoCtMask) != 0 && t.opts&(tgoSave|tgoRestore) == 0 {
		return p.errf(ErrSyntax, "CONNMARK: --nfmask and --ctmask go with --save-mark or --restore-mark")
	}
	if t.opts&tgoMask != 0 && t.opts&(tgoSave|tgoRestore|tgoSet) == 0 {
		return p.errf(ErrSyntax, "CONNMARK: --mask goes with --set-mark, --save-mark or --restore-mark")
	}
	if p.cur.id == tableRaw {
		return p.errf(ErrUnsupported, "target %s in the raw table is not supported (statewire does not carry the packet mark from the raw table to filter); set marks in the filter table", targetName(r))
	}
	return nil
}
