// Package statemachine holds the per-protocol connection trackers of Linux
// netfilter conntrack: TCP (transition table, window tracking, loose pickup),
// UDP, ICMP/ICMPv6 and generic, with their timeouts and the user-land state
// (NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED) of each packet.
//
// Nothing here reads a clock, takes a lock or does I/O: time is an argument,
// and a Conn is touched only by the goroutine that owns its flow-table shard.
package statemachine
