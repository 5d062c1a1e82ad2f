package rules

import (
	"errors"
	"fmt"
	"strings"

	"github.com/statewire/statewire/ipset"
	"github.com/statewire/statewire/packet"
)

// -m set --match-set NAME DIRS reads the packet's addresses and ports (and
// an ICMP query's type and code for the port types): all fixed for a flow
// direction, so a verdict that consulted a set stays cacheable. The sets
// are part of the compiled rule set: loading new sets means compiling a new
// RuleSet (Loader.SetIPSets, LoadFilesSets), which gets a new generation,
// so every cached verdict, and every flow in the XDP fast path, is judged
// again under the new sets.

// ErrNoSet is wrapped by Compile's error for a rule naming a set that was
// not loaded, or a set of the other IP family.
var ErrNoSet = errors.New("rules: no such ipset")

// maxSetDims is IPSET_DIM_MAX: at most six direction flags.
const maxSetDims = 6

// setMatch is one -m set of a rule (a rule may have several).
type setMatch struct {
	name          string
	neg           bool
	dir           ipset.Dir
	returnNomatch bool // --return-nomatch
	noCounters    bool // ! --update-counters (statewire keeps no element counters)
	noSubCounters bool // ! --update-subcounters
	set           *ipset.Set
}

// SetIPSets gives the sets that `-m set --match-set NAME` refers to; Compile
// resolves the names against them. nil means no sets.
func (l *Loader) SetIPSets(ss *ipset.Sets) { l.sets = ss }

// LoadFilesSets is LoadFiles with the sets of the `ipset save` files
// ipsetPaths (none: no sets).
func LoadFilesSets(rulesPath, rules6Path string, ipsetPaths []string, ports [2]string) (*RuleSet, error) {
	l, err := loadFiles(rulesPath, rules6Path)
	if err != nil {
		return nil, err
	}
	ss, err := ipset.Load(ipsetPaths...)
	if err != nil {
		return nil, err
	}
	l.SetIPSets(ss)
	return l.Compile(ports)
}

// CheckFilesSets is CheckFiles with the sets of the `ipset save` files
// ipsetPaths.
func CheckFilesSets(rulesPath, rules6Path string, ipsetPaths []string, ports [2]string, anyPort bool) (n [2]int, err error) {
	l, err := loadFiles(rulesPath, rules6Path)
	if err != nil {
		return n, err
	}
	ss, err := ipset.Load(ipsetPaths...)
	if err != nil {
		return n, err
	}
	l.SetIPSets(ss)
	return l.check(ports, anyPort)
}

// setOption reads one option of the set match; word is as written, opt its
// canonical spelling.
func (p *parser) setOption(r *rule, word, opt string, neg bool, value func() (string, error)) error {
	if len(r.sets) == 0 {
		return p.errf(ErrSyntax, "option %q needs -m set", word)
	}
	m := &r.sets[len(r.sets)-1]
	switch opt {
	case "--match-set":
		if m.name != "" {
			return p.errf(ErrSyntax, "option %q given twice in one -m set (write -m set again)", word)
		}
		name, err := value()
		if err != nil {
			return err
		}
		dirs, err := value()
		if err != nil {
			return err
		}
		if name == "" || len(name) > 31 || strings.ContainsAny(name, " \t\"") {
			return p.errf(ErrSyntax, "bad set name %q", name)
		}
		flags := strings.Split(dirs, ",")
		if len(flags) > maxSetDims {
			return p.errf(ErrSyntax, "too many direction flags in %q (at most %d)", dirs, maxSetDims)
		}
		for i, f := range flags {
			switch f {
			case "src":
				m.dir.Src |= 1 << i
			case "dst":
			default:
				return p.errf(ErrSyntax, "bad direction %q in %q (src or dst, comma separated)", f, dirs)
			}
		}
		m.name, m.neg, m.dir.Dims = name, neg, uint8(len(flags))
		return nil
	case "--return-nomatch":
		if neg {
			return p.errf(ErrSyntax, "%q cannot be negated", word)
		}
		m.returnNomatch = true
	case "--update-counters", "--update-subcounters":
		// Only "!" changes anything in the kernel (counters are updated by
		// default); statewire keeps no element counters, so both forms are
		// read and kept for Save.
		if opt == "--update-counters" {
			m.noCounters = neg
		} else {
			m.noSubCounters = neg
		}
	default:
		return p.errf(ErrUnsupported, "set option %q is not supported (statewire keeps no per-element packet and byte counters)", word)
	}
	return nil
}

// checkSets runs at the end of a rule: every -m set names a set.
func (p *parser) checkSets(r *rule) error {
	for _, m := range r.sets {
		if m.name == "" {
			return p.errf(ErrSyntax, "-m set needs --match-set NAME src|dst[,...]")
		}
	}
	return nil
}

// compileSets resolves the rule's set names for family f. A set of the
// other family makes the rule never match in f when the rule came from a
// file for both families (ip6tables would refuse the rule, so it is not in
// the IPv6 table), and is an error naming the set otherwise, as iptables
// says it.
func (rs *RuleSet) compileSets(r *rule, cr *crule, f Family, sets *ipset.Sets) error {
	if len(r.sets) == 0 {
		return nil
	}
	cr.sets = make([]setMatch, len(r.sets))
	for i, m := range r.sets {
		s := sets.Get(m.name)
		if s == nil {
			return &ParseError{File: r.file, Line: r.line, Err: ErrNoSet,
				Msg: fmt.Sprintf("set %q does not exist: load it with --ipsets FILE (an `ipset save` file)", m.name)}
		}
		ok := f == FamilyIPv4 && s.IPv4() || f == FamilyIPv6 && s.IPv6()
		if !ok {
			if r.fam != FamilyBoth {
				fam := "IPv6"
				if s.IPv4() {
					fam = "IPv4"
				}
				return &ParseError{File: r.file, Line: r.line, Err: ErrNoSet,
					Msg: fmt.Sprintf("the family of set %q is %s, which does not apply to this %s rule", m.name, fam, f)}
			}
			cr.has |= mNever
		}
		m.set = s
		cr.sets[i] = m
	}
	return nil
}

// setsMatch tests the rule's -m set matches; len(r.sets) is not zero.
func (r *crule) setsMatch(p *packet.Packet) bool {
	for i := range r.sets {
		m := &r.sets[i]
		if m.set == nil || m.set.Test(p, m.dir, m.returnNomatch) == m.neg {
			return false
		}
	}
	return true
}

// setString appends the rule's set matches in iptables-save's form.
func setString(r *rule, w func(string)) {
	for _, m := range r.sets {
		w(" -m set")
		if m.neg {
			w(" !")
		}
		dirs := make([]string, m.dir.Dims)
		for i := range dirs {
			dirs[i] = "dst"
			if m.dir.Src&(1<<i) != 0 {
				dirs[i] = "src"
			}
		}
		w(" --match-set " + m.name + " " + strings.Join(dirs, ","))
		if m.returnNomatch {
			w(" --return-nomatch")
		}
		if m.noCounters {
			w(" ! --update-counters")
		}
		if m.noSubCounters {
			w(" ! --update-subcounters")
		}
	}
}
