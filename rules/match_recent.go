package rules

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/statewire/statewire/packet"
)

// -m recent is xt_recent (net/netfilter/xt_recent.c): named lists of
// addresses, each with the times it was last seen. As in the kernel, a
// list is shared by every rule that names it (IPv4 and IPv6 alike, the
// entries keep their family) and by every worker, under one lock per list
// (the kernel has one global spinlock); a walk that reaches -m recent is
// never cached.
//
// The module's defaults of current kernels are kept: a list holds
// ip_list_tot = 100 addresses, the oldest (least recently set or updated)
// evicted first; with ip_pkt_list_tot = 0 it remembers, per address, the
// largest --hitcount of the rules naming it rounded up to a power of two,
// or 32 times when none asks (the stamps are allocated when the rules are
// compiled: 8 bytes × 100 addresses × that count). The list's mask is the
// first rule's (the kernel copies it at the list's creation). Times are
// nanoseconds where the kernel counts jiffies. Differences: a rules reload starts every list empty (the kernel
// keeps a list while a rule names it), and there is no
// /proc/net/xt_recent to read or edit a list.

const (
	recentListTot  = 100   // ip_list_tot
	recentMaxStamp = 65535 // XT_RECENT_MAX_NSTAMPS - 1: the largest --hitcount
	recentNameMax  = 199   // XT_RECENT_NAME_LEN - 1
)

// recent operations.
const (
	rcSet uint8 = 1 + iota
	rcCheck
	rcUpdate
	rcRemove
)

var recentOpNames = [...]string{rcSet: "--set", rcCheck: "--rcheck", rcUpdate: "--update", rcRemove: "--remove"}

type recentArgs struct {
	op       uint8
	invert   bool
	seconds  uint32
	hitcount uint32
	reap     bool
	rttl     bool
	dest     bool
	name     string
	mask     netip.Addr   // as written (--mask), or invalid for all ones
	table    *recentTable // compiled: the list (compileRecent)
}

// recentEntry is one address of a list (struct recent_entry).
type recentEntry struct {
	addr   [16]byte // nf_inet_addr layout: IPv4 in the first 4 bytes
	fam    uint8
	ttl    uint8
	used   bool
	n, ix  int    // nstamps, index
	seq    uint64 // LRU order: larger is more recent
	stamps []int64
}

// recentTable is one named list. mu guards everything after it.
type recentTable struct {
	name    string
	mask    [16]byte // nf_inet_addr layout
	maxMask int      // nstamps_max_mask
	mu      sync.Mutex
	entries []recentEntry
	count   int
	seq     uint64
}

// nstampMask is recent_mt_check's nstamp_mask for a rule's --hitcount
// (ip_pkt_list_tot 0, the default of current kernels).
func nstampMask(hit uint32) int {
	if hit == 0 {
		return 32 - 1
	}
	n := uint32(1)
	for n < hit {
		n <<= 1
	}
	return int(n - 1)
}

// nfAddr puts a packet address into nf_inet_addr layout.
func nfAddr(a *packet.Addr, v4 bool) (out [16]byte) {
	if v4 {
		copy(out[:4], a[12:16])
	} else {
		out = *a
	}
	return out
}

func (t *recentTable) lookup(addr *[16]byte, fam uint8, ttl uint8, checkTTL bool) *recentEntry {
	for i := range t.entries {
		e := &t.entries[i]
		if e.used && e.fam == fam && e.addr == *addr && (!checkTTL || e.ttl == ttl) {
			return e
		}
	}
	return nil
}

// oldest returns the head of the kernel's LRU list.
func (t *recentTable) oldest() *recentEntry {
	var o *recentEntry
	for i := range t.entries {
		if e := &t.entries[i]; e.used && (o == nil || e.seq < o.seq) {
			o = e
		}
	}
	return o
}

func (t *recentTable) remove(e *recentEntry) {
	e.used = false
	t.count--
}

