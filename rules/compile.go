package rules

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/statewire/statewire/ipset"
	"github.com/statewire/statewire/statemachine"
)

// prefix is an address prefix as two 64-bit words and a mask, in the
// 16-byte (IPv4-mapped) form of packet.Addr: a match is two ANDs and two
// compares.
type prefix struct{ addr, mask [2]uint64 }

func makePrefix(p netip.Prefix) prefix {
	a := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	var m [16]byte
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	var x prefix
	x.mask[0] = binary.BigEndian.Uint64(m[0:8])
	x.mask[1] = binary.BigEndian.Uint64(m[8:16])
	x.addr[0] = binary.BigEndian.Uint64(a[0:8]) & x.mask[0]
	x.addr[1] = binary.BigEndian.Uint64(a[8:16]) & x.mask[1]
	return x
}

// crule is one compiled rule: every match in a fixed field, a bitmask of the
// ones present, and the target. Matching is a run of branches on has; there
// is no interface call and no pointer chasing.
type crule struct {
	has, neg         matchBits
	proto            uint8
	ports            uint8 // allowed ingress ports (bit 0: A, bit 1: B), when has&mPorts
	tcpMask, tcpComp uint8
	icmpType         uint8
	icmpMin, icmpMax uint8
	states           statemachine.CtState
	target           targetKind
	helper           HelperID
	reject           RejectWith // tReject: the answer for the table's family
	nmulti           uint8
	jump             int32 // chain index within the table, for tJump/tGoto
	id               int32 // index in RuleSet.rules
	sport, dport     portRange
	src, dst         prefix
	multi            [maxMultiport]portRange
	x                xmatch
	sets             []setMatch // -m set (ipset.go)
}

// cchain is a compiled chain: a slice [start,end) of RuleSet.rules.
type cchain struct {
	start, end int32
	policy     Action
}

// ctable is one compiled table for one family. chains[0] is the entry chain
// (FORWARD or PREROUTING); no chains means no rules: accept everything.
type ctable struct {
	chains []cchain
}

// RuleSet is a compiled rule set for both families. It is immutable but for
// its -m recent lists, each behind its own lock, and safe for concurrent use
// by any number of goroutines.
type RuleSet struct {
	gen     uint32
	ports   [2]string
	rules   []crule
	src     []*rule     // source form of rules[i]
	filter  [2]ctable   // by family index: 0 IPv4, 1 IPv6
	raw     [2]ctable   // by family index
	srcs    [2]*source  // loaded files by family index, for Save
	trivRaw [2]bool     // raw table has nothing to do for the family
	anyPort bool        // every interface name names both ports (CheckFiles)
	sets    *ipset.Sets // the sets -m set names (Loader.SetIPSets)
	// readsConn: some rule reads or writes Ctx.Conn (ReadsConn).
	readsConn bool
	// nlimit is the number of -m limit rules: Local's bucket count.
	nlimit int32
	// recent are the -m recent lists, shared by the workers under each
	// list's lock (match_recent.go): the one mutable part of a RuleSet.
	recent []*recentTable
	// clim holds the -m connlimit counts (match_connlimit.go), nil
	// without a connlimit rule; nclim numbers those rules.
	clim  *climTable
	nclim int32
	// hlCfg are the -m hashlimit tables' settings by slot, hlIndex their
	// slots by family and name; each worker's Local has the tables.
	hlCfg   []*hlConfig
	hlIndex map[hlTableRef]int32
}

// Generation returns the rule set's generation: every compiled rule set gets
// a new one, increasing across the process and never 0. A verdict cached
// under another generation is stale.
func (rs *RuleSet) Generation() uint32 { return rs.gen }

// NumRules returns the number of compiled rules; Verdict.Rule and
// RawResult.Rule index [0, NumRules()). Workers that want per-rule counters
// keep their own []uint64 of this length (atomic adds per packet cost too
// much).
func (rs *RuleSet) NumRules() int { return len(rs.rules) }

// Ports returns the port names the rule set was compiled for.
func (rs *RuleSet) Ports() [2]string { return rs.ports }

// Empty returns a rule set with no rules: FORWARD policy ACCEPT and an empty
// raw table, for both families.
func Empty() *RuleSet {
	return &RuleSet{gen: nextGeneration(), trivRaw: [2]bool{true, true}}
}

// FromText loads one iptables-save text for both families and compiles it
// for the bridge's two ports: the form for rule sets built in code (tests,
// the conformance harness). name is used in error messages.
func FromText(name, text string, ports [2]string) (*RuleSet, error) {
	var l Loader
	if err := l.Load(name, strings.NewReader(text), FamilyBoth); err != nil {
		return nil, err
	}
	return l.Compile(ports)
}

