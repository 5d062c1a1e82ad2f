package ipset

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Sentinel errors: every error of Parse and Load wraps one of them
// (errors.Is) and, when it comes from a line, is a *ParseError.
var (
	ErrSyntax      = errors.New("ipset: syntax error")
	ErrUnsupported = errors.New("ipset: unsupported by statewire")
	ErrExists      = errors.New("ipset: set or element given twice")
	ErrFull        = errors.New("ipset: set is full")
	ErrNoSet       = errors.New("ipset: no such set")
)

// ParseError is an error tied to one line of a sets file. Error returns
// "file:line: message"; the message quotes the offending word.
type ParseError struct {
	File string
	Line int
	Msg  string
	Err  error
}

// Error formats the error as "file:line: message".
func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Unwrap returns the sentinel error.
func (e *ParseError) Unwrap() error { return e.Err }

// Limits, from the kernel and ipset(8), so that a file statewire reads is
// one `ipset restore` reads.
const (
	maxName       = 31      // IPSET_MAXNAMELEN - 1
	maxLine       = 1 << 16 // one line
	maxExpand     = 1 << 16 // elements one add line may expand to (ipset: a /16 of hash:ip)
	defMaxelem    = 65536   // IPSET_DEFAULT_MAXELEM
	defHashsize   = 1024    // IPSET_DEFAULT_HASHSIZE
	defListSize   = 8       // list:set default size
	maxCommentLen = 255     // IPSET_MAX_COMMENT_SIZE
)

// Sets is a collection of loaded sets, by name. It is immutable once Load
// returns; the zero value is empty.
type Sets struct {
	byName map[string]*Set
	order  []*Set // creation order, for Save
}

// Get returns the set called name, or nil.
func (ss *Sets) Get(name string) *Set {
	if ss == nil {
		return nil
	}
	return ss.byName[name]
}

// Len returns the number of sets.
func (ss *Sets) Len() int {
	if ss == nil {
		return 0
	}
	return len(ss.order)
}

// Names returns the set names in the order they were created.
func (ss *Sets) Names() []string {
	if ss == nil {
		return nil
	}
	n := make([]string, len(ss.order))
	for i, s := range ss.order {
		n[i] = s.name
	}
	return n
}

// Load reads `ipset save` files in order into one collection (one file may
// hold every set, as `ipset save` prints them; a set name may be created in
// only one of them). With no paths it returns an empty collection.
func Load(paths ...string) (*Sets, error) {
	ss := &Sets{}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("ipset file: %w", err)
		}
		err = ss.parse(path, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return ss, nil
}

// Parse reads one `ipset save` text; name is used in error messages.
func Parse(name string, r io.Reader) (*Sets, error) {
	ss := &Sets{}
	if err := ss.parse(name, r); err != nil {
		return nil, err
	}
	return ss, nil
}

// parser reads one file into ss. On error ss may hold part of the file:
// callers discard it.
type parser struct {
	ss   *Sets
	file string
	line int
}

