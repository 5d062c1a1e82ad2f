// Package lab builds and tears down a small network-namespace lab for tests,
// the perf harness and the kernel conformance oracle:
//
//	[left ns]  LeftIf  <-veth->  PortA  [bridge ns]  PortB  <-veth->  RightIf  [right ns]
//	198.18.0.1/24                (Mode decides what joins A and B)         198.18.0.2/24
//	2001:2::1/64                                                           2001:2::2/64
//
// The two hosts share one L2 segment through whatever sits in the bridge
// namespace: nothing (Mode None: statewire attaches to PortA/PortB), a Linux
// bridge (KernelBridge) or a Linux bridge with br_netfilter and an nftables
// ruleset using conntrack (KernelBridgeConntrack, the kernel reference).
//
// Every object carries one prefix, "sw" plus six random hex digits, so that
// Close removes exactly what this Lab made and RemoveStale can find the
// leftovers of killed runs. Namespaces are made with `ip netns add`, so
// `ip netns exec NAME ...` works on them from a shell while a test is paused.
//
// Offloads: by default the veths keep the kernel's defaults, which are what
// a first-time user's containers and namespaces have (measured on 6.18:
// tx-checksumming, rx-checksumming, TSO and GSO on, GRO off). A socket on
// such a veth hands its TCP and UDP frames over with CHECKSUM_PARTIAL: the
// checksum field holds the pseudo-header sum and nothing completes it when
// XDP or AF_XDP takes the raw bytes; statewire recognises and completes it
// (packet.CompleteChecksum). TSO does not make super-frames here: a veth
// whose peer has an XDP program loses TSO (veth_fix_features drops
// NETIF_F_GSO_SOFTWARE), so the host's stack segments to the MTU before
// the veth (GSO in software, each segment still partial). A frame XDP
// redirects into a veth is dropped unless the veth's peer runs NAPI (GRO
// on, or an XDP program): with the default GRO off, statewire's
// --offload=auto runs without the fast path and logs the ethtool command
// that enables it.
//
// Options.OffloadsOff turns checksum offload, TSO, GSO and GRO off on every
// veth instead, so that every frame on a veth looks like a frame on a
// cable: for the kernel oracle and the perf harness, whose frames must be
// what a wire carries, and for tests about exactly that.
//
// Ownership: a *Lab is not safe for concurrent Close; Do and Command may be
// called from any goroutine (Do locks its own OS thread). All methods shell
// out to ip, sysctl, ethtool and nft, so the lab needs root (see
// RequireRoot).
package lab