// LoadFiles is the command-line form. With only rulesPath, that file serves
// both families (FamilyBoth); with both paths, rulesPath is the
// iptables-save file and rules6Path the ip6tables-save file; with only
// rules6Path, IPv4 has no rules. With neither, it returns Empty().
func LoadFiles(rulesPath, rules6Path string, ports [2]string) (*RuleSet, error) {
	l, err := loadFiles(rulesPath, rules6Path)
	if err != nil {
		return nil, err
	}
	return l.Compile(ports)
}

// CheckFiles loads and compiles the files as LoadFiles does and returns the
// number of rules statewire would evaluate for IPv4 and for IPv6 (FORWARD
// and PREROUTING and the chains they reach). With anyPort, every interface
// name counts as naming both ports (ports is not used): the check for
// `statewire rules check` without port names.
func CheckFiles(rulesPath, rules6Path string, ports [2]string, anyPort bool) (n [2]int, err error) {
	l, err := loadFiles(rulesPath, rules6Path)
	if err != nil {
		return n, err
	}
	return l.check(ports, anyPort)
}

func (l *Loader) check(ports [2]string, anyPort bool) (n [2]int, err error) {
	l.anyPort = anyPort
	rs, err := l.Compile(ports)
	if err != nil {
		return n, err
	}
	for fi := range n {
		for _, t := range [2]*ctable{&rs.filter[fi], &rs.raw[fi]} {
			for _, c := range t.chains {
				n[fi] += int(c.end - c.start)
			}
		}
	}
	return n, nil
}

func loadFiles(rulesPath, rules6Path string) (*Loader, error) {
	var l Loader
	load := func(path string, f Family) error {
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		defer fh.Close()
		return l.Load(path, fh, f)
	}
	switch {
	case rulesPath != "" && rules6Path != "":
		if err := load(rulesPath, FamilyIPv4); err != nil {
			return nil, err
		}
		if err := load(rules6Path, FamilyIPv6); err != nil {
			return nil, err
		}
	case rulesPath != "":
		if err := load(rulesPath, FamilyBoth); err != nil {
			return nil, err
		}
	case rules6Path != "":
		if err := load(rules6Path, FamilyIPv6); err != nil {
			return nil, err
		}
	}
	return &l, nil
}

// Compile resolves interface names to the bridge's two ports (ports[0] is
// port A, index 0; ports[1] is port B, index 1; a trailing "+" in a rule is
// a prefix wildcard as in iptables) and builds the evaluable rule set with a
// new generation. Only chains reachable from FORWARD (filter) and PREROUTING
// (raw) are compiled: INPUT and OUTPUT see no traffic on a bridge with no
// address, so their rules are kept for Save but never evaluated and their
// interface names are not checked.
func (l *Loader) Compile(ports [2]string) (*RuleSet, error) {
	rs := &RuleSet{gen: nextGeneration(), ports: ports, anyPort: l.anyPort, sets: l.sets}
	for fi, f := range [2]Family{FamilyIPv4, FamilyIPv6} {
		src := l.sourceFor(f)
		rs.srcs[fi] = src
		if src == nil {
			rs.trivRaw[fi] = true
			continue
		}
		var err error
		rs.compileHashlimitTables(src.tables[tableFilter], f, fi)
		if rs.filter[fi], err = rs.compileTable(src.tables[tableFilter], f, tableFilter); err != nil {
			return nil, err
		}
		if rs.raw[fi], err = rs.compileTable(src.tables[tableRaw], f, tableRaw); err != nil {
			return nil, err
		}
		ch := rs.raw[fi].chains
		rs.trivRaw[fi] = len(ch) == 0 || (ch[0].start == ch[0].end && ch[0].policy == Accept)
	}
	return rs, nil
}

