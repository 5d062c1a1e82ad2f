// Package conformance compares statewire with Linux conntrack. This file
// set is the kernel side: KernelStates replays a capture through a Linux
// bridge with br_netfilter and nftables in a lab (package lab) and reads
// back the user-land conntrack state the kernel gave every packet.
//
// Method (the one that produced /work/shared/pcaps/kernel-states): an
// nftables forward chain writes a distinct DSCP per `ct state` into every
// forwarded packet; each packet is injected alone, from the host on the side
// it came from, with an AF_PACKET socket, and captured at the far host with
// another AF_PACKET socket, where the DSCP is read. Conntrack runs with
// nf_conntrack_checksum=0, tcp_loose=1, tcp_be_liberal=0; helpers (ftp,
// tftp, irc) are attached by rule when asked. IPv4 header checksums are
// fixed and snaplen-truncated frames padded to wire length before
// injection; MAC addresses are rewritten to two fixed per-side addresses
// (conntrack ignores them, the bridge needs valid, consistent ones). Non-IP
// frames and IP fragments are not sent (Options.InjectFragments sends
// fragments; the fixtures were made without).
//
// Ownership: an Oracle (its lab and two sockets) belongs to one goroutine
// at a time. Needs root.
package conformance
