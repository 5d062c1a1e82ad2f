// Package helpers implements the conntrack helpers statewire supports: FTP
// (PORT, EPRT, 227 PASV reply, 229 EPSV reply), IRC DCC, TFTP and Amanda.
// Each one reads the payload of a packet on a connection it is attached to
// and returns the expectations that connection creates, as plain values; the
// pipeline (package bridge) turns them into entries of the expectation table
// kept by package flowtable, applying the per-master limit of the helper's
// Policy.
//
// The behaviour is Linux's (net/netfilter/nf_conntrack_{ftp,irc,tftp,
// amanda}.c, 6.x), byte for byte, including its quirks; the doc comment of
// each helper lists them and the few places where statewire differs.
//
// Ownership: the package has no global mutable state. Inspect reads the
// packet and payload it is given and writes only the State it is given and
// the caller's output array, so it is safe for any number of goroutines as
// long as each State (which belongs to one flow-table entry: the pipeline
// keeps one beside each entry slot) is touched only by the goroutine that
// owns that entry's shard. Inspect does not allocate,
// read a clock, take a lock or make an interface call.
package helpers