func (p *parser) errf(sentinel error, format string, args ...any) error {
	return &ParseError{File: p.file, Line: p.line, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func (ss *Sets) parse(name string, r io.Reader) error {
	if ss.byName == nil {
		ss.byName = map[string]*Set{}
	}
	p := &parser{ss: ss, file: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		p.line++
		return p.errf(ErrSyntax, "cannot read line: %v", err)
	}
	return nil
}

// tokenize splits a line as ipset restore does: blanks separate words,
// double quotes group (comments are saved quoted).
func tokenize(s string) ([]string, bool) {
	var toks []string
	var b strings.Builder
	in, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			quoted = !quoted
			in = true
		case !quoted && (c == ' ' || c == '\t' || c == '\r'):
			if in {
				toks = append(toks, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, false
	}
	if in {
		toks = append(toks, b.String())
	}
	return toks, true
}

func (p *parser) parseLine(text string) error {
	s := strings.TrimSpace(text)
	if s == "" || s[0] == '#' {
		return nil
	}
	toks, ok := tokenize(s)
	if !ok {
		return p.errf(ErrSyntax, "unterminated quote in %q", s)
	}
	switch toks[0] {
	case "create", "-N", "-exist":
		if toks[0] == "-exist" {
			return p.errf(ErrUnsupported, "word %q: write one command per line as `ipset save` prints them", toks[0])
		}
		return p.create(toks[1:])
	case "add", "-A":
		return p.add(toks[1:])
	case "flush", "destroy", "del", "swap", "rename", "-F", "-X", "-D", "-W", "-E":
		return p.errf(ErrUnsupported, "command %q is not supported: give the sets as `ipset save` prints them (create and add lines)", toks[0])
	}
	return p.errf(ErrSyntax, "unknown command %q (want create or add)", toks[0])
}

func validName(s string) bool {
	if s == "" || len(s) > maxName || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' {
			return false
		}
	}
	return true
}

var typeByName = map[string]Type{
	"hash:ip": HashIP, "hash:net": HashNet, "hash:ip,port": HashIPPort,
	"hash:net,port": HashNetPort, "bitmap:port": BitmapPort, "list:set": ListSet,
}

func (p *parser) create(toks []string) error {
	if len(toks) < 2 {
		return p.errf(ErrSyntax, "create needs a set name and a type")
	}
	name, tname := toks[0], toks[1]
	if !validName(name) {
		return p.errf(ErrSyntax, "bad set name %q (1 to %d printable characters)", name, maxName)
	}
	if old := p.ss.byName[name]; old != nil {
		return p.errf(ErrExists, "set %q created twice (first at %s:%d)", name, old.file, old.line)
	}
	t, ok := typeByName[tname]
	if !ok {
		return p.errf(ErrUnsupported, "set type %q is not supported (hash:ip, hash:net, hash:ip,port, hash:net,port, bitmap:port, list:set)", tname)
	}
	s := &Set{name: name, typ: t, file: p.file, line: p.line, maxelem: defMaxelem}
	switch t {
	case BitmapPort, ListSet:
		s.family = familyAny
		if t == ListSet {
			s.size = defListSize
		}
	default:
		s.family = familyV4
		s.hashsize = defHashsize
	}
	rangeSet := false
	opts := toks[2:]
	for i := 0; i < len(opts); i++ {
		w := opts[i]
		val := func() (string, error) {
			if i+1 >= len(opts) {
				return "", p.errf(ErrSyntax, "option %q needs a value", w)
			}
			i++
			return opts[i], nil
		}
		num := func(max uint64) (uint64, error) {
			v, err := val()
			if err != nil {
				return 0, err
			}
			n, err2 := strconv.ParseUint(v, 0, 64)
			if err2 != nil || n > max {
				return 0, p.errf(ErrSyntax, "bad value %q for %q", v, w)
			}
			return n, nil
		}
		hashOnly := func() error {
			if t == BitmapPort || t == ListSet {
				return p.errf(ErrSyntax, "option %q is not for %s", w, t)
			}
			return nil
		}
		var err error
		switch w {
		case "family":
			if err = hashOnly(); err != nil {
				return err
			}
			var v string
			if v, err = val(); err != nil {
				return err
			}
			switch v {
			case "inet":
				s.family = familyV4
			case "inet6":
				s.family = familyV6
			default:
				return p.errf(ErrSyntax, "bad family %q (inet or inet6)", v)
			}
		case "hashsize":
			if err = hashOnly(); err == nil {
				var n uint64
				n, err = num(1 << 31)
				s.hashsize = uint32(n)
			}
		case "maxelem":
			if err = hashOnly(); err == nil {
				var n uint64
				n, err = num(1<<32 - 1)
				s.maxelem = uint32(n)
			}
		case "bucketsize":
			if err = hashOnly(); err == nil {
				_, err = num(255)
			}
		case "initval":
			if err = hashOnly(); err == nil {
				_, err = num(1<<32 - 1)
			}
		case "timeout":
			_, err = num(1<<32 - 1)
			s.timeout = true
		case "counters", "comment", "skbinfo", "forceadd":
			s.flags = append(s.flags, w)
		case "netmask":
			if t != HashIP {
				return p.errf(ErrUnsupported, "option %q is only supported for hash:ip", w)
			}
			var n uint64
			if n, err = num(128); err != nil {
				return err
			}
			s.netmask = uint8(n)
		case "range":
			if t != BitmapPort {
				return p.errf(ErrSyntax, "option %q is only for bitmap:port here", w)
			}
			var v string
			if v, err = val(); err != nil {
				return err
			}
			lo, hi, ok := parsePortRange(v)
			if !ok {
				return p.errf(ErrSyntax, "bad port range %q", v)
			}
			s.first, s.last, rangeSet = lo, hi, true
		case "size":
			if t != ListSet {
				return p.errf(ErrSyntax, "option %q is only for list:set", w)
			}
			var n uint64
			n, err = num(1<<32 - 1)
			s.size = uint32(n)
		default:
			return p.errf(ErrUnsupported, "create option %q is not supported", w)
		}
		if err != nil {
			return err
		}
	}
	if t == BitmapPort && !rangeSet {
		return p.errf(ErrSyntax, "bitmap:port set %q needs range FROM-TO", name)
	}
	if s.netmask != 0 {
		hostBits := uint8(32)
		if s.family == familyV6 {
			hostBits = 128
		}
		if s.netmask > hostBits {
			return p.errf(ErrSyntax, "netmask %d is longer than the family's addresses", s.netmask)
		}
		if s.netmask == hostBits {
			s.netmask = 0
		}
	}
	s.ipmask = key{^uint64(0), ^uint64(0)}
	if s.netmask != 0 {
		b := int(s.netmask)
		if s.family == familyV4 {
			b += 96
		}
		s.ipmask = maskOf(b)
	}
	switch t {
	case HashIP:
		s.ips = map[key]struct{}{}
	case HashIPPort:
		s.ipp = map[pkey]struct{}{}
	case BitmapPort:
		s.bits = make([]uint64, (int(s.last-s.first)+1+63)/64)
	}
	p.ss.byName[name] = s
	p.ss.order = append(p.ss.order, s)
	return nil
}

func (p *parser) add(toks []string) error {
	if len(toks) < 2 {
		return p.errf(ErrSyntax, "add needs a set name and an element")
	}
	s := p.ss.byName[toks[0]]
	if s == nil {
		return p.errf(ErrNoSet, "set %q does not exist (create it before adding to it)", toks[0])
	}
	nomatch := false
	opts := toks[2:]
	for i := 0; i < len(opts); i++ {
		w := opts[i]
		switch w {
		case "nomatch":
			if !s.typ.nomatchType() {
				return p.errf(ErrSyntax, "%q is only for hash:net and hash:net,port, not %s", w, s.typ)
			}
			nomatch = true
		case "timeout", "packets", "bytes", "skbmark", "skbprio", "skbqueue", "comment":
			if i+1 >= len(opts) {
				return p.errf(ErrSyntax, "option %q needs a value", w)
			}
			i++
			if w == "comment" && len(opts[i]) > maxCommentLen {
				return p.errf(ErrSyntax, "comment longer than %d bytes", maxCommentLen)
			}
			if w == "timeout" || w == "packets" || w == "bytes" {
				if _, err := strconv.ParseUint(opts[i], 10, 64); err != nil {
					return p.errf(ErrSyntax, "bad value %q for %q", opts[i], w)
				}
			}
		case "before", "after":
			return p.errf(ErrUnsupported, "list:set option %q is not supported (members are tried in the order added)", w)
		default:
			return p.errf(ErrSyntax, "unknown element option %q", w)
		}
	}
	elem := toks[1]
	switch s.typ {
	case HashIP:
		return p.addIP(s, elem)
	case HashNet:
		return p.addNet(s, elem, nomatch)
	case HashIPPort, HashNetPort:
		return p.addPort(s, elem, nomatch)
	case BitmapPort:
		lo, hi, ok := parsePortRange(elem)
		if !ok {
			return p.errf(ErrSyntax, "bad port or range %q", elem)
		}
		if lo < s.first || hi > s.last {
			return p.errf(ErrSyntax, "port %q is outside the set's range %d-%d", elem, s.first, s.last)
		}
		for port := int(lo); port <= int(hi); port++ {
			id := port - int(s.first)
			if s.bits[id/64]&(1<<(id%64)) == 0 {
				s.bits[id/64] |= 1 << (id % 64)
				s.n++
			}
		}
		return nil
	case ListSet:
		m := p.ss.byName[elem]
		switch {
		case m == nil:
			return p.errf(ErrNoSet, "set %q does not exist (create it before adding it to list:set %q)", elem, s.name)
		case m.typ == ListSet:
			return p.errf(ErrSyntax, "list:set %q cannot be a member of list:set %q", elem, s.name)
		}
		for _, x := range s.members {
			if x == m {
				return p.errf(ErrExists, "set %q is already in %q", elem, s.name)
			}
		}
		if uint32(len(s.members)) >= s.size {
			return p.errf(ErrFull, "list:set %q is full (size %d)", s.name, s.size)
		}
		s.members = append(s.members, m)
		s.n++
		return nil
	}
	return p.errf(ErrSyntax, "bad set type")
}

// grow counts n new elements against maxelem.
func (p *parser) grow(s *Set, n int) error {
	if uint64(s.n)+uint64(n) > uint64(s.maxelem) {
		return p.errf(ErrFull, "set %q is full (maxelem %d): raise maxelem in its create line", s.name, s.maxelem)
	}
	s.n += n
	return nil
}

// parseAddr reads an address of the set's family.
func (p *parser) parseAddr(s *Set, v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return a, p.errf(ErrSyntax, "bad address %q", v)
	}
	if a.Is4() != (s.family == familyV4) {
		return a, p.errf(ErrSyntax, "address %q is not of the family of set %q (%s)", v, s.name, familyName(s.family))
	}
	return a, nil
}