func (rs *RuleSet) compileTable(t *table, f Family, tid tableID) (ctable, error) {
	var ct ctable
	if t == nil {
		return ct, nil
	}
	// Chains reachable from the entry chain, entry first.
	entry := t.byName[entryChain[tid]]
	index := map[*chain]int32{entry: 0}
	order := []*chain{entry}
	for k := 0; k < len(order); k++ {
		for _, r := range order[k].rules {
			if r.fam&f == 0 || r.jump == nil {
				continue
			}
			if _, ok := index[r.jump]; !ok {
				index[r.jump] = int32(len(order))
				order = append(order, r.jump)
			}
		}
	}
	ct.chains = make([]cchain, len(order))
	for k, c := range order {
		cc := cchain{start: int32(len(rs.rules)), policy: c.policy}
		for _, r := range c.rules {
			if r.fam&f == 0 {
				continue
			}
			cr, err := rs.compileRule(r, f, tid)
			if err != nil {
				return ct, err
			}
			if r.jump != nil {
				cr.jump = index[r.jump]
			}
			cr.id = int32(len(rs.rules))
			rs.rules = append(rs.rules, cr)
			rs.src = append(rs.src, r)
		}
		cc.end = int32(len(rs.rules))
		ct.chains[k] = cc
	}
	return ct, nil
}

// portMask returns the ports an interface name (or "prefix+" wildcard)
// names.
func portMask(name string, ports [2]string) uint8 {
	var m uint8
	for i, p := range ports {
		if p == "" {
			continue
		}
		if base, wild := strings.CutSuffix(name, "+"); wild {
			if strings.HasPrefix(p, base) {
				m |= 1 << i
			}
		} else if p == name {
			m |= 1 << i
		}
	}
	return m
}

// swapPorts turns a mask of egress ports into the mask of ingress ports
// that lead there: a frame leaves by the port it did not come in on.
func swapPorts(m uint8) uint8 { return (m&1)<<1 | (m&2)>>1 }

func (rs *RuleSet) compileRule(r *rule, f Family, tid tableID) (crule, error) {
	cr := crule{
		has: r.has &^ (mIfIn | mIfOut | mPhysIn | mPhysOut | mIsIn | mIsOut | mIsBridged | mComment),
		neg: r.neg, proto: r.proto, tcpMask: r.tcpMask, tcpComp: r.tcpComp,
		icmpType: r.icmpType, icmpMin: r.icmpMin, icmpMax: r.icmpMax,
		states: r.states, target: r.target, helper: r.helper,
		sport: r.sport, dport: r.dport, x: r.x,
	}
	if r.has&mSrc != 0 {
		cr.src = makePrefix(r.src)
	}
	if r.has&mDst != 0 {
		cr.dst = makePrefix(r.dst)
	}
	cr.nmulti = uint8(copy(cr.multi[:], r.multi))
	if err := rs.compileSets(r, &cr, f, rs.sets); err != nil {
		return cr, err
	}
	if err := rs.compileCtx(&cr, r); err != nil {
		return cr, err
	}
	if r.has&mHashlimit != 0 {
		if err := rs.compileHashlimit(&cr, r, f); err != nil {
			return cr, err
		}
	}
	if r.target == tReject {
		fi := 0
		if f == FamilyIPv6 {
			fi = 1
		}
		cr.reject = r.rejectFor(fi)
	}
	// Interface matches fold into one mask of allowed ingress ports.
	allowed := uint8(3)
	ifaces := []struct {
		bit  matchBits
		name string
		out  bool
	}{{mIfIn, r.ifIn, false}, {mIfOut, r.ifOut, true}, {mPhysIn, r.physIn, false}, {mPhysOut, r.physOut, true}}
	for _, x := range ifaces {
		if r.has&x.bit == 0 {
			continue
		}
		m := portMask(x.name, rs.ports)
		if rs.anyPort {
			m = 3
		}
		if m == 0 {
			return cr, &ParseError{File: r.file, Line: r.line, Err: ErrUnknownPort,
				Msg: fmt.Sprintf("interface %q is not a bridge port (ports: %q, %q)", x.name, rs.ports[0], rs.ports[1])}
		}
		if x.out {
			m = swapPorts(m)
		}
		if r.neg&x.bit != 0 {
			m = ^m & 3
		}
		allowed &= m
		cr.has |= mPorts
	}
	if cr.has&mPorts != 0 {
		cr.ports = allowed
		if allowed == 0 {
			cr.has |= mNever
		}
	}
	// --physdev-is-*: constant per chain. In FORWARD every frame came in on
	// one port and leaves by the other, so all three hold. In PREROUTING
	// the output device is not known yet, so is-out and is-bridged are
	// false (xt_physdev tests physoutdev).
	consts := []struct {
		bit matchBits
		val bool
	}{{mIsIn, true}, {mIsOut, tid == tableFilter}, {mIsBridged, tid == tableFilter}}
	for _, x := range consts {
		if r.has&x.bit != 0 && x.val == (r.neg&x.bit != 0) {
			cr.has |= mNever
		}
	}
	return cr, nil
}
