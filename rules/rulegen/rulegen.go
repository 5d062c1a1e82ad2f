package rulegen

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/statewire/statewire/packet"
)

// Options say what to generate. Zero fields take the defaults.
type Options struct {
	Seed   uint64
	Frames int // about this many frames (default 200), a third of them IPv6
	Rules  int // about this many rules in both files (default 40)
	// HostMAC is the source MAC of frames from side 0 (port A) and side 1
	// (port B); DstMAC the destination of unicast frames (one no host
	// has, so a kernel bridge floods them and the hosts ignore them).
	HostMAC [2][6]byte
	DstMAC  [6]byte
}

// Case is one generated rule set and its traffic. The rule files name the
// ports {PortA} and {PortB}, for the caller to replace.
type Case struct {
	Rules4, Rules6 string
	Frames         []Frame
}

// Frame is one frame to inject, in order.
type Frame struct {
	From  int // 0: into port A (from the left host), 1: into port B
	Bytes []byte
	What  string
}

type gen struct {
	r     *rand.Rand
	o     Options
	flows int
	uniq  uint32
}

// Generate draws a Case from o.Seed: the same seed gives the same case.
func Generate(o Options) Case {
	if o.Frames == 0 {
		o.Frames = 200
	}
	if o.Rules == 0 {
		o.Rules = 40
	}
	g := &gen{r: rand.New(rand.NewPCG(o.Seed, 0x5eed)), o: o}
	var convs [][]*pkt
	var by [2][]*pkt // examples by family
	n := 0
	for n < o.Frames {
		v6 := g.r.IntN(3) == 0
		c := g.conversation(v6)
		convs = append(convs, c)
		n += len(c)
		fam := 0
		if v6 {
			fam = 1
		}
		by[fam] = append(by[fam], c...)
	}
	// Interleave the conversations, each in its own order.
	var c Case
	for len(convs) > 0 {
		i := g.r.IntN(len(convs))
		p := convs[i][0]
		if convs[i] = convs[i][1:]; len(convs[i]) == 0 {
			convs = slices.Delete(convs, i, i+1)
		}
		g.uniq++
		p.bytes = g.build(p, g.uniq)
		c.Frames = append(c.Frames, Frame{From: p.from, Bytes: p.bytes, What: p.describe()})
	}
	n4 := o.Rules * 2 / 3
	c.Rules4 = g.ruleFile(false, by[0], n4)
	c.Rules6 = g.ruleFile(true, by[1], o.Rules-n4)
	return c
}

// fileGen builds one family's file.
type fileGen struct {
	g        *gen
	v6       bool
	examples []*pkt
	chains   []string
	used     []bool
	n        int // rules so far (LOG prefixes, comments)
}

