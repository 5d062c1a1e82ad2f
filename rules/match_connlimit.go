package rules

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/statewire/statewire/packet"
)

// -m connlimit is xt_connlimit over nf_conncount (net/netfilter/
// xt_connlimit.c, nf_conncount.c). The kernel keeps, per rule, a list of
// conntrack tuples per masked address (the packet's source, or destination
// with --connlimit-daddr, and the conntrack zone); a packet that reaches
// the match adds its connection's original tuple to its address's list
// unless it is there already, and the count is the list's length after
// dropping the tuples whose connection is gone or is TCP in TIME_WAIT or
// CLOSE (already_closed). The match is count > N (--connlimit-above) or
// count <= N (--connlimit-upto, the inverted form).
//
// statewire counts the same set, from the table, without lists: a rule set
// holds one shared count per (rule, masked address, zone) (climTable), and
// each connection remembers which counts it is in (ConnCounts, kept by the
// caller beside the flow entry and touched only by the entry's owner).
// A packet whose connection is not yet in the rule's count for its
// address adds one; the owner takes the connection out of every count it
// is in when the connection closes (TCP TIME_WAIT or CLOSE) or leaves the
// table (expiry, conntrack -D/-F, early drop, a reopening SYN) — the
// moments the kernel's next look at the list would find it closed or
// gone. A count is thus exact at every packet, where the kernel's is
// exact once its list was walked: its walk stops after collecting 8 stale
// tuples (CONNCOUNT_GC_MAX_NODES), so it may count up to that many stale
// ones more than statewire. A connection opened on one worker and counted
// by a packet judged on another stays exact because the count is one
// shared number (under the lock of its stripe), and only the connection's
// owner adds or removes that connection.
//
// Cases that count the packet without remembering it, as the kernel's
// list does for one walk (its tuple is evicted at the next): a packet with
// no connection (INVALID, UNTRACKED: the kernel counts the packet's own
// tuple), a TCP connection already closed, and a connection already in
// connlimitPerConn counts of the rule set. A non-first fragment with no
// connection has no tuple: the kernel drops it (hotdrop), so does
// statewire. When the rule set's table of counts is full (climStripes ×
// climPerStripe addresses with a live count) a packet that needs a new
// address is dropped, as the kernel drops when it cannot allocate a list
// node; ConnlimitFull counts those drops and Verdict.ConnlimitFull says so
// (the bridge counts it as drop reason connlimit-full).
//
// A new rule set starts every count at 0, as iptables-restore does (the
// kernel's new rules get new lists): connections open before the reload
// are counted again only when a packet of theirs reaches the rule. A
// verdict that reached -m connlimit is never cached.

const (
	climStripes      = 64   // locks (the kernel has 256 trees and locks)
	climPerStripe    = 1024 // addresses per stripe
	climSlots        = 256  // hash chains per stripe
	connlimitPerConn = 4    // counts one connection can be in (ConnCounts)
)

// connlimitArgs are the options of -m connlimit.
type connlimitArgs struct {
	limit  uint32
	invert bool // --connlimit-upto (or ! --connlimit-above)
	daddr  bool
	plen   int    // --connlimit-mask; -1: all ones for the family
	slot   int32  // compiled: the rule's number among the rule set's connlimit rules
	given  string // "--connlimit-above" or "--connlimit-upto", "" for neither yet
	dirSet bool   // --connlimit-saddr or --connlimit-daddr given
	mask4  packet.Addr
	mask6  packet.Addr
}

// ConnCounts names the counts of -m connlimit a connection is in. The
// caller keeps one per connection (beside its flow entry), zero for a new
// one, hands it to FilterCtx in Ctx.Counts, and gives it back with
// ReleaseConn when the connection closes or leaves the table. Only the
// connection's owner may touch it.
type ConnCounts struct {
	Gen    uint32                   // the generation of the rule set the counts belong to
	Bucket [connlimitPerConn]uint32 // climTable bucket id + 1; 0 empty
}

// Empty reports whether c is in no count.
func (c *ConnCounts) Empty() bool { return *c == ConnCounts{} }

// climBucket is the count of one (rule, masked address, zone).
type climBucket struct {
	addr  packet.Addr
	next  uint32 // index+1 of the next bucket of the chain (or free list)
	count uint32
	rule  uint16
	zone  uint16
	slot  uint16 // the chain the bucket is on
}

