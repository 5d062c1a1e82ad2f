package control

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Filter selects entries as conntrack's filter options do. Zero fields
// match anything. Addresses and ports are those of the original direction
// (conntrack -s, -d, --sport, --dport).
type Filter struct {
	Family int    `json:"family,omitempty"` // 4 or 6 (-f ipv4|ipv6)
	Proto  uint8  `json:"proto,omitempty"`  // L4 protocol number (-p)
	Src    string `json:"src,omitempty"`    // address or prefix (-s)
	Dst    string `json:"dst,omitempty"`    // address or prefix (-d)
	SPort  int    `json:"sport,omitempty"`  // --sport
	DPort  int    `json:"dport,omitempty"`  // --dport
	State  string `json:"state,omitempty"`  // TCP state name (--state ESTABLISHED)
	Status string `json:"status,omitempty"` // comma list of ASSURED, UNREPLIED, SEEN_REPLY, EXPECTED, OFFLOAD (--status)
	Zone   int    `json:"zone,omitempty"`   // VLAN id (--zone); 0: any
}

// IsZero reports whether f matches everything.
func (f Filter) IsZero() bool { return f == Filter{} }

// matcher is a Filter compiled once per request.
type matcher struct {
	f          Filter
	src, dst   netip.Prefix
	state      statemachine.TCPState
	hasState   bool
	statusSet  uint8 // bits that must be set
	statusNone uint8 // bits that must be clear
	offload    bool  // the entry must be in the fast path (--status OFFLOAD)
}

// compile checks f and prepares it for Match.
func (f Filter) compile() (*matcher, error) {
	m := &matcher{f: f}
	var err error
	if f.Family != 0 && f.Family != 4 && f.Family != 6 {
		return nil, fmt.Errorf("family must be ipv4 or ipv6, got %d", f.Family)
	}
	if f.Src != "" {
		if m.src, err = parsePrefix(f.Src); err != nil {
			return nil, err
		}
	}
	if f.Dst != "" {
		if m.dst, err = parsePrefix(f.Dst); err != nil {
			return nil, err
		}
	}
	if f.SPort < 0 || f.SPort > 65535 || f.DPort < 0 || f.DPort > 65535 {
		return nil, fmt.Errorf("ports must be 1..65535")
	}
	if f.State != "" {
		st, ok := ParseTCPState(f.State)
		if !ok {
			return nil, fmt.Errorf("unknown TCP state %q", f.State)
		}
		m.state, m.hasState = st, true
	}
	if f.Status != "" {
		for _, s := range strings.Split(f.Status, ",") {
			switch strings.ToUpper(strings.TrimSpace(s)) {
			case "ASSURED":
				m.statusSet |= statemachine.StatusAssured
			case "SEEN_REPLY":
				m.statusSet |= statemachine.StatusSeenReply
			case "UNREPLIED":
				m.statusNone |= statemachine.StatusSeenReply
			case "EXPECTED":
				m.statusSet |= statemachine.StatusExpected
			case "OFFLOAD":
				// conntrack-tools' --status OFFLOAD (IPS_OFFLOAD):
				// entries in the XDP fast path.
				m.offload = true
			default:
				return nil, fmt.Errorf("unknown status %q (ASSURED, SEEN_REPLY, UNREPLIED, EXPECTED, OFFLOAD)", s)
			}
		}
	}
	return m, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("bad address %q: %v", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q: %v", s, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseTCPState returns the TCP state named s (the kernel's names, any case).
func ParseTCPState(s string) (statemachine.TCPState, bool) {
	for st := statemachine.TCPState(0); st < statemachine.NumTCPStates; st++ {
		if strings.EqualFold(st.String(), s) {
			return st, true
		}
	}
	return 0, false
}

// ParseProto returns the protocol number of a name a listing prints
// (ctlist.L4Name: tcp, udp, icmp, icmpv6, sctp, dccp, udplite, gre; any
// case), of iptables' ipv6-icmp, or of a decimal number 1..255.
func ParseProto(s string) (uint8, error) {
	if strings.EqualFold(s, "ipv6-icmp") {
		return packet.ProtoICMPv6, nil
	}
	for p := 1; p < 256; p++ {
		if name := ctlist.L4Name(uint8(p)); name != "unknown" && strings.EqualFold(name, s) {
			return uint8(p), nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("unknown protocol %q", s)
	}
	return uint8(n), nil
}

// Match reports whether es passes the filter.
func (m *matcher) Match(es *flowtable.EntrySnapshot) bool {
	f := &m.f
	o := &es.Orig
	if f.Family != 0 && int(o.L3) != f.Family {
		return false
	}
	if f.Proto != 0 && o.Proto != f.Proto {
		return false
	}
	if m.src.IsValid() && !m.src.Contains(o.Src.Netip()) {
		return false
	}
	if m.dst.IsValid() && !m.dst.Contains(o.Dst.Netip()) {
		return false
	}
	// Ports only mean something for port protocols (ICMP keeps its id and
	// type there).
	if f.SPort != 0 && (!o.HasPorts() || int(o.SrcPort) != f.SPort) {
		return false
	}
	if f.DPort != 0 && (!o.HasPorts() || int(o.DstPort) != f.DPort) {
		return false
	}
	if m.hasState && (o.Proto != 6 || es.Conn.State != m.state) {
		return false
	}
	if es.Conn.Status&m.statusSet != m.statusSet || es.Conn.Status&m.statusNone != 0 || (m.offload && !es.Offloaded) {
		return false
	}
	if f.Zone != 0 && int(o.VLAN) != f.Zone {
		return false
	}
	return true
}
