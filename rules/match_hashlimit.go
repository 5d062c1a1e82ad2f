package rules

import (
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/statewire/statewire/packet"
)

// -m hashlimit is xt_hashlimit revision 3 (net/netfilter/xt_hashlimit.c,
// what iptables 1.8.9 loads) with its arithmetic kept: a token bucket per
// key (the packet's source and/or destination address, masked, and ports,
// as --hashlimit-mode says; no mode is one bucket for the rule), in 64-bit
// credits; the byte-rate forms ("kb/s", a bucket of packet-length chunks
// with its refill counter); and --hashlimit-rate-match (a per-key rate
// measured over --hashlimit-rate-interval, nothing spent).
//
// The kernel counts jiffies; statewire uses HZ 1000. With revision 3's
// CREDITS_PER_JIFFY (2^37 at HZ 1000, 2^39 at HZ 250) HZ×CREDITS_PER_JIFFY
// is the same for both, so costs and bucket sizes are those of Debian's
// HZ 250 kernels and only the refill step is finer (1 ms, not 4 ms); the
// same holds for the byte mode's CREDITS_PER_JIFFY_BYTES.
//
// Tables. The kernel keeps one table per name and family in the network
// namespace, shared by every rule naming it, with the settings (mode,
// masks, rate, burst, size, expiry) of the rule that created it: the first
// in the order iptables-restore hands rules to the kernel (INPUT, FORWARD,
// OUTPUT, then user chains by name). statewire does the same per family,
// but each worker keeps its own tables (Local: no lock, no shared cache
// line), so with W workers a key is admitted up to W times its rate and
// burst in total; one flow's packets go to one worker, so one flow sees
// the exact limit. Rules naming one table must agree on its units (packets,
// bytes, --hashlimit-rate-match; checkHashlimit): the kernel would read
// the buckets of the rule that created the table in the others' units.
//
// A table holds at most --hashlimit-htable-max keys (default 8 ×
// --hashlimit-htable-size, the size 8192 of any machine with more than
// 1 GiB of memory; both capped at 1048576 as the kernel caps them): a
// packet with a new key when the table is full is dropped on the spot, as
// the kernel's hotdrop does (Verdict.HashlimitFull says so; the bridge
// counts it as drop reason hashlimit-full). Each worker's entries are
// allocated with its Local, 80 bytes each and 4 a bucket (the pages are
// touched as keys arrive). An idle key expires after
// --hashlimit-htable-expire ms; statewire forgets it at that moment (a
// later packet finds a fresh, full bucket) and returns its entry to the
// table in a sweep every --hashlimit-htable-gcinterval ms, 64 buckets a
// packet. Difference: the kernel frees an expired key only at its next
// garbage collection, up to gcinterval later, and a packet in between
// still finds the old bucket. A rules reload starts every table empty
// (the kernel keeps a table that a rule of the new set still names).

// XT_HASHLIMIT_* mode bits.
const (
	hlDstIP     uint32 = 1 << 0
	hlDstPort   uint32 = 1 << 1
	hlSrcIP     uint32 = 1 << 2
	hlSrcPort   uint32 = 1 << 3
	hlInvert    uint32 = 1 << 4
	hlBytes     uint32 = 1 << 5
	hlRateMatch uint32 = 1 << 6
	hlKeyBits          = hlDstIP | hlDstPort | hlSrcIP | hlSrcPort
)

const (
	hlScale          = 1000000   // XT_HASHLIMIT_SCALE_v2
	hlHZ             = 1000      // statewire's jiffy: 1 ms
	hlCPJ            = 1 << 37   // CREDITS_PER_JIFFY at HZ 1000 (revision 2+)
	hlCPJBytes       = 1 << 22   // CREDITS_PER_JIFFY_BYTES at HZ 1000
	hlByteShift      = 4         // XT_HASHLIMIT_BYTE_SHIFT
	hlDefBurst       = 5         // XT_HASHLIMIT_BURST
	hlBurstMax       = 1000000   // XT_HASHLIMIT_BURST_MAX
	hlDefGC          = 1000      // XT_HASHLIMIT_GCINTERVAL (ms)
	hlByteExpire     = 15        // XT_HASHLIMIT_BYTE_EXPIRE (s)
	hlByteBurstExp   = 60        // XT_HASHLIMIT_BYTE_EXPIRE_BURST (s)
	hlMaxSize        = 1048576   // HASHLIMIT_MAX_SIZE
	hlDefSize        = 8192      // htable_create's size with more than 1 GiB of RAM
	hlNameMax        = 254       // NAME_MAX - 1 (xt_check_proc_name)
	hlGCStep         = 64        // buckets swept per packet while a sweep is due
	hlCreditsPerUser = 137438953 // HZ*CREDITS_PER_JIFFY / XT_HASHLIMIT_SCALE_v2
)