func (t *recentTable) insert(addr *[16]byte, fam, ttl uint8, now int64) {
	if t.count >= recentListTot {
		t.remove(t.oldest())
	}
	for i := range t.entries {
		if e := &t.entries[i]; !e.used {
			t.seq++
			e.addr, e.fam, e.ttl, e.used, e.n, e.ix, e.seq = *addr, fam, ttl, true, 1, 1, t.seq
			e.stamps[0] = now
			t.count++
			return
		}
	}
}

func (t *recentTable) update(e *recentEntry, now int64) {
	e.ix &= t.maxMask
	e.stamps[e.ix] = now
	e.ix++
	if e.ix > e.n {
		e.n = e.ix
	}
	t.seq++
	e.seq = t.seq
}

// match is recent_mt.
func (a *recentArgs) match(p *packet.Packet, now int64) bool {
	t := a.table
	if t == nil {
		return false
	}
	v4 := p.IPVersion == 4
	src := &p.Src
	if a.dest {
		src = &p.Dst
	}
	addr := nfAddr(src, v4)
	for i := range addr {
		addr[i] &= t.mask[i]
	}
	fam := p.IPVersion
	ret := a.invert
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.lookup(&addr, fam, p.TTL, a.rttl)
	if e == nil {
		if a.op != rcSet {
			return ret
		}
		t.insert(&addr, fam, p.TTL, now)
		return !ret
	}
	switch a.op {
	case rcSet:
		ret = !ret
	case rcRemove:
		t.remove(e)
		return !ret
	default:
		limit := now - int64(a.seconds)*1e9
		hits := uint32(0)
		for i := 0; i < e.n; i++ {
			if a.seconds != 0 && limit > e.stamps[i] {
				continue
			}
			hits++
			if a.hitcount == 0 || hits >= a.hitcount {
				ret = !ret
				break
			}
		}
		if a.reap {
			// recent_entry_reap: the oldest entry goes when its last
			// time is out of the window, unless it is the one about
			// to be updated.
			o := t.oldest()
			// The kernel passes "update && ret": ret with the
			// inversion applied, as for the update below.
			if !(o == e && a.op == rcUpdate && ret) && limit > o.stamps[(o.ix-1)&t.maxMask] {
				t.remove(o)
				if o == e {
					return ret
				}
			}
		}
	}
	if a.op == rcSet || (a.op == rcUpdate && ret) {
		t.update(e, now)
		e.ttl = p.TTL
	}
	return ret
}

// parseRecentOpt reads one option of -m recent; handled is false for
// others.
func (p *parser) parseRecentOpt(r *rule, opt, word string, neg bool, value func() (string, error)) (handled bool, err error) {
	a := &r.x.rc
	if neg && opt != "--set" && opt != "--rcheck" && opt != "--update" && opt != "--remove" {
		return true, p.errf(ErrSyntax, "recent: option %q cannot be inverted", word)
	}
	switch opt {
	case "--set", "--rcheck", "--update", "--remove":
		if a.op != 0 {
			return true, p.errf(ErrSyntax, "recent: %q cannot be used with %s (one of --set, --rcheck, --update, --remove)", word, recentOpNames[a.op])
		}
		for op, n := range recentOpNames {
			if n == opt {
				a.op = uint8(op)
			}
		}
		a.invert = neg
	case "--seconds", "--hitcount":
		v, err := value()
		if err != nil {
			return true, err
		}
		n, perr := strconv.ParseUint(v, 10, 32)
		if perr != nil || (opt == "--seconds" && n == 0) {
			return true, p.errf(ErrSyntax, "recent: bad %s %q", opt, v)
		}
		if opt == "--seconds" {
			a.seconds = uint32(n)
		} else {
			a.hitcount = uint32(n)
		}
	case "--reap":
		a.reap = true
	case "--rttl":
		a.rttl = true
	case "--rsource":
		a.dest = false
	case "--rdest":
		a.dest = true
	case "--name":
		v, err := value()
		if err != nil {
			return true, err
		}
		if v == "" || v == "." || v == ".." || strings.Contains(v, "/") || len(v) > recentNameMax {
			return true, p.errf(ErrSyntax, "recent: bad list name %q (1-%d characters, no '/', not . or ..)", v, recentNameMax)
		}
		a.name = v
	case "--mask":
		v, err := value()
		if err != nil {
			return true, err
		}
		m, perr := netip.ParseAddr(v)
		if perr != nil || m.Zone() != "" || m.Is4In6() {
			return true, p.errf(ErrSyntax, "recent: bad --mask %q (an address such as 255.255.255.0)", v)
		}
		f := FamilyIPv6
		if m.Is4() {
			f = FamilyIPv4
		}
		if r.fam&f == 0 {
			return true, p.errf(ErrSyntax, "recent: --mask %q is not of the rule's family", v)
		}
		r.fam &= f
		a.mask = m
	default:
		return false, nil
	}
	return true, nil
}