func familyName(f uint8) string {
	if f == familyV6 {
		return "inet6"
	}
	return "inet"
}

// parseNet reads ADDR, ADDR/CIDR or (IPv4) FROM-TO into a list of
// prefixes. allowRange permits the range and CIDR forms (hash:ip expands
// them into addresses; hash:net keeps CIDRs and splits a range into them).
func (p *parser) parseNet(s *Set, v string) ([]netip.Prefix, error) {
	if a, b, ok := strings.Cut(v, "-"); ok {
		lo, err := p.parseAddr(s, a)
		if err != nil {
			return nil, err
		}
		hi, err := p.parseAddr(s, b)
		if err != nil {
			return nil, err
		}
		if !lo.Is4() {
			return nil, p.errf(ErrSyntax, "address range %q: IPv6 ranges are not supported by ipset", v)
		}
		if hi.Less(lo) {
			lo, hi = hi, lo
		}
		return rangeToPrefixes(lo, hi), nil
	}
	a, c, hasC := strings.Cut(v, "/")
	addr, err := p.parseAddr(s, a)
	if err != nil {
		return nil, err
	}
	n := addr.BitLen()
	if hasC {
		k, err := strconv.Atoi(c)
		if err != nil || k < 0 || k > addr.BitLen() || len(c) > 3 {
			return nil, p.errf(ErrSyntax, "bad prefix length in %q", v)
		}
		n = k
	}
	return []netip.Prefix{netip.PrefixFrom(addr, n).Masked()}, nil
}

