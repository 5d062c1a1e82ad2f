// Package ctlist formats connection-table entries and expectations the way
// operators know them: the lines of /proc/net/nf_conntrack, of
// `conntrack -L`, of /proc/net/nf_conntrack_expect, and JSON.
//
// Everything here runs off the hot path, on snapshots: the functions take
// copies (flowtable.EntrySnapshot, flowtable.Expect) and may allocate.
package ctlist

import (
	"strconv"
	"strings"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Snapshot copies the listing-relevant fields of a live entry. Only the
// owner of e's shard may call it. It has no Ref and no Children (use=
// counts no child): with the shard at hand, Shard.Snapshot and
// Table.ChildCounts give both.
func Snapshot(e *flowtable.Entry) flowtable.EntrySnapshot {
	return flowtable.EntrySnapshot{Orig: e.Tuple(), Conn: e.Conn, Helper: e.Helper}
}

// L3Name returns the kernel's name and number for an IP version.
func L3Name(v uint8) (string, int) {
	if v == 6 {
		return "ipv6", 10
	}
	return "ipv4", 2
}

// L4Name returns the kernel's name of an L4 protocol ("unknown" for the
// generic tracker's protocols).
func L4Name(proto uint8) string {
	switch proto {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	case packet.ProtoICMP:
		return "icmp"
	case packet.ProtoICMPv6:
		return "icmpv6"
	case 132:
		return "sctp"
	case 33:
		return "dccp"
	case 136:
		return "udplite"
	case 47:
		return "gre"
	}
	return "unknown"
}

// Timeout returns the seconds until the entry expires, as the kernel
// prints them (truncated, never negative).
func Timeout(c *statemachine.Conn, now int64) int64 {
	d := c.Expires - now
	if d < 0 {
		return 0
	}
	return d / 1e9
}

// Format selects a listing format.
type Format int

const (
	// Proc is /proc/net/nf_conntrack: L3 name and number first.
	Proc Format = iota
	// Conntrack is `conntrack -L`.
	Conntrack
)

// Line formats one entry (no trailing newline). Accounting is off, as by
// default in the kernel (nf_conntrack_acct=0): no packets= bytes= fields.
func Line(es *flowtable.EntrySnapshot, now int64, f Format) string {
	var b strings.Builder
	if f == Proc {
		name, num := L3Name(es.Orig.L3)
		b.WriteString(pad(name, 8))
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(num))
		b.WriteByte(' ')
	}
	// /proc omits the timeout of an offloaded entry (ct_seq_show prints
	// it only without IPS_OFFLOAD); conntrack -L prints it (ctnetlink
	// dumps CTA_TIMEOUT for every entry and libnetfilter_conntrack prints
	// it when present), here the fast path's live one.
	writeTuples(&b, es, now, f == Conntrack || !es.Offloaded, true)
	b.WriteByte(' ')
	if flag := statusFlag(es); flag != "" {
		b.WriteString(flag)
		b.WriteByte(' ')
	}
	b.WriteString("mark=")
	b.WriteString(strconv.FormatUint(uint64(es.Mark), 10))
	b.WriteByte(' ')
	// Our zone is the VLAN id: the same 5-tuple on two VLANs is two
	// connections (the kernel needs explicit zones for that). With
	// --vlan-zones=false every key's VLAN is 0 (flowtable.ZoneOf), as the
	// kernel's zone without zones. The proc file always prints the zone,
	// conntrack -L only a non-default one.
	if f == Proc || es.Orig.VLAN != 0 {
		b.WriteString("zone=")
		b.WriteString(strconv.Itoa(int(es.Orig.VLAN)))
		b.WriteByte(' ')
	}
	if es.Helper != 0 {
		b.WriteString("helper=")
		b.WriteString(helpers.ID(es.Helper).String())
		b.WriteByte(' ')
	}
	b.WriteString("use=")
	b.WriteString(strconv.FormatUint(uint64(Use(es, f)), 10))
	return b.String()
}

// statusFlag returns the one status flag a listing or event line shows
// after the reply tuple: "[OFFLOAD]" for an entry in the XDP fast path,
// else "[ASSURED]" for an assured one, else "". Both the kernel and
// conntrack-tools print one of them, in that order of precedence, never
// both: /proc/net/nf_conntrack's ct_seq_show
// (net/netfilter/nf_conntrack_standalone.c) tests IPS_HW_OFFLOAD, then
// IPS_OFFLOAD, then IPS_ASSURED in an else-if chain, and `conntrack -L`
// and `-E` lines come from libnetfilter_conntrack's
// __snprintf_status_assured (src/conntrack/snprintf_default.c), the same
// chain, called after the reply tuple (and its counters) and before
// mark=. An offloaded entry is still ASSURED (its status bits are
// unchanged: --status ASSURED matches it, JSON lists both); the fast path
// is software, so it is never [HW_OFFLOAD].
func statusFlag(es *flowtable.EntrySnapshot) string {
	switch {
	case es.Offloaded:
		return "[OFFLOAD]"
	case es.Conn.Status&statemachine.StatusAssured != 0:
		return "[ASSURED]"
	}
	return ""
}

