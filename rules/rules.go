package rules

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"

	"github.com/statewire/statewire/ipset"
	"github.com/statewire/statewire/statemachine"
)

// Family selects which IP version a loaded file applies to.
type Family uint8

// Families. FamilyBoth is for a single file serving both IP versions: each
// rule applies to the families its addresses and protocol allow (a rule with
// -s 10.0.0.0/8 or -p icmp is IPv4 only, one with -p ipv6-icmp IPv6 only,
// one with neither applies to both).
const (
	FamilyIPv4 Family = 1 << iota
	FamilyIPv6
	FamilyBoth = FamilyIPv4 | FamilyIPv6
)

// String returns "ipv4", "ipv6" or "ipv4+ipv6".
func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	case FamilyBoth:
		return "ipv4+ipv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Action is what the filter table decides for a packet.
type Action uint8

// Actions.
const (
	Accept Action = iota
	Drop
)

// String returns "ACCEPT" or "DROP".
func (a Action) String() string {
	if a == Drop {
		return "DROP"
	}
	return "ACCEPT"
}

// PolicyRule is Verdict.Rule and RawResult.Rule when no rule decided: the
// chain policy did (or the family has no rules at all).
const PolicyRule int32 = -1

// Verdict is the filter decision for one packet.
type Verdict struct {
	Action Action
	// Rule is the index of the deciding rule (see RuleSet.RuleText and
	// NumRules, so workers can keep per-rule counters in a plain slice), or
	// PolicyRule.
	Rule int32
	// Reject is the answer of a REJECT rule (Action is Drop), RejectNone
	// for a plain DROP or ACCEPT.
	Reject RejectWith
	// HashlimitFull says the -m hashlimit match of rule Rule dropped the
	// packet itself (Action is Drop): its table had no room for the
	// packet's key, and the kernel drops such a packet whatever the
	// rule's target (hotdrop).
	HashlimitFull bool
	// ConnlimitFull says the -m connlimit match of rule Rule dropped the
	// packet itself (Action is Drop): the rule set's table of counts had
	// no room for the packet's address (RuleSet.ConnlimitFull counts
	// them), and the kernel drops such a packet whatever the rule's
	// target (hotdrop). A non-first fragment without a connection, which
	// connlimit also drops, is not one of them.
	ConnlimitFull bool
}

// RawResult is the outcome of the raw table's PREROUTING chain, evaluated
// before conntrack.
type RawResult struct {
	NoTrack bool     // -j NOTRACK or -j CT --notrack: the packet is UNTRACKED
	Drop    bool     // -j DROP (or a DROP policy) in the raw table
	Helper  HelperID // -j CT --helper NAME: attach this helper to a new connection
	// Rule is the index of the rule that set NoTrack/Helper or dropped the
	// packet, or PolicyRule.
	Rule int32
	// Passive says the raw table did nothing to the packet (no DROP,
	// NOTRACK or helper) and read nothing that is not fixed for its flow
	// direction and ingress port: every packet of that (direction, port)
	// would pass it untouched too. Only then may the XDP fast path, which
	// has no raw table, take the flow's packets (CachedVerdict.FastPath).
	Passive bool
}

// Sentinel errors. Every error from Load and Compile wraps exactly one of
// them (errors.Is) and, when it comes from a line of input, is a *ParseError.
var (
	ErrSyntax      = errors.New("rules: syntax error")
	ErrUnknown     = errors.New("rules: unknown word")
	ErrUnsupported = errors.New("rules: unsupported by statewire")
	ErrChainLoop   = errors.New("rules: chain loop or nesting too deep")
	ErrUnknownPort = errors.New("rules: interface is not a bridge port")
	ErrFamily      = errors.New("rules: family already loaded")
)

// ParseError is an error tied to one line of a rules file. Error returns
// "file:line: message" where the message quotes the offending word.
type ParseError struct {
	File string
	Line int
	Msg  string
	Err  error // the sentinel
}

// Error formats the error as "file:line: message".
func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Unwrap returns the sentinel error.
func (e *ParseError) Unwrap() error { return e.Err }

