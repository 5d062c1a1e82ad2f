// Package perf is statewire's performance harness: it builds one lab per
// device under test (statewire as a subprocess, the Linux bridge, the Linux
// bridge with br_netfilter and nftables ct state, and XDP_REDIRECT between
// the ports as the kernel's ceiling), offers the same UDP traffic to each,
// interleaved trial by trial, and counts what arrives at a sink in XDP on
// the far host. It reports throughput at a fixed offered load, NDR (no
// loss) and PDR (0.5% loss) by binary search over the offered rate, CPU
// time per packet from /proc/stat and, optionally, latency percentiles from
// timestamps in the payload.
//
// Traffic: BPF_PROG_RUN in XDP live-frames mode (Generator) on the left
// host's veth; the frame goes through veth's XDP transmit into the ring of
// the bridge-side port A. Port A runs threaded NAPI, its thread pinned to
// the device CPU, so the generator (pinned to its own CPU) only fills the
// ring and the device's work is done by another core: the offered rate is
// the generator's, and frames the device cannot take are lost at the ring,
// as on a NIC.
//
// Counting: only at the Sink, an XDP program on the right host's veth that
// counts frames carrying the harness's magic and drops them. Nothing is
// read from a device's own counters.
//
// Ownership: a Run owns its labs, generators and sinks and drives them from
// one goroutine; nothing here is safe for concurrent use unless a doc
// comment says so. The harness needs root (namespaces, XDP, nftables).
package perf