type climStripe struct {
	mu      sync.Mutex
	free    uint32 // index+1 of the first free bucket
	used    int
	heads   [climSlots]uint32
	buckets []climBucket
	_       [64]byte // keep stripes' locks off each other's cache lines
}

// climTable is the counts of a rule set's connlimit rules, shared by every
// worker: fixed memory, allocated at Compile when the rule set has a
// connlimit rule (climStripes × climPerStripe × 32 bytes: 2 MiB).
type climTable struct {
	seed    maphash.Seed
	full    atomic.Uint64
	stripes [climStripes]climStripe
}

func newClimTable() *climTable {
	t := &climTable{seed: maphash.MakeSeed()}
	all := make([]climBucket, climStripes*climPerStripe)
	for i := range t.stripes {
		s := &t.stripes[i]
		s.buckets = all[i*climPerStripe : (i+1)*climPerStripe : (i+1)*climPerStripe]
		for j := range s.buckets {
			s.buckets[j].next = uint32(j + 2)
		}
		s.buckets[len(s.buckets)-1].next = 0
		s.free = 1
	}
	return t
}

// climKey is what a count is keyed by.
type climKey struct {
	addr packet.Addr
	rule uint16
	zone uint16
}

func (t *climTable) where(k *climKey) (stripe, slot int) {
	var b [20]byte
	copy(b[:16], k.addr[:])
	binary.LittleEndian.PutUint16(b[16:], k.rule)
	binary.LittleEndian.PutUint16(b[18:], k.zone)
	h := maphash.Bytes(t.seed, b[:])
	return int(h % climStripes), int((h / climStripes) % climSlots)
}

// find returns the bucket index+1 of k in s, 0 when none. s.mu held.
func (s *climStripe) find(k *climKey, slot int) uint32 {
	for i := s.heads[slot]; i != 0; {
		b := &s.buckets[i-1]
		if b.addr == k.addr && b.rule == k.rule && b.zone == k.zone {
			return i
		}
		i = b.next
	}
	return 0
}

// count returns k's count, taking the connection in cc into it when cc is
// not nil and has room (it is then remembered in cc); with cc nil or full
// the packet's connection counts once more without being remembered. ok is
// false when k needed a new bucket and the table is full.
func (t *climTable) count(k *climKey, cc *ConnCounts) (n uint32, ok bool) {
	si, slot := t.where(k)
	s := &t.stripes[si]
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.find(k, slot)
	id := uint32(0)
	if i != 0 {
		id = uint32(si)*climPerStripe + i
		b := &s.buckets[i-1]
		if cc != nil {
			for _, x := range cc.Bucket {
				if x == id {
					return b.count, true // counted already
				}
			}
		}
	}
	free := -1
	if cc != nil {
		for j, x := range cc.Bucket {
			if x == 0 {
				free = j
				break
			}
		}
	}
	if free < 0 {
		// Counted for this packet only.
		if i == 0 {
			return 1, true
		}
		return s.buckets[i-1].count + 1, true
	}
	if i == 0 {
		if s.free == 0 {
			t.full.Add(1)
			return 0, false
		}
		i = s.free
		b := &s.buckets[i-1]
		s.free = b.next
		*b = climBucket{addr: k.addr, rule: k.rule, zone: k.zone, slot: uint16(slot), next: s.heads[slot]}
		s.heads[slot] = i
		s.used++
		id = uint32(si)*climPerStripe + i
	}
	b := &s.buckets[i-1]
	b.count++
	cc.Bucket[free] = id
	return b.count, true
}

// peek returns k's count plus one: the packet's connection counted for
// this packet only.
func (t *climTable) peek(k *climKey) uint32 {
	n, _ := t.count(k, nil)
	return n
}

// release takes one connection out of bucket id (id+1 form).
func (t *climTable) release(id uint32) {
	id--
	si, i := int(id/climPerStripe), id%climPerStripe
	if si >= climStripes {
		return
	}
	s := &t.stripes[si]
	s.mu.Lock()
	b := &s.buckets[i]
	if b.count > 0 {
		b.count--
	}
	if b.count == 0 {
		// Unlink it from its chain and free it.
		p := &s.heads[b.slot]
		for *p != 0 && *p != i+1 {
			p = &s.buckets[*p-1].next
		}
		if *p == i+1 {
			*p = b.next
			b.next = s.free
			s.free = i + 1
			s.used--
		}
	}
	s.mu.Unlock()
}

