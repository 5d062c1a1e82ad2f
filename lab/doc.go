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
// Offloads: the hosts' veths and the bridge-side ports have checksum
// offload, TSO, GSO and GRO turned off. A socket on a veth with tx checksum
// offload hands the frame over with CHECKSUM_PARTIAL, i.e. a TCP/UDP checksum
// that is never completed when XDP or AF_XDP takes the raw bytes; TSO/GSO/GRO
// make super-frames larger than the MTU that XDP on veth cannot take (it
// needs a linear frame that fits one page) and that do not exist on a real
// wire. Turning them off makes every frame on a veth look like a frame on a
// cable, which is what statewire and the kernel oracle must both see.
//
// Ownership: a *Lab is not safe for concurrent Close; Do and Command may be
// called from any goroutine (Do locks its own OS thread). All methods shell
// out to ip, sysctl, ethtool and nft, so the lab needs root (see
// RequireRoot).
package lab