// generation is the process-wide rule set generation counter. 0 is never
// handed out so a zeroed cache slot in a flow entry never matches.
var generation atomic.Uint32

func nextGeneration() uint32 {
	for {
		if g := generation.Add(1); g != 0 {
			return g
		}
	}
}

// matchBits says which matches a rule carries (has) and which are negated
// (neg): one bit per match kind.
type matchBits uint64

const (
	mNever     matchBits = 1 << iota // compile-time false (e.g. ! --physdev-is-bridged in FORWARD)
	mProto                           // -p
	mSrc                             // -s
	mDst                             // -d
	mPorts                           // compiled: allowed in-port mask (from -i/-o/--physdev-*)
	mIfIn                            // -i
	mIfOut                           // -o
	mPhysIn                          // --physdev-in
	mPhysOut                         // --physdev-out
	mIsIn                            // --physdev-is-in
	mIsOut                           // --physdev-is-out
	mIsBridged                       // --physdev-is-bridged
	mSport                           // --sport
	mDport                           // --dport
	mMultiSrc                        // -m multiport --sports
	mMultiDst                        // -m multiport --dports
	mMultiAny                        // -m multiport --ports
	mICMP                            // --icmp-type / --icmpv6-type
	mState                           // --state / --ctstate
	mFrag                            // -f (per packet)
	mTCPFlags                        // --syn / --tcp-flags (per packet)
	mComment                         // --comment (no effect on matching)
	mSrcRange                        // -m iprange --src-range
	mDstRange                        // -m iprange --dst-range
	mMAC                             // -m mac --mac-source (per packet)
	mLength                          // -m length (per packet)
	mPktType                         // -m pkttype (per packet)
	mTOS                             // -m tos (per packet)
	mDSCP                            // -m dscp (per packet)
	mTTL                             // -m ttl / -m hl (per packet)
	mLimit                           // -m limit (per packet: a token bucket)
	mMark                            // -m mark (the packet mark: see ctx.go)
	mConnmark                        // -m connmark (the connection mark: uncacheable)
	mCtFlow                          // -m conntrack --ctdir/--ctproto/--ctorig*/--ctrepl* (fixed per direction)
	mCtPacket                        // -m conntrack --ctstatus/--ctexpire (per packet)
	mAddrType                        // -m addrtype (the addresses: fixed per direction)
	mRecent                          // -m recent (a shared list: per packet)
	mConnlimit                       // -m connlimit (shared counts: per packet)
	mHashlimit                       // -m hashlimit (per-key token buckets: per packet)
)

// perPacketBits are the matches that read fields which change from packet to
// packet within one flow direction. A verdict that consulted one of them is
// not cacheable.
const perPacketBits = mFrag | mTCPFlags | extPerPacket | mLimit | mConnmark | mCtPacket | mRecent | mConnlimit | mHashlimit

// ctxBits are the matches that read the Ctx beyond state and port
// (match_*.go); they are tested last, after every match of the packet.
const ctxBits = mLimit | mMark | mConnmark | mCtFlow | mCtPacket | mRecent | mConnlimit | mHashlimit

// extPerPacket are the per-packet matches of ext.go.
const extPerPacket = mMAC | mLength | mPktType | mTOS | mDSCP | mTTL

// l4Bits are matches that need the L4 header: they fail on non-first
// fragments, as xt_tcpudp, xt_multiport and xt_icmp do (fragoff != 0 →
// no match, before any inversion).
const l4Bits = mSport | mDport | mMultiSrc | mMultiDst | mMultiAny | mICMP | mTCPFlags

type targetKind uint8

const (
	tNone      targetKind = iota // no -j: count and continue
	tAccept                      // ACCEPT
	tDrop                        // DROP
	tReturn                      // RETURN
	tJump                        // -j CHAIN
	tGoto                        // -g CHAIN
	tNoTrack                     // -j NOTRACK (raw)
	tCTNoTrack                   // -j CT --notrack (raw)
	tCTHelper                    // -j CT --helper NAME (raw)
	tCT                          // -j CT seen, option not yet read (parser only)
	tMark                        // -j MARK (sets the packet mark, continues)
	tConnmark                    // -j CONNMARK (sets the connection or packet mark, continues)
	tReject                      // -j REJECT (filter): DROP and an answer, target_reject.go
	tLog                         // -j LOG: log and continue, target_log.go
)