// Options given (the xtables flags the checks read).
const (
	hlGivenRate uint16 = 1 << iota
	hlGivenBurst
	hlGivenMode
	hlGivenSrcMask
	hlGivenDstMask
	hlGivenName
	hlGivenSize
	hlGivenMax
	hlGivenGC
	hlGivenExpire
	hlGivenRateMatch
	hlGivenInterval
)

// hashlimitArgs is one rule's struct hashlimit_cfg3 and name, as
// libxt_hashlimit leaves them for the kernel (and iptables-save prints).
type hashlimitArgs struct {
	name                                    string
	avg, burst                              uint64
	mode                                    uint32
	size, max, gcInterval, expire, interval uint32
	// srcMask, dstMask as given; -1: the family's full length (32 or 128).
	srcMask, dstMask int16
	given            uint16
	mult             uint32 // the rate's unit in seconds (the parser's udata)
	// Compiled (compileCtx): the rule's table in Local.hl.
	slot int32
}

// hlKey is struct dsthash_dst: the masked addresses (16-byte form, IPv4
// in the low word) and the ports, zero where the mode leaves them out.
type hlKey struct {
	src, dst     [2]uint64
	sport, dport uint16
}

// hlEntry is struct dsthash_ent. a and b are the rate state: credit and
// credit_cap (the byte mode counts its refills down in credit_cap), or
// with rate-match current_rate and prev_window.
type hlEntry struct {
	key     hlKey
	next    int32 // index+1 of the next entry in the bucket or free list
	expires int64 // jiffies
	prev    int64 // jiffies of the last recalculation
	a, b    uint64
}

// hlConfig is a table's settings, fixed when the rule set is compiled:
// the first rule's (see the file comment), resolved for the family.
type hlConfig struct {
	args             hashlimitArgs
	size, max        uint32
	srcMask, dstMask [2]uint64 // key masks in hlKey form, zero when not in the mode
	// Derived once, as rateinfo_init derives them per entry.
	credit, cost uint64 // packet mode: full bucket and cost; bytes: cost
	rate         uint64 // rate-match: user2rate / user2rate_bytes
	rmBurst      uint64 // rate-match: the burst rateinfo_init derives
}

// hlTable is one worker's table (struct xt_hashlimit_htable).
type hlTable struct {
	cfg    *hlConfig
	seed   uint64
	heads  []int32 // index+1 of each bucket's first entry
	ents   []hlEntry
	used   int32 // entries handed out so far (the rest were never touched)
	free   int32 // index+1 of the first freed entry
	count  int32
	gcNext int64 // jiffies: when the next sweep starts
	gcPos  int32 // next bucket of the sweep in progress, -1: none
	// Full counts packets dropped because the table had no room.
	full uint64
}

// user2credits is revision 3's precision saver (64 bits, wrapping as the
// kernel's u64 does).
func hlUser2Credits(user uint64) uint64 { return user * hlCreditsPerUser }

func hlUser2CreditsByte(user uint64) uint64 {
	return (uint64(uint32(user)) * (hlHZ * hlCPJBytes)) >> 32
}

// hlCostToBytes and hlBytesToCost are libxt_hashlimit's conversions
// between a byte rate and the kernel's avg.
func hlCostToBytes(cost uint64) uint64 {
	r := uint64(0xFFFFFFFF)
	if cost != 0 {
		r = 0xFFFFFFFF / cost
	}
	return (r - 1) << hlByteShift
}

func hlBytesToCost(bytes uint64) uint64 {
	r := uint32(bytes >> hlByteShift)
	if r == 0xFFFFFFFF {
		return 0 // C divides by zero here; such a rate is refused anyway
	}
	return 0xFFFFFFFF / uint64(r+1)
}

// maskWords returns an n-bit prefix mask of a family's address in hlKey's
// 16-byte form.
func maskWords(n int, v4 bool) [2]uint64 {
	if v4 {
		if n <= 0 {
			return [2]uint64{}
		}
		return [2]uint64{0, uint64(^uint32(0) << (32 - n))}
	}
	var m [2]uint64
	for i := range m {
		b := n - 64*i
		switch {
		case b >= 64:
			m[i] = ^uint64(0)
		case b > 0:
			m[i] = ^uint64(0) << (64 - b)
		}
	}
	return m
}