// checkRecent is recent_check (libxt) and recent_mt_check (kernel).
func (p *parser) checkRecent(r *rule) error {
	a := &r.x.rc
	switch {
	case a.op == 0:
		return p.errf(ErrSyntax, "recent: you must specify one of --set, --rcheck, --update or --remove")
	case a.reap && a.seconds == 0:
		return p.errf(ErrSyntax, "recent: --reap needs --seconds")
	case a.rttl && (a.op == rcSet || a.op == rcRemove):
		return p.errf(ErrSyntax, "recent: --rttl goes with --rcheck or --update")
	case (a.op == rcSet || a.op == rcRemove) && (a.seconds != 0 || a.hitcount != 0):
		return p.errf(ErrSyntax, "recent: --seconds and --hitcount go with --rcheck or --update (the kernel refuses them with %s)", recentOpNames[a.op])
	case a.hitcount > recentMaxStamp:
		return p.errf(ErrSyntax, "recent: --hitcount %d is larger than the allowed maximum %d", a.hitcount, recentMaxStamp)
	}
	if a.name == "" {
		a.name = "DEFAULT"
	}
	if p.cur.id == tableRaw {
		return p.errf(ErrUnsupported, "-m recent in the raw table is not supported; use it in the filter table")
	}
	return nil
}

// compileRecent finds or makes the rule's list. The first rule naming a
// list fixes its mask; a rule asking a larger --hitcount grows how many
// times the list remembers (the kernel flushes and grows it then; the list
// is still empty here).
func (rs *RuleSet) compileRecent(cr *crule) {
	a := &cr.x.rc
	want := nstampMask(a.hitcount)
	for _, t := range rs.recent {
		if t.name == a.name {
			if want > t.maxMask {
				t.maxMask = want
				t.allocStamps()
			}
			a.table = t
			return
		}
	}
	t := &recentTable{name: a.name, maxMask: want, entries: make([]recentEntry, recentListTot)}
	for i := range t.mask {
		t.mask[i] = 0xff
	}
	if a.mask.IsValid() {
		m := a.mask.AsSlice()
		copy(t.mask[:], m)
	}
	t.allocStamps()
	a.table = t
	rs.recent = append(rs.recent, t)
}

func (t *recentTable) allocStamps() {
	n := t.maxMask + 1
	all := make([]int64, n*len(t.entries))
	for i := range t.entries {
		t.entries[i].stamps = all[i*n : (i+1)*n : (i+1)*n]
	}
}

func recentString(r *rule, w func(string)) {
	a := &r.x.rc
	w(" -m recent")
	if a.invert {
		w(" !")
	}
	w(" " + recentOpNames[a.op])
	if a.seconds != 0 {
		w(" --seconds " + strconv.FormatUint(uint64(a.seconds), 10))
	}
	if a.reap {
		w(" --reap")
	}
	if a.hitcount != 0 {
		w(" --hitcount " + strconv.FormatUint(uint64(a.hitcount), 10))
	}
	if a.rttl {
		w(" --rttl")
	}
	w(" --name " + a.name)
	m := a.mask
	if !m.IsValid() {
		m = netip.MustParseAddr("255.255.255.255")
		if r.fam&FamilyIPv4 == 0 {
			m = netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
		}
	}
	w(" --mask " + m.String())
	if a.dest {
		w(" --rdest")
	} else {
		w(" --rsource")
	}
}