// portRange is an inclusive port range.
type portRange struct{ lo, hi uint16 }

// maxMultiport is xt_multiport's XT_MULTI_PORTS: at most 15 ports, a range
// counting as two.
const maxMultiport = 15

// rule is one parsed rule in source form: what Save prints and Compile reads.
// It is immutable once its table is committed.
type rule struct {
	file  string
	line  int
	chain *chain
	fam   Family // families the rule applies to

	has, neg         matchBits
	proto            uint8
	src, dst         netip.Prefix
	ifIn, ifOut      string
	physIn, physOut  string
	sport, dport     portRange
	multi            []portRange
	tcpMask, tcpComp uint8
	icmpType         uint8
	icmpMin, icmpMax uint8
	states           statemachine.CtState
	stateModule      bool // written as -m state --state rather than -m conntrack --ctstate
	comment          string
	x                xmatch
	sets             []setMatch // -m set, in order (ipset.go)

	target targetKind
	jump   *chain
	helper HelperID

	reject    [2]RejectWith // -j REJECT --reject-with, by family index (RejectNone: the default)
	rejectSet bool          // --reject-with given
	rejectArg string        // its value as written (Save for both families)
	log       LogSpec       // -j LOG
}

// tableID indexes the two tables statewire evaluates.
type tableID uint8

const (
	tableFilter tableID = iota
	tableRaw
	numTables
)

var tableNames = [numTables]string{"filter", "raw"}

// builtinChains lists each table's built-in chains in iptables-save order;
// the first one named in entryChain is the one statewire evaluates.
var builtinChains = [numTables][]string{
	tableFilter: {"INPUT", "FORWARD", "OUTPUT"},
	tableRaw:    {"PREROUTING", "OUTPUT"},
}

var entryChain = [numTables]string{tableFilter: "FORWARD", tableRaw: "PREROUTING"}

type chain struct {
	name    string
	builtin bool
	policy  Action
	line    int
	rules   []*rule
}

type table struct {
	id     tableID
	line   int
	chains []*chain
	byName map[string]*chain
}

// source is one loaded file.
type source struct {
	name   string
	fam    Family
	tables [numTables]*table
}

// Loader collects rule files for one or both families and compiles them into
// a RuleSet. The zero value is ready to use. A Loader is not safe for
// concurrent use.
//
// Typical use, one file per family (iptables-save and ip6tables-save):
//
//	var l rules.Loader
//	err := l.Load("v4.rules", f4, rules.FamilyIPv4)
//	err = l.Load("v6.rules", f6, rules.FamilyIPv6)
//	rs, err := l.Compile([2]string{"enp1s0f0", "enp1s0f1"})
//
// or a single file for both: l.Load("all.rules", f, rules.FamilyBoth).
type Loader struct {
	srcs    []*source
	anyPort bool        // CheckFiles: accept any interface name
	sets    *ipset.Sets // for -m set (SetIPSets)
}

// Load parses one iptables-save formatted file for the given family (or
// FamilyBoth). It fails with a *ParseError naming the file, line and
// offending word on the first line it cannot read, and with ErrFamily when a
// family was already loaded. On error the Loader is unchanged.
func (l *Loader) Load(name string, r io.Reader, family Family) error {
	if family == 0 || family&^FamilyBoth != 0 {
		return fmt.Errorf("%w: bad family %d for %s", ErrSyntax, family, name)
	}
	for _, s := range l.srcs {
		if s.fam&family != 0 {
			return fmt.Errorf("%w: %s already loaded from %s", ErrFamily, s.fam&family, s.name)
		}
	}
	src, err := parse(name, r, family)
	if err != nil {
		return err
	}
	l.srcs = append(l.srcs, src)
	return nil
}

// sourceFor returns the loaded file covering family f, or nil.
func (l *Loader) sourceFor(f Family) *source {
	for _, s := range l.srcs {
		if s.fam&f != 0 {
			return s
		}
	}
	return nil
}