// newHlConfig resolves a rule's settings into a table's for family v4/v6,
// as htable_create and rateinfo_init do.
func newHlConfig(a *hashlimitArgs, v4 bool) *hlConfig {
	c := &hlConfig{args: *a, size: a.size, max: a.max}
	if c.size == 0 {
		c.size = hlDefSize
	}
	if c.max == 0 {
		c.max = 8 * c.size
	} else if c.max < c.size {
		c.max = c.size
	}
	full := 128
	if v4 {
		full = 32
	}
	sm, dm := int(a.srcMask), int(a.dstMask)
	if sm < 0 {
		sm = full
	}
	if dm < 0 {
		dm = full
	}
	if a.mode&hlSrcIP != 0 {
		c.srcMask = maskWords(sm, v4)
	}
	if a.mode&hlDstIP != 0 {
		c.dstMask = maskWords(dm, v4)
	}
	switch {
	case a.mode&hlRateMatch != 0:
		if a.mode&hlBytes != 0 {
			r := uint64(0xFFFFFFFF)
			if u := uint32(a.avg); u != 0 {
				r = 0xFFFFFFFF / uint64(u)
			}
			c.rate = (r - 1) << hlByteShift
			c.rmBurst = c.rate
			if a.burst != 0 {
				c.rmBurst = a.burst * c.rate
			}
		} else {
			if a.avg != 0 {
				c.rate = hlScale / a.avg
			}
			c.rmBurst = a.burst + c.rate
		}
	case a.mode&hlBytes != 0:
		c.cost = hlUser2CreditsByte(a.avg)
	default:
		c.credit = hlUser2Credits(a.avg * a.burst)
		c.cost = hlUser2Credits(a.avg)
	}
	return c
}

func newHlTable(c *hlConfig) hlTable {
	return hlTable{cfg: c, seed: rand.Uint64(), heads: make([]int32, c.size), ents: make([]hlEntry, c.max), gcPos: -1}
}

func (t *hlTable) hash(k *hlKey) uint32 {
	const m = 0x9E3779B97F4A7C15
	h := t.seed
	for _, w := range [...]uint64{k.src[0], k.src[1], k.dst[0], k.dst[1], uint64(k.sport)<<16 | uint64(k.dport)} {
		h = (h ^ w) * m
		h ^= h >> 29
	}
	// reciprocal_scale, as hash_dst picks the bucket.
	return uint32((uint64(uint32(h>>32)) * uint64(len(t.heads))) >> 32)
}

// rateinfoInit is rateinfo_init for a fresh entry.
func (t *hlTable) rateinfoInit(e *hlEntry, j int64) {
	c := t.cfg
	e.prev = j
	switch {
	case c.args.mode&hlRateMatch != 0:
		e.a, e.b = 0, 0 // current_rate, prev_window
	case c.args.mode&hlBytes != 0:
		e.a, e.b = hlCPJBytes*hlHZ, c.args.burst
	default:
		e.a, e.b = c.credit, c.credit
	}
}

// rateinfoRecalc is rateinfo_recalc.
func (t *hlTable) rateinfoRecalc(e *hlEntry, j int64) {
	if j <= e.prev {
		return // delta 0 (the clock never runs backwards here)
	}
	delta := uint64(j - e.prev)
	mode := t.cfg.args.mode
	if mode&hlRateMatch != 0 {
		interval := uint64(t.cfg.args.interval) * hlHZ
		if delta < interval {
			return
		}
		e.prev = j
		e.b = 0
		if e.a*interval > delta*t.cfg.rate {
			e.b = 1
		}
		e.a = 0
		return
	}
	e.prev = j
	var cap uint64
	if mode&hlBytes != 0 {
		tmp := e.a
		e.a += hlCPJBytes * delta
		cap = hlCPJBytes * hlHZ
		if tmp >= e.a {
			e.a = cap
			return
		}
	} else {
		e.a += delta * hlCPJ
		cap = e.b
	}
	if e.a > cap {
		e.a = cap
	}
}

// key is hashlimit_init_dst. Ports are those of the protocols
// proto_ports_offset knows with a port pair; others (ICMP...) key with 0.
func (c *hlConfig) key(p *packet.Packet) hlKey {
	var k hlKey
	k.src[0] = be64(p.Src[0:8]) & c.srcMask[0]
	k.src[1] = be64(p.Src[8:16]) & c.srcMask[1]
	k.dst[0] = be64(p.Dst[0:8]) & c.dstMask[0]
	k.dst[1] = be64(p.Dst[8:16]) & c.dstMask[1]
	if c.args.mode&(hlSrcPort|hlDstPort) != 0 {
		switch p.Proto {
		case 6, 17, 33, 132, 136:
			if c.args.mode&hlSrcPort != 0 {
				k.sport = p.SrcPort
			}
			if c.args.mode&hlDstPort != 0 {
				k.dport = p.DstPort
			}
		}
	}
	return k
}

func be64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// find returns the entry of k, or nil.
func (t *hlTable) find(k *hlKey, b uint32) *hlEntry {
	for i := t.heads[b]; i != 0; {
		e := &t.ents[i-1]
		if e.key == *k {
			return e
		}
		i = e.next
	}
	return nil
}