// Use returns the use= the kernel prints for es: the connection's reference
// count, one for the table plus one per live data connection created from
// its expectations (each child holds a reference on its master, so an FTP
// control connection with three data connections shows 4). ctnetlink
// (`conntrack -L`, ctnetlink_dump_use) prints the count as it is;
// /proc/net/nf_conntrack (ct_seq_show) takes a reference of its own before
// printing, so it shows one more: use=2 for a connection without children
// (Linux 6.18, checked in a netns).
func Use(es *flowtable.EntrySnapshot, f Format) uint32 {
	use := 1 + es.Children
	if f == Proc {
		use++
	}
	return use
}

// writeTuples writes the part a listing line and an event line share: L4
// name and number, the timeout (withTimeout), the TCP state (withState),
// the original tuple, [UNREPLIED] and the reply tuple, without a trailing
// space.
func writeTuples(b *strings.Builder, es *flowtable.EntrySnapshot, now int64, withTimeout, withState bool) {
	c := &es.Conn
	b.WriteString(pad(L4Name(es.Orig.Proto), 8))
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(int(es.Orig.Proto)))
	b.WriteByte(' ')
	if withTimeout {
		b.WriteString(strconv.FormatInt(Timeout(c, now), 10))
		b.WriteByte(' ')
	}
	if withState && es.Orig.Proto == packet.ProtoTCP {
		b.WriteString(c.State.String())
		b.WriteByte(' ')
	}
	b.WriteString(es.Orig.String())
	b.WriteByte(' ')
	if c.Status&statemachine.StatusSeenReply == 0 {
		b.WriteString("[UNREPLIED] ")
	}
	b.WriteString(es.Reply().String())
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}

// ExpectLine formats an expectation as /proc/net/nf_conntrack_expect does:
// seconds left, L3 and L4 numbers, the expected tuple (source port 0 and
// source address 0.0.0.0 or :: when any), the helper name.
func ExpectLine(x *flowtable.Expect, now int64) string {
	var b strings.Builder
	left := (x.Expires - now) / 1e9
	if left < 0 {
		left = 0
	}
	_, l3 := L3Name(x.L3)
	b.WriteString(strconv.FormatInt(left, 10))
	b.WriteString(" l3proto = ")
	b.WriteString(strconv.Itoa(l3))
	b.WriteString(" proto=")
	b.WriteString(strconv.Itoa(int(x.Proto)))
	src := x.Src
	if !x.SrcMask {
		src = packet.Addr{}
		if x.L3 == 4 {
			src = packet.AddrFrom4([4]byte{})
		}
	}
	b.WriteString(" src=")
	b.WriteString(flowtable.AddrString(src))
	b.WriteString(" dst=")
	b.WriteString(flowtable.AddrString(x.Dst))
	b.WriteString(" sport=")
	b.WriteString(strconv.Itoa(int(x.SrcPort)))
	b.WriteString(" dport=")
	b.WriteString(strconv.Itoa(int(x.DstPort)))
	if x.HelperID != 0 {
		b.WriteByte(' ')
		b.WriteString(helpers.ID(x.HelperID).String())
	}
	return b.String()
}

// EventPrefix returns the kind column of a `conntrack -E` line, right
// aligned as the tool prints it: "    [NEW] ", " [UPDATE] ", "[DESTROY] ".
func EventPrefix(kind string) string {
	return pad("", 7-len(kind)) + "[" + kind + "] "
}

// EventLine formats a conntrack event as `conntrack -E` prints what
// ctnetlink sends (Linux 6.x): the kind, then the entry without mark and
// use (not part of an event), without the timeout for DESTROY, and with the
// TCP state only when the event carries the protocol info (protoInfo:
// IPCT_PROTOINFO was set, or the entry is new or destroyed).
func EventLine(kind string, es *flowtable.EntrySnapshot, now int64, protoInfo bool) string {
	var b strings.Builder
	b.WriteString(EventPrefix(kind))
	writeTuples(&b, es, now, kind != "DESTROY", protoInfo)
	if flag := statusFlag(es); flag != "" {
		b.WriteByte(' ')
		b.WriteString(flag)
	}
	if es.Orig.VLAN != 0 {
		b.WriteString(" zone=")
		b.WriteString(strconv.Itoa(int(es.Orig.VLAN)))
	}
	if es.Helper != 0 && kind == "NEW" {
		// The helper is in the NEW message (IPCT_HELPER is cached with it).
		b.WriteString(" helper=")
		b.WriteString(helpers.ID(es.Helper).String())
	}
	return b.String()
}