// ReleaseConn takes the connection of cc out of every count it is in and
// empties cc: the caller does so when the connection closes (TCP
// TIME_WAIT or CLOSE) or leaves the table. Counts of another rule set
// (an earlier generation) are simply forgotten: that rule set's counts
// went with it. Only cc's owner may call it; it does not allocate.
func (rs *RuleSet) ReleaseConn(cc *ConnCounts) {
	if cc.Gen == rs.gen && rs.clim != nil {
		for _, id := range cc.Bucket {
			if id != 0 {
				rs.clim.release(id)
			}
		}
	}
	*cc = ConnCounts{}
}

// HasConnlimit reports whether the rule set has a -m connlimit rule:
// callers keep ConnCounts for their connections only then.
func (rs *RuleSet) HasConnlimit() bool { return rs.clim != nil }

// ConnlimitFull returns how many packets -m connlimit dropped because the
// rule set's table of counts was full.
func (rs *RuleSet) ConnlimitFull() uint64 {
	if rs.clim == nil {
		return 0
	}
	return rs.clim.full.Load()
}

// connlimitCount returns the count of the packet's address for rule a;
// ok false means the kernel would drop the packet (hotdrop).
func (rs *RuleSet) connlimitCount(a *connlimitArgs, p *packet.Packet, c *Ctx) (n uint32, ok bool) {
	t := rs.clim
	if t == nil {
		return 0, false
	}
	k := climKey{rule: uint16(a.slot), zone: p.VLAN}
	addr, mask := &p.Src, &a.mask6
	if a.daddr {
		addr = &p.Dst
	}
	if p.IPVersion == 4 {
		mask = &a.mask4
	}
	for i := range k.addr {
		k.addr[i] = addr[i] & mask[i]
	}
	cn := c.Conn
	if cn == nil {
		if p.Fragment && p.FragOffset != 0 {
			return 0, false // no tuple: nf_ct_get_tuplepr fails
		}
		return t.peek(&k), true
	}
	if cn.Closed || c.Counts == nil {
		return t.peek(&k), true
	}
	cc := c.Counts
	if cc.Gen != rs.gen {
		*cc = ConnCounts{Gen: rs.gen} // the old rule set's counts went with it
	}
	n, ok = t.count(&k, cc)
	c.climFull = !ok
	return n, ok
}

// match is connlimit_mt after the count: count > N, inverted for upto.
func (a *connlimitArgs) match(n uint32) bool {
	return (n > a.limit) != a.invert
}

// parseConnlimitOpt reads one option of -m connlimit.
func (p *parser) parseConnlimitOpt(r *rule, opt, word string, neg bool, value func() (string, error)) error {
	a := &r.x.cl
	switch opt {
	case "--connlimit-above", "--connlimit-upto":
		if a.given != "" {
			if a.given == opt {
				return p.errf(ErrSyntax, "connlimit: option %q can only be used once", word)
			}
			return p.errf(ErrSyntax, "connlimit: --connlimit-above and --connlimit-upto cannot be used together")
		}
		v, err := value()
		if err != nil {
			return err
		}
		n, ok := parseCUint(v, 1<<32-1)
		if !ok {
			return p.errf(ErrSyntax, "connlimit: bad value %q for %s (0-4294967295)", v, opt)
		}
		a.given, a.limit = opt, uint32(n)
		a.invert = (opt == "--connlimit-upto") != neg
		return nil
	case "--connlimit-mask":
		if neg {
			return p.errf(ErrSyntax, "connlimit: option %q cannot be inverted", word)
		}
		if a.plen >= 0 {
			return p.errf(ErrSyntax, "connlimit: option %q can only be used once", word)
		}
		v, err := value()
		if err != nil {
			return err
		}
		return p.parseConnlimitMask(r, v)
	case "--connlimit-saddr", "--connlimit-daddr":
		if neg {
			return p.errf(ErrSyntax, "connlimit: option %q cannot be inverted", word)
		}
		if a.dirSet {
			if a.daddr == (opt == "--connlimit-daddr") {
				return p.errf(ErrSyntax, "connlimit: option %q can only be used once", word)
			}
			return p.errf(ErrSyntax, "connlimit: --connlimit-saddr and --connlimit-daddr cannot be used together")
		}
		a.dirSet, a.daddr = true, opt == "--connlimit-daddr"
		return nil
	}
	return p.errf(ErrUnknown, "unknown match %q", word)
}

