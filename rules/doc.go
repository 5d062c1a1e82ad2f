// Package rules reads an iptables-save / ip6tables-save rule set, compiles
// it into flat per-rule match structs, and evaluates it per packet: the raw
// table (NOTRACK, CT --helper) before conntrack and the filter table's
// FORWARD chain after it. The filter table's REJECT target makes the
// verdict a DROP carrying the answer to send (Verdict.Reject,
// target_reject.go); LOG rules the packet matched are reported in
// Ctx.Logs by FilterCtx (FilterLog without the rest of the context;
// target_log.go) for the caller to write.
//
// Ownership: a Loader is used by one goroutine while rules are loaded. A
// compiled *RuleSet is immutable but for its -m recent lists (each behind
// a lock, taken only by packets that reach a -m recent rule) and its -m
// connlimit counts (behind 64 striped locks, taken only by packets that
// reach a connlimit rule and by ReleaseConn): any number of
// workers may call Raw, Filter, FilterLog, FilterCtx and the accessors on it
// concurrently. A Local (the -m limit buckets, the -m hashlimit
// tables) belongs to one worker, a
// ConnCounts (the connlimit counts a connection is in) to the owner of its
// connection, and a Ctx to one evaluation. Replacing the rule set
// means compiling a new one (it gets a new Generation) and publishing the
// pointer; verdicts cached under the old generation then miss by themselves.
// The ipsets that -m set names (Loader.SetIPSets) are compiled into the rule
// set and are as immutable as it: new sets mean a new RuleSet.
//
// The bridge has exactly two ports, A (index 0) and B (index 1). Interface
// names in --physdev-in/--physdev-out and in -i/-o are resolved to port
// indices at Compile time. On a Linux bridge with br_netfilter, -i/-o in the
// FORWARD chain would name the bridge device (br0); statewire has no bridge
// device, so -i/-o are treated exactly like --physdev-in/--physdev-out.
package rules