func (g *gen) ruleFile(v6 bool, examples []*pkt, n int) string {
	fg := &fileGen{g: g, v6: v6, examples: examples}
	if len(examples) == 0 {
		// No frame of this family: a rule set around a frame of the other
		// family would not parse (addresses), so keep the file minimal.
		return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	}
	nc := g.r.IntN(4)
	for i := range nc {
		fg.chains = append(fg.chains, fmt.Sprintf("RD%d", i))
	}
	fg.used = make([]bool, nc)
	// Rules per chain: FORWARD gets about half.
	per := make([][]string, nc+1)
	for range n {
		c := 0
		if nc > 0 && g.r.IntN(2) == 0 {
			c = 1 + g.r.IntN(nc)
		}
		per[c] = append(per[c], fg.rule(c-1))
	}
	// Every user chain is reached: from FORWARD, or from an earlier chain.
	for i, u := range fg.used {
		if !u {
			from := g.r.IntN(i + 1) // 0: FORWARD, k: chain k-1 (< i)
			r := fg.matches(-1+from, pick(g, fg.examples)) + " " + fg.jump(i)
			at := g.r.IntN(len(per[from]) + 1)
			per[from] = slices.Insert(per[from], at, r)
		}
	}
	var b strings.Builder
	if g.r.IntN(3) == 0 {
		// UNTRACKED: the raw table's NOTRACK for one port or one prefix.
		ex := pick(g, fg.examples)
		b.WriteString("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
		switch {
		case ex.proto == packet.ProtoTCP || ex.proto == packet.ProtoUDP:
			fmt.Fprintf(&b, "-A PREROUTING -p %s -m %s --dport %d -j %s\n", protoNames[ex.proto], protoNames[ex.proto], ex.dport,
				pick(g, []string{"NOTRACK", "CT --notrack"}))
		default:
			fmt.Fprintf(&b, "-A PREROUTING -s %s -j NOTRACK\n", fg.prefix(ex.src, true))
		}
		b.WriteString("COMMIT\n")
	}
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n")
	fmt.Fprintf(&b, ":FORWARD %s [0:0]\n:OUTPUT ACCEPT [0:0]\n", pick(g, []string{"ACCEPT", "DROP"}))
	for _, c := range fg.chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	if !v6 {
		// The lab's own hosts (198.18.0.0/24): the wires are checked with a
		// ping before the frames, and a later cacheable flow of theirs
		// shows that the fast path ran.
		b.WriteString("-A FORWARD -s 198.18.0.0/24 -d 198.18.0.0/24 -j ACCEPT\n")
	}
	for i, rs := range per {
		name := "FORWARD"
		if i > 0 {
			name = fg.chains[i-1]
		}
		for _, r := range rs {
			fmt.Fprintf(&b, "-A %s %s\n", name, r)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// rule draws one rule for chain c (-1: FORWARD, else the user chain's
// index) around a random example frame.
func (fg *fileGen) rule(c int) string {
	g := fg.g
	fg.n++
	ex := pick(g, fg.examples)
	m := fg.matches(c, ex)
	tcp := strings.HasPrefix(m, "-p tcp") // not negated
	var t string
	switch k := g.r.IntN(100); {
	case k < 20:
		t = "-j ACCEPT"
	case k < 40:
		t = "-j DROP"
	case k < 50:
		t = fg.reject(tcp)
	case k < 58:
		t = fmt.Sprintf("-j LOG --log-prefix \"rd%d \" --log-level %d", fg.n, g.r.IntN(8))
		if g.r.IntN(3) == 0 {
			t += pick(g, []string{" --log-tcp-sequence", " --log-tcp-options", " --log-ip-options", " --log-uid"})
		}
	case k < 68:
		t = "-j MARK " + fg.markOp(false)
	case k < 76:
		t = "-j CONNMARK " + fg.markOp(true)
	case k < 84 && c >= 0:
		t = "-j RETURN"
	case k < 86:
		t = "-j RETURN"
	default:
		if c+1 < len(fg.chains) {
			t = fg.jump(c + 1 + g.r.IntN(len(fg.chains)-c-1))
		} else {
			t = "-j DROP"
		}
	}
	return strings.TrimSpace(m + " " + t)
}

// jump is a -j or -g to user chain i.
func (fg *fileGen) jump(i int) string {
	fg.used[i] = true
	if fg.g.r.IntN(3) == 0 {
		return "-g " + fg.chains[i]
	}
	return "-j " + fg.chains[i]
}

func (fg *fileGen) reject(tcp bool) string {
	with := []string{"icmp-net-unreachable", "icmp-host-unreachable", "icmp-port-unreachable", "icmp-proto-unreachable",
		"icmp-net-prohibited", "icmp-host-prohibited", "icmp-admin-prohibited"}
	if fg.v6 {
		with = []string{"icmp6-no-route", "icmp6-adm-prohibited", "icmp6-addr-unreachable", "icmp6-port-unreachable",
			"icmp6-policy-fail", "icmp6-reject-route"}
	}
	if tcp && fg.g.r.IntN(2) == 0 {
		return "-j REJECT --reject-with tcp-reset"
	}
	if fg.g.r.IntN(6) == 0 {
		return "-j REJECT"
	}
	return "-j REJECT --reject-with " + pick(fg.g, with)
}

var markVals = []uint32{0x1, 0x2, 0x3, 0x4, 0x10, 0x11}

func (fg *fileGen) markOp(conn bool) string {
	g := fg.g
	v := pick(g, markVals)
	ops := []string{
		fmt.Sprintf("--set-mark %#x", v),
		fmt.Sprintf("--set-xmark %#x/%#x", v, pick(g, []uint32{0xff, 0xffffffff, 0x3})),
		fmt.Sprintf("--or-mark %#x", v),
		fmt.Sprintf("--and-mark %#x", pick(g, []uint32{0xfe, 0x1, 0xf0})),
		fmt.Sprintf("--xor-mark %#x", v),
	}
	if conn {
		ops = append(ops, "--save-mark", "--restore-mark", "--save-mark --nfmask 0xff --ctmask 0xf",
			"--restore-mark --mask 0x3", "--save-mark", "--restore-mark")
	}
	return pick(g, ops)
}

// neg is "! " about one time in four.
func (fg *fileGen) neg() string {
	if fg.g.r.IntN(4) == 0 {
		return "! "
	}
	return ""
}

// matches draws the matches of a rule in chain c around ex: an optional
// protocol with its own matches first, then up to three others.
func (fg *fileGen) matches(c int, ex *pkt) string {
	g := fg.g
	var parts []string
	// The protocol and its matches (-m tcp, udp, icmp, icmp6, multiport
	// need -p, not negated).
	switch k := g.r.IntN(10); {
	case k < 6:
		parts = append(parts, fg.l4(ex)...)
	case k < 7:
		p := ex.proto
		if g.r.IntN(2) == 0 {
			p = pick(g, []uint8{6, 17, 1, 58, 136})
			if p == 1 && fg.v6 || p == 58 && !fg.v6 {
				p = 17
			}
		}
		parts = append(parts, fg.neg()+"-p "+protoNames[p])
	}
	seen := map[string]bool{}
	for _, m := range parts {
		seen[matchKey(m)] = true
	}
	for range pick(g, []int{0, 1, 1, 1, 2, 2, 3}) {
		// One of each option or module per rule: iptables refuses a second
		// -s or -d, and a module twice adds nothing here.
		if m := fg.other(ex); m != "" && !seen[matchKey(m)] {
			seen[matchKey(m)] = true
			parts = append(parts, m)
		}
	}
	return strings.Join(parts, " ")
}

// matchKey is what makes two matches the same option: "-s", or "-m mac".
func matchKey(m string) string {
	f := strings.Fields(strings.TrimPrefix(m, "! "))
	if len(f) > 1 && f[0] == "-m" {
		if f[1] == "recent" {
			// statewire takes one -m limit or -m recent per rule (a rule
			// spends at most one token or list update).
			return "-m limit"
		}
		if f[1] == "state" {
			// statewire reads -m state and -m conntrack into one match and
			// refuses --state and --ctstate in one rule (iptables takes
			// both, ANDed): not generated.
			return "-m conntrack"
		}
		return f[0] + " " + f[1]
	}
	return f[0]
}

// l4 is -p with the protocol's matches, for ex's protocol most often.
func (fg *fileGen) l4(ex *pkt) []string {
	g := fg.g
	p := ex.proto
	if g.r.IntN(5) == 0 {
		p = pick(g, []uint8{6, 17})
	}
	out := []string{"-p " + protoNames[p]}
	switch p {
	case packet.ProtoTCP, packet.ProtoUDP:
		name := protoNames[p]
		switch k := g.r.IntN(6); {
		case k < 3:
			opt := pick(g, []string{"--sport", "--dport"})
			port := ex.sport
			if opt == "--dport" {
				port = ex.dport
			}
			out = append(out, fmt.Sprintf("-m %s %s%s %s", name, fg.neg(), opt, fg.portSpec(port)))
			if g.r.IntN(3) == 0 {
				out[len(out)-1] += fmt.Sprintf(" %s--dport %s", fg.neg(), fg.portSpec(ex.dport))
				if opt == "--dport" {
					out[len(out)-1] = strings.Replace(out[len(out)-1], "--dport", "--sport", 1)
				}
			}
		case k < 5 && p == packet.ProtoTCP:
			out = append(out, "-m tcp "+fg.tcpFlags(ex))
		default:
			out = append(out, fg.multiport(ex))
		}
	case packet.ProtoUDPLite:
		out = append(out, fg.multiport(ex))
	case packet.ProtoICMP:
		out = append(out, "-m icmp "+fg.neg()+"--icmp-type "+fg.icmpType(ex))
	case packet.ProtoICMPv6:
		out = append(out, "-m icmp6 "+fg.neg()+"--icmpv6-type "+fg.icmpType(ex))
	}
	return out
}

// portSpec is a port or range with ex's port at an edge, inside or just
// outside, or a pool port.
func (fg *fileGen) portSpec(port uint16) string {
	g := fg.g
	q := pick(g, portPool)
	switch g.r.IntN(5) {
	case 0:
		return fmt.Sprint(port)
	case 1:
		lo, hi := min(port, q), max(port, q)
		return fmt.Sprintf("%d:%d", lo, hi)
	case 2:
		if port < 65535 {
			return fmt.Sprintf("%d:%d", port+1, max(port+1, q))
		}
		return "1:65534"
	case 3:
		if port > 0 {
			return fmt.Sprintf("%d:%d", min(q, port-1), port-1)
		}
		return "1:65535"
	}
	return fmt.Sprint(q)
}

func (fg *fileGen) multiport(ex *pkt) string {
	g := fg.g
	opt := pick(g, []string{"--sports", "--dports", "--ports"})
	var items []string
	for range 1 + g.r.IntN(4) {
		port := ex.dport
		if g.r.IntN(2) == 0 {
			port = ex.sport
		}
		if g.r.IntN(2) == 0 {
			port = pick(g, portPool)
		}
		s := fg.portSpec(port)
		if lo, hi, ok := strings.Cut(s, ":"); ok && lo == hi {
			s = lo // libxt_multiport refuses a range A:A (A < B only)
		}
		items = append(items, s)
	}
	return fmt.Sprintf("-m multiport %s%s %s", fg.neg(), opt, strings.Join(items, ","))
}

func (fg *fileGen) tcpFlags(ex *pkt) string {
	g := fg.g
	if g.r.IntN(3) == 0 {
		return fg.neg() + "--syn"
	}
	masks := []uint8{
		packet.TCPSyn | packet.TCPAck | packet.TCPFin | packet.TCPRst,
		packet.TCPSyn | packet.TCPRst,
		packet.TCPFin | packet.TCPSyn | packet.TCPRst | packet.TCPPsh | packet.TCPAck | packet.TCPUrg,
		0x3f, // ALL: libxt_tcp has no names for ECE and CWR
		packet.TCPAck,
	}
	mask := pick(g, masks)
	comp := ex.flags & mask
	if g.r.IntN(3) == 0 {
		comp = pick(g, oddFlags) & mask
	}
	ms := flagNames(mask)
	if mask == 0x3f {
		ms = "ALL"
	}
	return fmt.Sprintf("%s--tcp-flags %s %s", fg.neg(), ms, flagNames(comp))
}

var icmp4Types = []string{"echo-request", "echo-reply", "destination-unreachable", "port-unreachable", "host-unreachable",
	"network-unreachable", "fragmentation-needed", "time-exceeded", "parameter-problem", "source-quench", "timestamp-request",
	"address-mask-request", "router-solicitation", "any", "3/10", "3/13", "8", "14"}
var icmp6Types = []string{"echo-request", "echo-reply", "destination-unreachable", "port-unreachable", "no-route",
	"address-unreachable", "packet-too-big", "time-exceeded", "parameter-problem", "neighbour-solicitation",
	"router-solicitation", "1/3", "128", "200"}

func (fg *fileGen) icmpType(ex *pkt) string {
	g := fg.g
	if g.r.IntN(2) == 0 && (ex.proto == packet.ProtoICMP || ex.proto == packet.ProtoICMPv6) {
		if g.r.IntN(2) == 0 {
			return fmt.Sprint(ex.typ)
		}
		return fmt.Sprintf("%d/%d", ex.typ, ex.code)
	}
	if fg.v6 {
		return pick(g, icmp6Types)
	}
	return pick(g, icmp4Types)
}

var (
	maskLens4 = []int{32, 31, 28, 27, 24, 23, 16}
	maskLens6 = []int{128, 127, 124, 123, 64, 63, 48}
)

// prefix is a prefix holding a (in true) or one of a pool address that
// may or may not.
func (fg *fileGen) prefix(a netip.Addr, in bool) string {
	g := fg.g
	if !in {
		a = hostAddr(fg.v6, g.r.IntN(2), pick(g, hostNums))
	}
	bits := pick(g, maskLens4)
	if fg.v6 {
		bits = pick(g, maskLens6)
	}
	if a.BitLen() != bits && (a.Is4() == !fg.v6) {
		return netip.PrefixFrom(a, bits).Masked().String()
	}
	return a.String()
}

// addrOf is one of ex's addresses that fits the file's family (an ICMP
// error's quoted packet has the same family).
func (fg *fileGen) rangeAround(a netip.Addr) string {
	g := fg.g
	b := hostAddr(fg.v6, g.r.IntN(2), pick(g, hostNums))
	if g.r.IntN(3) == 0 {
		a = hostAddr(fg.v6, g.r.IntN(2), pick(g, hostNums))
	}
	lo, hi := a, b
	if hi.Less(lo) {
		lo, hi = hi, lo
	}
	if g.r.IntN(4) == 0 {
		// Just past a: a range that ends one short of it.
		if x := a.Prev(); x.IsValid() && lo.Less(x) {
			hi = x
		}
	}
	return lo.String() + "-" + hi.String()
}

var ctStates = []string{"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"}

// ctexpire ranges: remaining lifetimes reachable in a run of a few
// minutes are 0 (the first packet), up to 120 (every UDP, ICMP and closing
// TCP timeout), 240-300 (unacknowledged TCP) and about 432000 (TCP
// ESTABLISHED); every bound is far from those, so the verdict does not
// depend on when in the run a frame is sent.
var ctExpires = []string{"0", "0:200", "1:200", "200:1000", "1000:500000", "200:500000"}

// other draws one match other than the protocol's.
func (fg *fileGen) other(ex *pkt) string {
	g := fg.g
	n := fg.neg
	switch k := g.r.IntN(25); k {
	case 0, 1:
		return fmt.Sprintf("%s-s %s", n(), fg.prefix(ex.src, g.r.IntN(3) != 0))
	case 2, 3:
		return fmt.Sprintf("%s-d %s", n(), fg.prefix(ex.dst, g.r.IntN(3) != 0))
	case 4:
		opt, a := "--src-range", ex.src
		if g.r.IntN(2) == 0 {
			opt, a = "--dst-range", ex.dst
		}
		if a.Is4() == fg.v6 || a.IsMulticast() || !a.IsGlobalUnicast() && a.Is4() {
			a = hostAddr(fg.v6, 0, 16)
		}
		return fmt.Sprintf("-m iprange %s%s %s", n(), opt, fg.rangeAround(a))
	case 5, 6:
		var st []string
		for _, s := range ctStates {
			if s == ex.guess && g.r.IntN(3) != 0 || g.r.IntN(4) == 0 {
				st = append(st, s)
			}
		}
		if len(st) == 0 {
			st = []string{pick(g, ctStates)}
		}
		if g.r.IntN(2) == 0 {
			return fmt.Sprintf("-m state %s--state %s", n(), strings.Join(st, ","))
		}
		return fmt.Sprintf("-m conntrack %s--ctstate %s", n(), strings.Join(st, ","))
	case 7:
		return fg.conntrack(ex)
	case 8:
		mac := ex.smac
		if g.r.IntN(3) == 0 {
			mac = pick(g, append([][6]byte{fg.g.o.HostMAC[0], fg.g.o.HostMAC[1]}, altMACs...))
		}
		return fmt.Sprintf("-m mac %s--mac-source %s", n(), netMAC(mac))
	case 9:
		l := len(ex.bytes) - 14
		if l < 0 {
			l = 60
		}
		lo := pick(g, []int{0, 20, 40, 41, 60, 100, l, l + 1})
		hi := pick(g, []int{l, l - 1, 99, 100, 200, 1500, 65535})
		if hi < lo {
			lo, hi = hi, lo
		}
		if lo == hi && g.r.IntN(2) == 0 {
			return fmt.Sprintf("-m length %s--length %d", n(), lo)
		}
		return fmt.Sprintf("-m length %s--length %d:%d", n(), lo, hi)
	case 10:
		return fmt.Sprintf("-m pkttype %s--pkt-type %s", n(), pick(g, []string{"unicast", "broadcast", "multicast"}))
	case 11:
		switch g.r.IntN(3) {
		case 0:
			v := ex.tos
			if g.r.IntN(2) == 0 {
				v = pick(g, tosPool)
			}
			return fmt.Sprintf("-m tos %s--tos %#02x/%#02x", n(), v&0x3f, pick(g, []uint8{0x3f, 0xff, 0x1c}))
		case 1:
			return fmt.Sprintf("-m dscp %s--dscp %#02x", n(), pick(g, append(tosPool, ex.tos, 0))>>2)
		}
		return fmt.Sprintf("-m dscp %s--dscp-class %s", n(), pick(g, []string{"EF", "AF11", "CS1", "CS4", "BE"}))
	case 12:
		m, opt := "ttl", "ttl"
		if fg.v6 {
			m, opt = "hl", "hl"
		}
		v := int(ex.ttl) + g.r.IntN(3) - 1
		if g.r.IntN(3) == 0 {
			v = int(pick(g, ttlPool))
		}
		v = max(0, min(255, v))
		switch cmp := pick(g, []string{"eq", "lt", "gt"}); cmp {
		case "eq":
			return fmt.Sprintf("-m %s %s--%s-eq %d", m, n(), opt, v)
		default:
			// libxt_ttl and libxt_hl take ! with -eq only.
			return fmt.Sprintf("-m %s --%s-%s %d", m, opt, cmp, v)
		}
	case 13:
		// Rates per hour or day only: no token comes back during a run.
		// (A day with a burst over 1 overflows the kernel's credits.)
		if g.r.IntN(4) == 0 {
			return "-m limit --limit 1/day --limit-burst 1"
		}
		return fmt.Sprintf("-m limit --limit %d/hour --limit-burst %d", 1+g.r.IntN(5), 1+g.r.IntN(4))
	case 14:
		return fg.recent()
	case 15:
		return fmt.Sprintf("-m mark %s--mark %s", n(), fg.markSpec())
	case 16:
		return fmt.Sprintf("-m connmark %s--mark %s", n(), fg.markSpec())
	case 17:
		if fg.v6 {
			// -m addrtype is refused for IPv6 (README).
			return ""
		}
		return fmt.Sprintf("-m addrtype %s--%s-type %s", n(), pick(g, []string{"src", "dst"}), pick(g, []string{"UNICAST", "BROADCAST", "MULTICAST"}))
	case 18, 19:
		port := pick(g, []string{"{PortA}", "{PortB}"})
		switch g.r.IntN(5) {
		case 0:
			return fmt.Sprintf("-m physdev %s--physdev-in %s", n(), port)
		case 1:
			return fmt.Sprintf("-m physdev %s--physdev-out %s", n(), port)
		case 2:
			return fmt.Sprintf("-m physdev %s--physdev-is-in", n())
		case 3:
			return fmt.Sprintf("-m physdev %s--physdev-is-out", n())
		}
		return fmt.Sprintf("-m physdev %s--physdev-is-bridged", n())
	case 20:
		return fmt.Sprintf("-m comment --comment \"rd rule %d\"", fg.n)
	}
	// Not generated: -i/-o (on a kernel bridge they name the bridge
	// device in FORWARD, statewire reads them as the ports: rules/doc.go,
	// CONFORMANCE.md "Rule sets"), -f (the kernel bridge's conntrack
	// reassembles before FORWARD; TestMatchesAgainstKernel and the
	// fragment tests cover it), -m set (TestIPSetAgainstKernel, with its
	// `ipset save` file).
	return ""
}

func netMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

func (fg *fileGen) markSpec() string {
	g := fg.g
	v := pick(g, append(markVals, 0))
	if g.r.IntN(2) == 0 {
		return fmt.Sprintf("%#x/%#x", v, pick(g, []uint32{0x1, 0x3, 0xf, 0xff}))
	}
	return fmt.Sprintf("%#x", v)
}

// recent draws an -m recent match; the list names differ per family.
func (fg *fileGen) recent() string {
	g := fg.g
	name := pick(g, []string{"ra", "rb"})
	mask := pick(g, []string{"", "", " --mask 255.255.255.0", " --mask 255.255.255.240"})
	if fg.v6 {
		name += "6"
		mask = pick(g, []string{"", "", " --mask ffff:ffff:ffff:ffff::"})
	}
	side := pick(g, []string{"", " --rsource", " --rdest"})
	switch g.r.IntN(4) {
	case 0:
		return fmt.Sprintf("-m recent --set --name %s%s%s", name, side, mask)
	case 1:
		return fmt.Sprintf("-m recent %s--remove --name %s%s%s", fg.neg(), name, side, mask)
	}
	cmd := pick(g, []string{"--rcheck", "--update"})
	s := fmt.Sprintf("-m recent %s%s --name %s%s%s", fg.neg(), cmd, name, side, mask)
	if g.r.IntN(2) == 0 {
		// An hour: every entry of a run is younger.
		s += " --seconds 3600"
		if g.r.IntN(3) == 0 {
			s += " --reap"
		}
	}
	if g.r.IntN(2) == 0 {
		s += fmt.Sprintf(" --hitcount %d", 1+g.r.IntN(3))
	}
	if g.r.IntN(4) == 0 {
		s += " --rttl"
	}
	return s
}

// conntrack draws one of -m conntrack's options other than --ctstate.
func (fg *fileGen) conntrack(ex *pkt) string {
	g := fg.g
	n := fg.neg
	f := ex.f
	if ex.quote != nil {
		f = ex.quote.f // an error is RELATED to the quoted packet's connection
	}
	switch g.r.IntN(7) {
	case 0:
		var st []string
		for _, s := range []string{"NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"} {
			if g.r.IntN(3) == 0 {
				st = append(st, s)
			}
		}
		if len(st) == 0 {
			st = []string{"SEEN_REPLY"}
		}
		return fmt.Sprintf("-m conntrack %s--ctstatus %s", n(), strings.Join(st, ","))
	case 1:
		return fmt.Sprintf("-m conntrack --ctdir %s", pick(g, []string{"ORIGINAL", "REPLY"}))
	case 2:
		p := f.proto
		if g.r.IntN(3) == 0 {
			p = pick(g, []uint8{6, 17})
		}
		return fmt.Sprintf("-m conntrack %s--ctproto %s", n(), protoNames[p])
	case 3:
		opt, a := pick(g, []string{"--ctorigsrc", "--ctrepldst"}), f.src
		if g.r.IntN(2) == 0 {
			opt, a = pick(g, []string{"--ctorigdst", "--ctreplsrc"}), f.dst
		}
		return fmt.Sprintf("-m conntrack %s%s %s", n(), opt, fg.prefix(a, g.r.IntN(3) != 0))
	case 4:
		opt, port := pick(g, []string{"--ctorigsrcport", "--ctrepldstport"}), f.sport
		if g.r.IntN(2) == 0 {
			opt, port = pick(g, []string{"--ctorigdstport", "--ctreplsrcport"}), f.dport
		}
		if g.r.IntN(3) == 0 {
			port = pick(g, portPool)
		}
		return fmt.Sprintf("-m conntrack %s%s %d", n(), opt, port)
	case 5:
		return fmt.Sprintf("-m conntrack %s--ctexpire %s", n(), pick(g, ctExpires))
	}
	return fmt.Sprintf("-m conntrack --ctstate %s --ctdir %s", pick(g, ctStates[:3]), pick(g, []string{"ORIGINAL", "REPLY"}))
}