// alloc takes an entry for k into bucket b, or returns nil when the table
// holds max keys.
func (t *hlTable) alloc(k *hlKey, b uint32) *hlEntry {
	if uint32(t.count) >= t.cfg.max {
		return nil
	}
	var i int32
	switch {
	case t.free != 0:
		i = t.free
		t.free = t.ents[i-1].next
	case int(t.used) < len(t.ents):
		t.used++
		i = t.used
	default:
		return nil
	}
	e := &t.ents[i-1]
	e.key, e.next = *k, t.heads[b]
	t.heads[b] = i
	t.count++
	return e
}

// sweep frees expired entries of up to hlGCStep buckets while a sweep is
// due (htable_gc, spread over packets).
func (t *hlTable) sweep(j int64) {
	if t.gcPos < 0 {
		if j < t.gcNext {
			return
		}
		t.gcPos = 0
	}
	end := min(int(t.gcPos)+hlGCStep, len(t.heads))
	for b := int(t.gcPos); b < end; b++ {
		link := &t.heads[b]
		for *link != 0 {
			i := *link
			e := &t.ents[i-1]
			if j >= e.expires {
				*link = e.next
				e.next = t.free
				t.free = i
				t.count--
				continue
			}
			link = &e.next
		}
	}
	t.gcPos = int32(end)
	if end >= len(t.heads) {
		t.gcPos = -1
		t.gcNext = j + int64(t.cfg.args.gcInterval)
	}
}

// match is hashlimit_mt_common for rule arguments a on table t at now
// (ns). hotdrop is true when the table had no room for the packet's key:
// the packet is dropped, whatever the rule says.
func (t *hlTable) match(p *packet.Packet, a *hashlimitArgs, now int64) (ok, hotdrop bool) {
	j := now / (1e9 / hlHZ)
	t.sweep(j)
	c := t.cfg
	k := c.key(p)
	b := t.hash(&k)
	e := t.find(&k, b)
	switch {
	case e == nil:
		if e = t.alloc(&k, b); e == nil {
			t.full++
			return false, true
		}
		e.expires = j + int64(c.args.expire)
		t.rateinfoInit(e, j)
	case j >= e.expires:
		// Expired: what the kernel's garbage collection would have
		// freed; the key starts afresh.
		e.expires = j + int64(c.args.expire)
		t.rateinfoInit(e, j)
	default:
		e.expires = j + int64(c.args.expire)
		t.rateinfoRecalc(e, j)
	}
	inv := a.mode&hlInvert != 0
	if a.mode&hlRateMatch != 0 {
		cost := uint64(1)
		if a.mode&hlBytes != 0 {
			cost = uint64(p.IPLen)
		}
		e.a += cost
		if e.b == 0 && e.a <= c.rmBurst {
			return !inv, false
		}
		return inv, false
	}
	var cost uint64
	if a.mode&hlBytes != 0 {
		// hashlimit_byte_cost: 16-byte chunks; an empty bucket is
		// refilled while the refill counter (the burst) lasts.
		cost = (uint64(p.IPLen)>>hlByteShift + 1) * c.cost
		if cost > hlCPJBytes*hlHZ {
			cost = hlCPJBytes * hlHZ
		}
		if e.a < cost && e.b != 0 {
			e.b--
			e.a = hlCPJBytes * hlHZ
		}
	} else {
		cost = c.cost
	}
	if e.a >= cost {
		e.a -= cost
		return !inv, false
	}
	return inv, false
}

// matchHashlimit tests the rule's -m hashlimit with the worker's tables.
// Without them (c.Local nil) the test fails, as with no credit.
func (a *hashlimitArgs) matchLocal(p *packet.Packet, c *Ctx) (ok, hotdrop bool) {
	if c.Local == nil || a.slot < 0 || int(a.slot) >= len(c.Local.hl) {
		return false, false
	}
	return c.Local.hl[a.slot].match(p, a, c.Now)
}

// HashlimitFull returns how many packets this worker dropped because a
// -m hashlimit table had no room for a new key (each was also reported in
// its Verdict.HashlimitFull).
func (l *Local) HashlimitFull() uint64 {
	var n uint64
	for i := range l.hl {
		n += l.hl[i].full
	}
	return n
}

// hlTableRef names a table: a family index and a name.
type hlTableRef struct {
	fi   int
	name string
}

