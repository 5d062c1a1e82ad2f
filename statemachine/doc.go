// Package statemachine holds the per-protocol connection trackers of Linux
// netfilter conntrack: TCP (transition table, window tracking, loose pickup),
// UDP, ICMP/ICMPv6 and generic, with their timeouts and the user-land state
// (NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED) of each packet.
//
// New validates the first packet of a connection and initialises a Conn;
// Update runs every later packet and says what the caller must do with the
// entry (Result.Kill, Result.Reopen). The behaviour follows mainline
// net/netfilter/nf_conntrack_proto_{tcp,udp,icmp,icmpv6,generic}.c and
// spec/conntrack.md §0–§5.
//
// Ownership: nothing here reads a clock, takes a lock or does I/O; time is
// an argument. A Conn is read and written only by the goroutine that owns
// its flow-table shard. A Config is read-only while workers use it: to
// change it at run time, build a new Config (Set on a copy) and publish it.
// The package has no global mutable state.
package statemachine