// parseCUint is strtoul with base 0 as xtables_strtoui reads numbers:
// leading blanks, an optional '+', 0x for hex and 0 for octal; the whole
// string, at most max.
func parseCUint(s string, max uint64) (uint64, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		s, base = s[2:], 16
	case len(s) > 1 && s[0] == '0':
		s, base = s[1:], 8
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil || n > max || strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		return 0, false
	}
	return n, true
}

// parseConnlimitMask reads --connlimit-mask: a prefix length (as
// xtables reads numbers), or a contiguous address mask. A mask with holes
// is refused: iptables accepts it but prints it as a prefix length that
// means another mask, so a saved rule set would not load back the same.
func (p *parser) parseConnlimitMask(r *rule, v string) error {
	a := &r.x.cl
	max := uint64(128)
	if r.fam == FamilyIPv4 {
		max = 32
	}
	if n, ok := parseCUint(v, max); ok {
		if n > 32 {
			r.fam &= FamilyIPv6
			if r.fam == 0 {
				return p.errf(ErrSyntax, "connlimit: --connlimit-mask %s is beyond 32 (IPv4)", v)
			}
		}
		a.plen = int(n)
		return nil
	}
	m, err := netip.ParseAddr(v)
	if err != nil || m.Zone() != "" || m.Is4In6() {
		return p.errf(ErrSyntax, "connlimit: bad --connlimit-mask %q (a prefix length 0-%d or a mask such as 255.255.255.0)", v, max)
	}
	b := m.AsSlice()
	ones := 0
	for _, x := range b {
		ones += bits.OnesCount8(x)
	}
	pfx, _ := m.Prefix(ones)
	if pfx.Addr() != m {
		return p.errf(ErrUnsupported, "connlimit: --connlimit-mask %s has holes; give a prefix length", v)
	}
	f := FamilyIPv6
	if m.Is4() {
		f = FamilyIPv4
	}
	if r.fam&f == 0 {
		return p.errf(ErrSyntax, "connlimit: --connlimit-mask %q is not of the rule's family", v)
	}
	r.fam &= f
	a.plen = ones
	return nil
}

// checkConnlimit is connlimit_check (libxt) plus what statewire does not
// carry.
func (p *parser) checkConnlimit(r *rule) error {
	if r.x.cl.given == "" {
		return p.errf(ErrSyntax, "connlimit: you must specify \"--connlimit-above\" or \"--connlimit-upto\"")
	}
	if p.cur.id == tableRaw {
		return p.errf(ErrUnsupported, "-m connlimit in the raw table is not supported; use it in the filter table")
	}
	return nil
}

// compileConnlimit numbers the rule and makes its masks.
func (rs *RuleSet) compileConnlimit(cr *crule) {
	a := &cr.x.cl
	a.slot = rs.nclim
	rs.nclim++
	if rs.clim == nil {
		rs.clim = newClimTable()
	}
	p4, p6 := a.plen, a.plen
	if a.plen < 0 {
		p4, p6 = 32, 128
	}
	if p4 > 32 {
		p4 = 32
	}
	// IPv4 addresses are IPv4-mapped: keep the ::ffff: prefix whole.
	a.mask4 = prefixMask(96 + p4)
	a.mask6 = prefixMask(p6)
	rs.readsConn = true
}

func prefixMask(n int) (m packet.Addr) {
	for i := range m {
		switch {
		case n >= 8:
			m[i] = 0xff
			n -= 8
		case n > 0:
			m[i] = byte(0xff << (8 - n))
			n = 0
		}
	}
	return m
}

// connlimitString appends -m connlimit as iptables-save 1.8.9 prints it.
func connlimitString(r *rule, w func(string)) {
	a := &r.x.cl
	w(" -m connlimit")
	if a.invert {
		w(" --connlimit-upto ")
	} else {
		w(" --connlimit-above ")
	}
	w(strconv.FormatUint(uint64(a.limit), 10))
	plen := a.plen
	if plen < 0 {
		plen = 32
		if r.fam&FamilyIPv4 == 0 {
			plen = 128
		}
	}
	w(" --connlimit-mask " + strconv.Itoa(plen))
	if a.daddr {
		w(" --connlimit-daddr")
	} else {
		w(" --connlimit-saddr")
	}
}