// compileHashlimitTables numbers the family's tables, each with the
// settings of the first rule naming it in the order iptables-restore
// hands rules to the kernel: the built-in chains (INPUT, FORWARD, OUTPUT),
// then the user chains sorted by name.
func (rs *RuleSet) compileHashlimitTables(t *table, f Family, fi int) {
	if t == nil {
		return
	}
	var builtin, user []*chain
	for _, c := range t.chains {
		if c.builtin {
			builtin = append(builtin, c)
		} else {
			user = append(user, c)
		}
	}
	sort.Slice(user, func(i, j int) bool { return user[i].name < user[j].name })
	for _, c := range append(builtin, user...) {
		for _, r := range c.rules {
			if r.has&mHashlimit == 0 || r.fam&f == 0 {
				continue
			}
			ref := hlTableRef{fi, r.x.hlim.name}
			if _, ok := rs.hlIndex[ref]; ok {
				continue
			}
			if rs.hlIndex == nil {
				rs.hlIndex = map[hlTableRef]int32{}
			}
			rs.hlIndex[ref] = int32(len(rs.hlCfg))
			rs.hlCfg = append(rs.hlCfg, newHlConfig(&r.x.hlim, f == FamilyIPv4))
		}
	}
}

// compileHashlimit points the compiled rule at its table.
func (rs *RuleSet) compileHashlimit(cr *crule, r *rule, f Family) error {
	fi := 0
	if f == FamilyIPv6 {
		fi = 1
	}
	slot, ok := rs.hlIndex[hlTableRef{fi, r.x.hlim.name}]
	if !ok {
		return &ParseError{File: r.file, Line: r.line, Err: ErrSyntax, Msg: "hashlimit: internal error: no table for " + strconv.Quote(r.x.hlim.name)}
	}
	// checkHashlimit made every rule of a table agree with its units.
	cr.x.hlim.slot = slot
	return nil
}

func hlUnits(mode uint32) string {
	s := "counts packets"
	if mode&hlBytes != 0 {
		s = "counts bytes"
	}
	if mode&hlRateMatch != 0 {
		s += " with --hashlimit-rate-match"
	}
	return s
}

// parseHlRate is libxt_hashlimit's parse_rate for revision 2+: avg in
// millionths of a second per packet. ok false: a bad rate; tooFast: one
// that maps to 0.
func parseHlRate(s string) (avg uint64, mult uint32, ok, tooFast bool) {
	mult = 1
	if _, unit, slash := strings.Cut(s, "/"); slash {
		u := strings.ToLower(unit)
		switch {
		case u == "":
			return 0, 0, false, false
		case strings.HasPrefix("second", u):
			mult = 1
		case strings.HasPrefix("minute", u):
			mult = 60
		case strings.HasPrefix("hour", u):
			mult = 3600
		case strings.HasPrefix("day", u):
			mult = 86400
		default:
			return 0, 0, false, false
		}
	}
	r := atou(s)
	if r == 0 {
		return 0, 0, false, false
	}
	avg = hlScale * uint64(mult) / r
	if avg == 0 {
		return 0, 0, false, true
	}
	return avg, mult, true, false
}

// parseHlBytes is parse_bytes: "N[k|m]b/s". handled is false when s is
// not a byte rate; tooHigh for one that maps to 0.
func parseHlBytes(s string) (avg uint64, handled, tooHigh bool) {
	i := strings.Index(s, "b/s")
	if i <= 0 {
		return 0, false, false
	}
	r := atou(s)
	if r == 0 {
		return 0, false, false
	}
	avg = hlBytesToCost(r * uint64(hlFactor(s[i-1])))
	if avg == 0 {
		return 0, true, true
	}
	return avg, true, false
}

func hlFactor(c byte) uint32 {
	switch c {
	case 'm':
		return 1024 * 1024
	case 'k':
		return 1024
	}
	return 1
}

// atou is atoll for the positive numbers iptables reads: leading blanks,
// then digits; the rest is ignored.
func atou(s string) uint64 {
	s = strings.TrimLeft(s, " \t")
	s = strings.TrimPrefix(s, "+")
	var n uint64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + uint64(s[i]-'0')
	}
	return n
}

