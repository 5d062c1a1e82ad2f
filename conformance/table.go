package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Entry is one connection of a conntrack listing, parsed from a line of
// /proc/net/nf_conntrack or `conntrack -L -o extended` (the same layout):
// statewire's ctlist.Line and the kernel's dump go through the same parser,
// so the comparison never depends on how either side spaces its columns.
type Entry struct {
	L3        string // "ipv4", "ipv6"
	Proto     string // "tcp", "udp", "icmp", "icmpv6", "unknown"...
	Timeout   int64  // seconds to expiry
	State     string // TCP state ("" for other protocols)
	Orig      string // original tuple, "src=… dst=… sport=… dport=…" (addresses canonical)
	Reply     string // reply tuple
	Unreplied bool   // [UNREPLIED]
	Assured   bool   // [ASSURED]
	Zone      int    // zone= (0 when absent)
	Helper    string // helper= ("" when none)
	Line      string // the line as read
}

// Key identifies the connection across listings: L3, L4 and the original
// tuple. The zone is left out on purpose: statewire lists the VLAN id as
// the zone, the kernel bridge uses zone 0 (see CONFORMANCE.md).
func (e *Entry) Key() string { return e.L3 + " " + e.Proto + " " + e.Orig }

// Flags returns "[UNREPLIED]", "[ASSURED]", both or "" for messages.
func (e *Entry) Flags() string {
	var f []string
	if e.Unreplied {
		f = append(f, "UNREPLIED")
	}
	if e.Assured {
		f = append(f, "ASSURED")
	}
	if len(f) == 0 {
		return "-"
	}
	return strings.Join(f, ",")
}

// ParseEntry parses one listing line. Counters (packets=, bytes=), mark=,
// use=, secctx= and unknown bracketed flags are ignored.
func ParseEntry(line string) (Entry, error) {
	f := strings.Fields(line)
	e := Entry{Line: line}
	if len(f) < 5 {
		return e, fmt.Errorf("conformance: short conntrack line %q", line)
	}
	e.L3, e.Proto = f[0], f[2]
	t, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil {
		return e, fmt.Errorf("conformance: timeout in %q: %w", line, err)
	}
	e.Timeout = t
	rest := f[5:]
	if len(rest) > 0 && !strings.Contains(rest[0], "=") && !strings.HasPrefix(rest[0], "[") {
		e.State, rest = rest[0], rest[1:]
	}
	var tuples [2][]string
	n := -1
	for _, tok := range rest {
		switch tok {
		case "[UNREPLIED]":
			e.Unreplied = true
			continue
		case "[ASSURED]":
			e.Assured = true
			continue
		}
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			continue // other flags: [OFFLOAD], [HW_OFFLOAD]...
		}
		switch k {
		case "src":
			n++
			if n > 1 {
				return e, fmt.Errorf("conformance: three tuples in %q", line)
			}
			fallthrough
		case "dst", "sport", "dport", "type", "code", "id":
			if n < 0 {
				return e, fmt.Errorf("conformance: %s before src= in %q", k, line)
			}
			if a, err := netip.ParseAddr(v); err == nil {
				v = a.String()
			}
			tuples[n] = append(tuples[n], k+"="+v)
		case "zone":
			e.Zone, _ = strconv.Atoi(v)
		case "helper":
			e.Helper = v
		}
	}
	if n != 1 {
		return e, fmt.Errorf("conformance: want two tuples in %q", line)
	}
	e.Orig, e.Reply = strings.Join(tuples[0], " "), strings.Join(tuples[1], " ")
	return e, nil
}

