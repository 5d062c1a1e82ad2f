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
// host's veth, pinned to the generator CPU; the frame goes through veth's
// XDP transmit into the ring of the bridge-side port A, whose NAPI poll
// runs in the generator's softirq on the same CPU (veth schedules NAPI
// where the transmit happened). What the device does on port A's receive
// therefore shares the generator's CPU, and each device is arranged so that
// its forwarding work runs on the other CPU (DUTCPU):
//   - kernel bridges: XDP_PASS on port A (veth needs an XDP program for
//     XDP transmit into it), then RPS steers the skb to DUTCPU, where the
//     bridge, br_netfilter/conntrack, port B and the sink run; a device
//     that falls behind loses frames at DUTCPU's backlog;
//   - statewire: its XDP program and the copy into the AF_XDP ring run on
//     the generator CPU, its workers on DUTCPU (taskset), its transmit and
//     the sink there too; it loses frames at its RX ring;
//   - xdp-redirect: everything stays on the generator CPU (there is no
//     queue to steer by); it is the ceiling, generator included.
//
// Threaded NAPI would move port A's poll to another CPU, but live frames
// then return their pages to the generator's page pool from a remote CPU
// and the generator falls below 0.5 Mpps, so it is not used.
//
// Counting: only at the Sink, an XDP program on the right host's veth that
// counts frames carrying the harness's magic and drops them. Nothing is
// read from a device's own counters.
//
// Ownership: a Run owns its labs, generators and sinks and drives them from
// one goroutine; nothing here is safe for concurrent use unless a doc
// comment says so. The harness needs root (namespaces, XDP, nftables).
package perf