// strtoumax is xtables_strtoul's base-0 parse: the number (decimal, 0x
// hex or 0 octal) and the rest of s.
func strtoumax(s string) (v uint64, rest string, ok bool) {
	t := strings.TrimLeft(s, " \t\n")
	if strings.HasPrefix(t, "-") {
		return 0, s, false
	}
	t = strings.TrimPrefix(t, "+")
	base := uint64(10)
	switch {
	case len(t) > 2 && (t[:2] == "0x" || t[:2] == "0X") && hexDigit(t[2]) >= 0:
		base, t = 16, t[2:]
	case len(t) > 1 && t[0] == '0':
		base = 8
	}
	i := 0
	for ; i < len(t); i++ {
		d := hexDigit(t[i])
		if d < 0 || uint64(d) >= base {
			break
		}
		if v > (^uint64(0)-uint64(d))/base {
			return 0, s, false // ERANGE
		}
		v = v*base + uint64(d)
	}
	if i == 0 {
		return 0, s, false
	}
	return v, t[i:], true
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseHashlimitOpt reads one option of -m hashlimit (libxt_hashlimit's
// hashlimit_mt_parse, revision 3).
func (p *parser) parseHashlimitOpt(r *rule, opt, word string, neg bool, value func() (string, error)) error {
	a := &r.x.hlim
	bit := map[string]uint16{
		"--hashlimit-upto": hlGivenRate, "--hashlimit-above": hlGivenRate, "--hashlimit": hlGivenRate,
		"--hashlimit-burst": hlGivenBurst, "--hashlimit-mode": hlGivenMode,
		"--hashlimit-srcmask": hlGivenSrcMask, "--hashlimit-dstmask": hlGivenDstMask, "--hashlimit-name": hlGivenName,
		"--hashlimit-htable-size": hlGivenSize, "--hashlimit-htable-max": hlGivenMax,
		"--hashlimit-htable-gcinterval": hlGivenGC, "--hashlimit-htable-expire": hlGivenExpire,
		"--hashlimit-rate-match": hlGivenRateMatch, "--hashlimit-rate-interval": hlGivenInterval,
	}[opt]
	if bit == 0 {
		return p.errf(ErrUnknown, "unknown hashlimit option %q", word)
	}
	isRate := bit == hlGivenRate
	if neg && !isRate {
		return p.errf(ErrSyntax, "hashlimit: option %q cannot be inverted", word)
	}
	if a.given&bit != 0 {
		if isRate {
			return p.errf(ErrSyntax, "hashlimit: --hashlimit-upto and --hashlimit-above: only one, once")
		}
		return p.errf(ErrSyntax, "hashlimit: option %q can only be used once", word)
	}
	a.given |= bit
	if bit == hlGivenRateMatch {
		a.mode |= hlRateMatch
		return nil
	}
	v, err := value()
	if err != nil {
		return err
	}
	bad := func(what string) error {
		return p.errf(ErrSyntax, "hashlimit: bad value %q for %s (%s)", v, word, what)
	}
	u32 := func() (uint32, bool) {
		n, rest, ok := strtoumax(v)
		return uint32(n), ok && rest == "" && n <= 0xFFFFFFFF
	}
	switch bit {
	case hlGivenRate:
		// ! --hashlimit-upto is --hashlimit-above and the other way round.
		if (opt == "--hashlimit-above") != neg {
			a.mode |= hlInvert
		}
		if avg, handled, tooHigh := parseHlBytes(v); handled {
			if tooHigh {
				return p.errf(ErrSyntax, "hashlimit: rate too high %q", v)
			}
			if hlCostToBytes(avg) == 0 {
				// The kernel counts 16-byte chunks: iptables saves such
				// a rate as 0b/s, which it cannot read back, and
				// divides by zero on it with a --hashlimit-burst.
				return p.errf(ErrSyntax, "hashlimit: byte rate %q is below the smallest one, 16b/s: raise it", v)
			}
			a.avg, a.mode, a.mult = avg, a.mode|hlBytes, hlByteExpire
			return nil
		}
		avg, mult, ok, tooFast := parseHlRate(v)
		switch {
		case tooFast:
			return p.errf(ErrSyntax, "hashlimit: rate too fast %q (at most 1000000/second)", v)
		case !ok:
			return bad("N/second, N/minute, N/hour, N/day, or bytes as Nb/s, Nkb/s, Nmb/s")
		}
		a.avg, a.mult = avg, mult
	case hlGivenBurst:
		n, rest, ok := strtoumax(v)
		if !ok || n < 1 || (rest == "" && n > hlBurstMax) {
			return bad("1-1000000, or bytes with a byte rate: N, Nkb, Nmb")
		}
		if rest != "" {
			n *= uint64(hlFactor(rest[0]))
		}
		a.burst = n
	case hlGivenMode:
		for _, tok := range strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == '|' }) {
			switch tok {
			case "dstip":
				a.mode |= hlDstIP
			case "srcip":
				a.mode |= hlSrcIP
			case "srcport":
				a.mode |= hlSrcPort
			case "dstport":
				a.mode |= hlDstPort
			default:
				return bad("a comma-separated list of srcip, srcport, dstip, dstport")
			}
		}
	case hlGivenSrcMask, hlGivenDstMask:
		n, rest, ok := strtoumax(v)
		max := uint64(128)
		if r.fam&FamilyIPv6 == 0 {
			max = 32
		}
		if !ok || rest != "" || n > max {
			return bad("a prefix length, 0-32 for IPv4, 0-128 for IPv6")
		}
		if n > 32 {
			r.fam &= FamilyIPv6
		}
		if bit == hlGivenSrcMask {
			a.srcMask = int16(n)
		} else {
			a.dstMask = int16(n)
		}
	case hlGivenName:
		if v == "" || v == "." || v == ".." || strings.Contains(v, "/") || len(v) > hlNameMax {
			return bad("1-254 characters, no '/', not . or ..")
		}
		a.name = v
	case hlGivenSize, hlGivenMax, hlGivenGC, hlGivenExpire:
		n, ok := u32()
		if !ok {
			return bad("a number, 0-4294967295")
		}
		switch bit {
		case hlGivenSize:
			a.size = n
		case hlGivenMax:
			a.max = n
		case hlGivenGC:
			a.gcInterval = n
		default:
			a.expire = n
		}
	case hlGivenInterval:
		n := atou(v)
		if n == 0 || n > 0x7FFFFFFF || strings.HasPrefix(strings.TrimLeft(v, " \t"), "-") {
			return bad("seconds, 1 or more")
		}
		a.interval = uint32(n)
	}
	return nil
}