// ParseTable parses a listing, one entry per non-empty line, sorted by Key.
func ParseTable(text string) ([]Entry, error) {
	var out []Entry
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := ParseEntry(line)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// KernelTable lists the kernel's connection table in the lab's bridge
// namespace (`conntrack -L -o extended`, which is the /proc/net/nf_conntrack
// layout). Expired entries that the garbage collector has not reaped yet
// are not dumped by the kernel, as in /proc.
func (o *Oracle) KernelTable(ctx context.Context) ([]Entry, error) {
	out, err := o.lab.Run(ctx, o.lab.BridgeNS, "conntrack", "-L", "-o", "extended")
	if err != nil {
		return nil, err
	}
	return ParseTable(out)
}

// Sysctl sets one `key=value` sysctl in the lab's bridge namespace, where
// the oracle's conntrack lives. It fails for a sysctl the namespace does
// not own (e.g. one that is read-only outside the initial namespace).
func (o *Oracle) Sysctl(ctx context.Context, kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("conformance: sysctl %q: want key=value", kv)
	}
	// sysctl(8) exits 0 even when the write is refused (a read-only
	// entry), so the value is read back.
	if _, err := o.lab.Run(ctx, o.lab.BridgeNS, "sysctl", "-q", "-w", kv); err != nil {
		return err
	}
	got, err := o.lab.Run(ctx, o.lab.BridgeNS, "sysctl", "-n", key)
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != val {
		return fmt.Errorf("conformance: sysctl %s in namespace %s: still %s after writing %s (not writable there)", key, o.lab.BridgeNS, strings.TrimSpace(got), val)
	}
	return nil
}

// TableDiff is one difference between the final tables.
type TableDiff struct {
	Key    string
	Kernel *Entry // nil: only statewire has the connection
	Ours   *Entry // nil: only the kernel has it
	What   string // what differs: "missing", "entries", "state", "flags", "timeout", "helper", "reply"
	Note   string // detail, e.g. the zones of statewire's entries when the counts differ
}

// CompareTables compares two listings by Key: presence, TCP state,
// ASSURED/UNREPLIED, helper, and timeout within tolerance seconds. The
// kernel's timeouts run down in real time during a replay while
// statewire's are read at the capture's last instant, hence the tolerance.
func CompareTables(kernel, ours []Entry, tolerance int64) []TableDiff {
	// Several entries may share a key: statewire keys by VLAN too (zone),
	// the kernel bridge does not. The first of each is compared, a count
	// mismatch is its own difference.
	km, kn := map[string]*Entry{}, map[string][]int{}
	for i := range kernel {
		k := kernel[i].Key()
		if km[k] == nil {
			km[k] = &kernel[i]
		}
		kn[k] = append(kn[k], kernel[i].Zone)
	}
	om, on := map[string]*Entry{}, map[string][]int{}
	for i := range ours {
		k := ours[i].Key()
		if om[k] == nil {
			om[k] = &ours[i]
		}
		on[k] = append(on[k], ours[i].Zone)
	}
	keys := make([]string, 0, len(km)+len(om))
	for k := range km {
		keys = append(keys, k)
	}
	for k := range om {
		if km[k] == nil {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []TableDiff
	for _, k := range keys {
		ke, oe := km[k], om[k]
		var what []string
		note := ""
		switch {
		case ke == nil || oe == nil:
			what = append(what, "missing")
		default:
			if len(kn[k]) != len(on[k]) {
				what = append(what, "entries")
				note = fmt.Sprintf("kernel %d in zones %v, statewire %d in zones %v", len(kn[k]), kn[k], len(on[k]), on[k])
			}
			if ke.State != oe.State {
				what = append(what, "state")
			}
			if ke.Unreplied != oe.Unreplied || ke.Assured != oe.Assured {
				what = append(what, "flags")
			}
			if ke.Helper != oe.Helper {
				what = append(what, "helper")
			}
			if d := ke.Timeout - oe.Timeout; d > tolerance || d < -tolerance {
				what = append(what, "timeout")
			}
			if ke.Reply != oe.Reply {
				what = append(what, "reply")
			}
		}
		if len(what) > 0 {
			out = append(out, TableDiff{Key: k, Kernel: ke, Ours: oe, What: strings.Join(what, ","), Note: note})
		}
	}
	return out
}

// String describes the difference on one line.
func (d TableDiff) String() string {
	side := func(e *Entry) string {
		if e == nil {
			return "(none)"
		}
		st := e.State
		if st == "" {
			st = "-"
		}
		h := ""
		if e.Helper != "" {
			h = " helper=" + e.Helper
		}
		return fmt.Sprintf("%s %s %ds%s", st, e.Flags(), e.Timeout, h)
	}
	s := fmt.Sprintf("%s: %s: kernel %s, statewire %s", d.Key, d.What, side(d.Kernel), side(d.Ours))
	if d.Note != "" {
		s += " (" + d.Note + ")"
	}
	return s
}
