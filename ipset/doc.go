// Package ipset reads the sets of an `ipset save` file and answers, per
// packet, whether the packet is in a set the way the kernel's xt_set match
// (ip_set_test) does: for hash:ip, hash:net (with nomatch entries and
// longest-prefix lookup), hash:ip,port, hash:net,port, bitmap:port and
// list:set. Package rules uses it for `-m set --match-set`.
//
// Ownership: Load, Parse and Save are used by one goroutine while sets are
// loaded. A loaded *Sets and every *Set in it are immutable: any number of
// workers may call Test concurrently without locks, and Test does not
// allocate. A reload builds a new *Sets; package rules compiles it into a new
// rule set (with a new generation) that is published by swapping one
// pointer, so a worker sees either the old sets or the new ones, never a mix.
//
// Deliberate differences from the kernel: element timeouts are read but not
// applied (an element stays until the next reload; statewire's lookups read
// no clock), and counters, comments and skbinfo values are read and dropped
// (xt_set's --packets/--bytes matches are refused by package rules).
package ipset