// checkHashlimit is hashlimit_mt_check (libxt) and
// hashlimit_mt_check_common (kernel): defaults, what either refuses, and
// the kernel's truncations (which iptables-save then shows).
func (p *parser) checkHashlimit(r *rule) error {
	a := &r.x.hlim
	if a.given&hlGivenRate == 0 {
		return p.errf(ErrSyntax, "hashlimit: you have to specify --hashlimit-upto or --hashlimit-above")
	}
	if a.given&hlGivenName == 0 {
		return p.errf(ErrSyntax, "hashlimit: option \"--hashlimit-name\" must be specified")
	}
	if a.given&hlGivenExpire == 0 {
		a.expire = a.mult * 1000
	}
	if a.mode&hlBytes != 0 {
		var burst uint32
		if a.given&hlGivenBurst != 0 {
			unit := hlCostToBytes(a.avg)
			if a.burst < unit {
				return p.errf(ErrSyntax, "hashlimit: burst cannot be smaller than %db", unit)
			}
			burst = uint32(uint64(uint32(a.burst)) / unit)
			if a.burst%unit != 0 {
				burst++
			}
			if a.given&hlGivenExpire == 0 {
				a.expire = hlByteBurstExp * 1000
			}
		}
		a.burst = uint64(burst)
	} else if a.burst > hlBurstMax {
		return p.errf(ErrSyntax, "hashlimit: bad value for option \"--hashlimit-burst\", or out of range (1-%d)", hlBurstMax)
	}
	if a.mode&hlRateMatch != 0 {
		if a.mode&hlBytes == 0 {
			a.avg /= uint64(a.mult)
		}
		if a.interval == 0 {
			a.interval = a.mult
			if a.mode&hlBytes != 0 {
				a.interval = 1
			}
		}
	}
	// The kernel's checks.
	if a.gcInterval == 0 || a.expire == 0 {
		return p.errf(ErrSyntax, "hashlimit: --hashlimit-htable-gcinterval and --hashlimit-htable-expire must not be 0 (the kernel refuses them)")
	}
	a.size = min(a.size, hlMaxSize)
	a.max = min(a.max, hlMaxSize)
	switch {
	case a.mode&hlRateMatch != 0:
		if a.avg == 0 || a.avg > 0xFFFFFFFF {
			return p.errf(ErrSyntax, "hashlimit: the rate is refused by the kernel for --hashlimit-rate-match (too fast for the interval): lower the rate")
		}
	case a.mode&hlBytes != 0:
		if hlUser2CreditsByte(a.avg) == 0 {
			return p.errf(ErrSyntax, "hashlimit: the byte rate is refused by the kernel (too high): lower it")
		}
	case a.burst == 0 || hlUser2Credits(a.avg*a.burst) < hlUser2Credits(a.avg):
		rate, _ := hlRateString(a.avg)
		return p.errf(ErrSyntax, "hashlimit: rate %s with burst %d is refused by the kernel (rate × burst overflows): lower the burst or raise the rate",
			rate, a.burst)
	}
	if p.cur.id == tableRaw {
		return p.errf(ErrUnsupported, "-m hashlimit in the raw table is not supported; use it in the filter table")
	}
	// Every rule naming a table must count in its units: whichever of
	// them creates the table (compileHashlimitTables), the others would
	// read its buckets in the wrong units. Checked here, in any order,
	// so that the file is refused at the rule that differs.
	const units = hlBytes | hlRateMatch
	for _, f := range [...]Family{FamilyIPv4, FamilyIPv6} {
		if r.fam&f == 0 {
			continue
		}
		k := hlUnitsKey{a.name, f}
		if first, ok := p.hlUnits[k]; ok && first != a.mode&units {
			return p.errf(ErrUnsupported, "hashlimit: table %q is named by an earlier rule that %s and this rule %s: "+
				"the kernel would read its buckets in the wrong units; give the rule its own --hashlimit-name", a.name, hlUnits(first), hlUnits(a.mode))
		}
		if p.hlUnits == nil {
			p.hlUnits = map[hlUnitsKey]uint32{}
		}
		p.hlUnits[k] = a.mode & units
	}
	return nil
}