// rangeToPrefixes splits an IPv4 range into the fewest CIDRs, as ipset
// does for hash:net.
func rangeToPrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	a := uint64(v4(lo))
	b := uint64(v4(hi))
	for a <= b {
		n := bits.TrailingZeros64(a | 1<<32)
		for n > 0 && a+(1<<n)-1 > b {
			n--
		}
		var x [4]byte
		x[0], x[1], x[2], x[3] = byte(a>>24), byte(a>>16), byte(a>>8), byte(a)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(x), 32-n))
		a += 1 << n
	}
	return out
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrKey(a netip.Addr) key {
	b := a.As16()
	var k key
	for i := 0; i < 8; i++ {
		k.hi = k.hi<<8 | uint64(b[i])
		k.lo = k.lo<<8 | uint64(b[8+i])
	}
	return k
}

// bits16 is a prefix length on the 16-byte form.
func bits16(pf netip.Prefix) int {
	if pf.Addr().Is4() {
		return pf.Bits() + 96
	}
	return pf.Bits()
}

// forEachAddr calls f for each address of the prefixes (hash:ip and
// hash:ip,port expand CIDRs and ranges), at most maxExpand of them.
func (p *parser) forEachAddr(v string, pfs []netip.Prefix, f func(key) error) error {
	total := 0
	for _, pf := range pfs {
		hostBits := pf.Addr().BitLen() - pf.Bits()
		if hostBits > 16 {
			return p.errf(ErrSyntax, "%q expands to more than %d addresses", v, maxExpand)
		}
		total += 1 << hostBits
		if total > maxExpand {
			return p.errf(ErrSyntax, "%q expands to more than %d addresses", v, maxExpand)
		}
	}
	for _, pf := range pfs {
		base := addrKey(pf.Addr())
		for i := uint64(0); i < 1<<(pf.Addr().BitLen()-pf.Bits()); i++ {
			if err := f(key{base.hi, base.lo + i}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *parser) addIP(s *Set, v string) error {
	pfs, err := p.parseNet(s, v)
	if err != nil {
		return err
	}
	if s.family == familyV6 && (strings.Contains(v, "/") && pfs[0].Bits() != 128) {
		return p.errf(ErrSyntax, "%q: hash:ip of family inet6 takes single addresses", v)
	}
	return p.forEachAddr(v, pfs, func(k key) error {
		k = k.and(s.ipmask)
		if k.hi == 0 && (k.lo == 0 || s.family == familyV4 && k.lo == 0xffff00000000) {
			return p.errf(ErrSyntax, "element %q: the any address cannot be in a hash:ip set", v)
		}
		if _, dup := s.ips[k]; dup {
			return nil // as ipset restore -exist: the same element again is no error
		}
		if err := p.grow(s, 1); err != nil {
			return err
		}
		s.ips[k] = struct{}{}
		return nil
	})
}

func (p *parser) addNet(s *Set, v string, nomatch bool) error {
	pfs, err := p.parseNet(s, v)
	if err != nil {
		return err
	}
	for _, pf := range pfs {
		if pf.Bits() == 0 {
			return p.errf(ErrSyntax, "%q: a /0 network cannot be in %s (the kernel refuses it)", v, s.typ)
		}
		l := levelFor(&s.nets, pf)
		k := addrKey(pf.Addr())
		if _, dup := l.m[k]; !dup {
			if err := p.grow(s, 1); err != nil {
				return err
			}
		}
		l.m[k] = nomatch // a later add of the same net replaces the flag, as ipset -exist
	}
	return nil
}

// levelFor returns the level of pf's prefix length, creating it (the list
// stays sorted longest first).
func levelFor[K comparable](ls *[]level[K], pf netip.Prefix) *level[K] {
	b := uint8(pf.Bits())
	for i := range *ls {
		if (*ls)[i].bits == b {
			return &(*ls)[i]
		}
	}
	*ls = append(*ls, level[K]{bits: b, mask: maskOf(bits16(pf)), m: map[K]bool{}})
	sort.Slice(*ls, func(i, j int) bool { return (*ls)[i].bits > (*ls)[j].bits })
	for i := range *ls {
		if (*ls)[i].bits == b {
			return &(*ls)[i]
		}
	}
	return nil // unreachable
}

// protoByName are the protocol names ipset reads and prints (its own
// names for the port protocols, /etc/protocols' for the rest).
var protoByName = map[string]uint8{
	"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58,
	"ip": 0, "hopopt": 0, "igmp": 2, "ipencap": 4, "ipip": 4, "egp": 8, "ipv6": 41, "ipv6-route": 43,
	"ipv6-frag": 44, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "ipv6-nonxt": 59, "ipv6-opts": 60,
	"ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115, "dccp": 33, "mpls-in-ip": 137,
}

// icmpNames and icmp6Names are the type/code names ipset prints.
var icmpNames = map[string]uint16{
	"echo-reply": 0x0000, "network-unreachable": 0x0300, "host-unreachable": 0x0301,
	"protocol-unreachable": 0x0302, "port-unreachable": 0x0303, "fragmentation-needed": 0x0304,
	"source-route-failed": 0x0305, "network-unknown": 0x0306, "host-unknown": 0x0307,
	"network-prohibited": 0x0309, "host-prohibited": 0x030a, "TOS-network-unreachable": 0x030b,
	"TOS-host-unreachable": 0x030c, "communication-prohibited": 0x030d,
	"host-precedence-violation": 0x030e, "precedence-cutoff": 0x030f, "source-quench": 0x0400,
	"network-redirect": 0x0500, "host-redirect": 0x0501, "TOS-network-redirect": 0x0502,
	"TOS-host-redirect": 0x0503, "echo-request": 0x0800, "router-advertisement": 0x0900,
	"router-solicitation": 0x0a00, "ttl-zero-during-transit": 0x0b00,
	"ttl-zero-during-reassembly": 0x0b01, "ip-header-bad": 0x0c00, "required-option-missing": 0x0c01,
	"timestamp-request": 0x0d00, "timestamp-reply": 0x0e00, "address-mask-request": 0x1100,
	"address-mask-reply": 0x1200,
}

var icmp6Names = map[string]uint16{
	"no-route": 0x0100, "communication-prohibited": 0x0101, "address-unreachable": 0x0103,
	"port-unreachable": 0x0104, "packet-too-big": 0x0200, "ttl-zero-during-transit": 0x0300,
	"ttl-zero-during-reassembly": 0x0301, "bad-header": 0x0400, "unknown-header-type": 0x0401,
	"unknown-option": 0x0402, "echo-request": 0x8000, "echo-reply": 0x8100,
	"router-solicitation": 0x8500, "router-advertisement": 0x8600, "neighbour-solicitation": 0x8700,
	"neighbour-advertisement": 0x8800, "redirect": 0x8900,
}

func hasPorts(proto uint8) bool {
	return proto == 6 || proto == 17 || proto == protoSCTP || proto == protoUDPLite
}

// parseProtoPort reads "[proto:]port[-port]", "icmp:name", "icmp:T/C" and
// "proto:0" for protocols without ports. A bare port is TCP.
func (p *parser) parseProtoPort(s *Set, v string) (proto uint8, lo, hi uint16, err error) {
	ps, port, hasProto := strings.Cut(v, ":")
	if !hasProto {
		ps, port = "tcp", v
	}
	pr, ok := protoByName[ps]
	if !ok {
		n, err := strconv.ParseUint(ps, 10, 8)
		if err != nil {
			return 0, 0, 0, p.errf(ErrSyntax, "unknown protocol %q in %q", ps, v)
		}
		pr = uint8(n)
	}
	if pr == 0 {
		return 0, 0, 0, p.errf(ErrSyntax, "protocol %q in %q is not valid in a set", ps, v)
	}
	switch {
	case pr == 1 || pr == 58:
		if (pr == 1) != (s.family == familyV4) {
			return 0, 0, 0, p.errf(ErrSyntax, "protocol %q in %q is not of the family of set %q", ps, v, s.name)
		}
		names := icmpNames
		if pr == 58 {
			names = icmp6Names
		}
		if tc, ok := names[port]; ok {
			return pr, tc, tc, nil
		}
		t, c, ok := strings.Cut(port, "/")
		tn, err1 := strconv.ParseUint(t, 10, 8)
		cn, err2 := strconv.ParseUint(c, 10, 8)
		if !ok || err1 != nil || err2 != nil {
			return 0, 0, 0, p.errf(ErrSyntax, "bad ICMP type %q in %q (a name or TYPE/CODE)", port, v)
		}
		tc := uint16(tn)<<8 | uint16(cn)
		return pr, tc, tc, nil
	case hasPorts(pr):
		lo, hi, ok := parsePortRange(port)
		if !ok {
			return 0, 0, 0, p.errf(ErrSyntax, "bad port or range %q in %q", port, v)
		}
		return pr, lo, hi, nil
	}
	if port != "0" {
		return 0, 0, 0, p.errf(ErrSyntax, "protocol %q has no ports: write %s:0, not %q", ps, ps, v)
	}
	return pr, 0, 0, nil
}

func (p *parser) addPort(s *Set, v string, nomatch bool) error {
	addr, pp, ok := strings.Cut(v, ",")
	if !ok {
		return p.errf(ErrSyntax, "element %q of %s needs ADDRESS,[PROTO:]PORT", v, s.typ)
	}
	pfs, err := p.parseNet(s, addr)
	if err != nil {
		return err
	}
	proto, lo, hi, err := p.parseProtoPort(s, pp)
	if err != nil {
		return err
	}
	nports := int(hi) - int(lo) + 1
	if s.typ == HashNetPort {
		if int64(nports)*int64(len(pfs)) > maxExpand {
			return p.errf(ErrSyntax, "%q expands to more than %d elements", v, maxExpand)
		}
		for _, pf := range pfs {
			if pf.Bits() == 0 {
				return p.errf(ErrSyntax, "%q: a /0 network cannot be in %s (the kernel refuses it)", v, s.typ)
			}
			l := levelFor(&s.netp, pf)
			a := addrKey(pf.Addr())
			for port := int(lo); port <= int(hi); port++ {
				k := pkey{a, uint16(port), proto}
				if _, dup := l.m[k]; !dup {
					if err := p.grow(s, 1); err != nil {
						return err
					}
				}
				l.m[k] = nomatch
			}
		}
		return nil
	}
	if s.family == familyV6 && strings.Contains(addr, "/") && pfs[0].Bits() != 128 {
		return p.errf(ErrSyntax, "%q: hash:ip,port of family inet6 takes single addresses", v)
	}
	count := 0
	return p.forEachAddr(addr, pfs, func(a key) error {
		for port := int(lo); port <= int(hi); port++ {
			count++
			if count > maxExpand {
				return p.errf(ErrSyntax, "%q expands to more than %d elements", v, maxExpand)
			}
			k := pkey{a, uint16(port), proto}
			if _, dup := s.ipp[k]; dup {
				continue
			}
			if err := p.grow(s, 1); err != nil {
				return err
			}
			s.ipp[k] = struct{}{}
		}
		return nil
	})
}

// parsePortRange reads "N" or "A-B" (ipset's range form).
func parsePortRange(v string) (lo, hi uint16, ok bool) {
	a, b, isRange := strings.Cut(v, "-")
	x, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, 0, false
	}
	if !isRange {
		return uint16(x), uint16(x), true
	}
	y, err := strconv.ParseUint(b, 10, 16)
	if err != nil {
		return 0, 0, false
	}
	if y < x {
		x, y = y, x
	}
	return uint16(x), uint16(y), true
}
