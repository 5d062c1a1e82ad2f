// Package rulegen generates random rule sets and matching traffic for the
// differential test of the rules package against the kernel
// (e2e/rulediff_test.go): from a seed, an iptables-save file for IPv4 and
// one for IPv6 (filter table: FORWARD with a random policy, user chains
// reached by -j and -g, RETURN; a raw table with NOTRACK now and then)
// drawing on the matches and targets package rules reads, with `!`
// negations, and a list of Ethernet frames in conversations (TCP
// handshakes and teardowns, odd TCP flag combinations, UDP, UDP-Lite, ICMP
// and ICMPv6 queries, ICMP errors quoting a connection or nothing) so that
// ctstate NEW, ESTABLISHED, RELATED, INVALID and UNTRACKED all occur.
//
// Each rule is built around a frame of the traffic (its example): every
// match is drawn so that the example meets it or, about as often, just
// misses it (a prefix, range or port list with its edge next to the
// example's value), and the address, port, TTL, length and TOS pools the
// frames draw from hold the values on both sides of those edges.
//
// What is left out of random generation, and why, is said next to the
// generator of each match (search for "not generated").
//
// Ownership: none needed. Generate is a pure function of its Options; it
// starts no goroutine and keeps no state between calls.
package rulegen