// hlUnitsKey names a table in one family while a file is read.
type hlUnitsKey struct {
	name string
	fam  Family
}

// hlRateString is print_rate (revision 2+); quantum is the rate's unit in
// ms (the default expiry iptables-save leaves out).
func hlRateString(period uint64) (s string, quantum uint32) {
	if period == 0 {
		return "inf", 0
	}
	rates := [...]struct {
		name string
		mult uint64
	}{{"day", hlScale * 86400}, {"hour", hlScale * 3600}, {"min", hlScale * 60}, {"sec", hlScale}}
	i := 1
	for ; i < len(rates); i++ {
		if period > rates[i].mult || rates[i].mult/period < rates[i].mult%period {
			break
		}
	}
	return strconv.FormatUint(rates[i-1].mult/period, 10) + "/" + rates[i-1].name, uint32(rates[i-1].mult / hlScale * 1000)
}

// hlBytesString is print_bytes with the save prefix.
func hlBytesString(avg, burst uint64) (s string, quantum uint32) {
	units := [...]struct {
		name   string
		thresh uint64
	}{{"m", 1024 * 1024}, {"k", 1024}, {"", 1}}
	r := hlCostToBytes(avg)
	i := 0
	for ; i < len(units)-1; i++ {
		if r >= units[i].thresh && hlBytesToCost(r&^(units[i].thresh-1)) == avg {
			break
		}
	}
	s = " " + strconv.FormatUint(r/units[i].thresh, 10) + units[i].name + "b/s"
	if burst == 0 {
		return s, hlByteExpire * 1000
	}
	r *= burst
	for i = 0; i < len(units)-1; i++ {
		if r >= units[i].thresh {
			break
		}
	}
	return s + " --hashlimit-burst " + strconv.FormatUint(r/units[i].thresh, 10) + units[i].name + "b", hlByteBurstExp * 1000
}

// hashlimitString is hashlimit_mt_save; f is the family being saved (the
// default masks are 32 for IPv4, 128 for IPv6).
func hashlimitString(r *rule, f Family, w func(string)) {
	a := &r.x.hlim
	w(" -m hashlimit")
	if a.mode&hlInvert != 0 {
		w(" --hashlimit-above")
	} else {
		w(" --hashlimit-upto")
	}
	var quantum uint32
	if a.mode&hlBytes != 0 {
		var s string
		s, quantum = hlBytesString(a.avg, a.burst)
		w(s)
	} else {
		var s string
		s, quantum = hlRateString(a.avg)
		w(" " + s + " --hashlimit-burst " + strconv.FormatUint(a.burst, 10))
	}
	if a.mode&hlKeyBits != 0 {
		var m []string
		for _, x := range [...]struct {
			bit  uint32
			name string
		}{{hlSrcIP, "srcip"}, {hlSrcPort, "srcport"}, {hlDstIP, "dstip"}, {hlDstPort, "dstport"}} {
			if a.mode&x.bit != 0 {
				m = append(m, x.name)
			}
		}
		w(" --hashlimit-mode " + strings.Join(m, ","))
	}
	w(" --hashlimit-name " + a.name)
	u := func(name string, v uint32) { w(" " + name + " " + strconv.FormatUint(uint64(v), 10)) }
	if a.size != 0 {
		u("--hashlimit-htable-size", a.size)
	}
	if a.max != 0 {
		u("--hashlimit-htable-max", a.max)
	}
	if a.gcInterval != hlDefGC {
		u("--hashlimit-htable-gcinterval", a.gcInterval)
	}
	if a.expire != quantum {
		u("--hashlimit-htable-expire", a.expire)
	}
	fam := f & r.fam
	for _, m := range [...]struct {
		name string
		v    int16
	}{{"--hashlimit-srcmask", a.srcMask}, {"--hashlimit-dstmask", a.dstMask}} {
		switch {
		case m.v < 0:
		case fam == FamilyIPv4 && m.v == 32, fam == FamilyIPv6 && m.v == 128:
		default:
			u(m.name, uint32(m.v))
		}
	}
	if a.mode&hlRateMatch != 0 {
		w(" --hashlimit-rate-match")
		if a.interval != 1 {
			u("--hashlimit-rate-interval", a.interval)
		}
	}
}
