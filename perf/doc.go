// Package perf is statewire's performance harness: it builds one lab per
// device under test (statewire as a subprocess, the Linux bridge, the Linux
// bridge with br_netfilter and nftables ct state, XDP_REDIRECT between
// the ports as the kernel's ceiling, and xdp-lookup, XDP_REDIRECT after one
// flow-map look-up per frame: the floor of any flow-keyed fast path, which
// shows what the look-up alone costs as flows outgrow the caches), offers the same traffic to each (UDP,
// or TCP data on connections opened by real handshakes: Options.Proto),
// interleaved trial by trial, and counts what arrives at a sink in XDP on
// the far host. It reports throughput at the generator's full rate, NDR (no
// loss) and PDR (0.5% loss) by binary search over the offered rate, CPU
// time per packet on the device CPU from /proc/stat, latency percentiles
// from timestamps in the payload and, optionally, a perf profile.
//
// Traffic: BPF_PROG_RUN in XDP live-frames mode (Generator) on the left
// host's veth, pinned to the generator CPU. The program rewrites the UDP
// ports from a per-CPU counter modulo the flow count and returns XDP_TX,
// which live-frames mode turns into a transmit out of that veth, i.e. into
// the ring of the bridge-side port A. For the duration of a Send the
// program is also attached to that veth: BPF_PROG_RUN otherwise adds it to
// and removes it from the kernel's XDP dispatcher on every call, which
// costs ~1 ms of CPU per call and caps the generator near 3 Mpps; anchored,
// a call costs ~20 µs and the generator reaches 15-24 Mpps into a sink.
// Pacing spins between calls (no sleep: a sleep on a busy machine
// oversleeps and the catch-up burst overflows the device's queues).
//
// Jumbo frames (Options.MTU, `--mtu N`): every link of every lab gets
// MTU N, frame sizes up to N+18 are allowed (refused above, with the MTU
// that would take them), statewire sizes its buffers from the ports' MTU as
// `statewire run` does (a chain of AF_XDP buffers beyond one), and every
// XDP program of the harness is loaded with frags support (a veth refuses
// one without above MTU ~3500). BPF_PROG_RUN cannot send such frames: the
// kernel refuses live-frames mode for data beyond one page (LiveMaxFrame,
// 3412 B; test_run builds fragments only without live frames). Frames
// above that are sent by the packet generator (GenPacket, packet.go): an
// AF_PACKET socket with a TX ring whose slots hold the template, only the
// ports rewritten per frame, the qdisc bypassed, pinned and reniced as the
// live one. It costs far more per frame than live frames (an skb each, and
// on veth the kernel copies the ring's pages when it forwards the skb,
// skb_copy_ubufs, then again into port A's page pool for XDP), about
// 0.37 Mpps at 1518 B and 0.2 Mpps at 9018 B on the lab machine against
// millions with live frames: a run with any size above LiveMaxFrame sends
// every size with it, so its figures compare like with like, and they are
// bounded by the generator CPU (see RESULTS.md, "Jumbo frames").
//
// Where the work runs (Steer): veth schedules port A's NAPI poll on the CPU
// that transmitted, i.e. the generator's. In the default SteerRPS the
// kernel bridges' port A has an XDP_PASS program (veth needs one for XDP
// transmit into it) and RPS to the device CPU, where the bridge,
// br_netfilter and conntrack, port B and the sink run. Port B gets the same
// XDP_PASS and RPS: the TCP and CPS traffic also comes from the right
// (until that RPS existed a kernel bridge forwarded that half on the
// generator CPU, a second CPU statewire did not have); statewire's XDP
// program and its copy into the AF_XDP ring run on the generator CPU, its
// workers (taskset) on the device CPU; XDP_REDIRECT runs entirely on the
// generator CPU (it is the ceiling, generator included). A device that
// falls behind loses frames at its queue (RPS backlog, AF_XDP RX ring,
// veth ring), as on a NIC.
//
// statewire runs twice, as device statewire (its default --offload=auto)
// and as statewire-offload-off (--offload=off), in identical labs: the
// left host's veth has GRO on, so that auto finds NAPI behind both ports
// (the sink's XDP program gives it to the right host's veth) and selects
// the XDP fast path; before that, auto depended on whether the readiness
// probe's generator program happened to be attached to the left veth when
// statewire checked. The fast path, like XDP_REDIRECT, forwards in port
// A's NAPI poll, i.e. on the generator CPU; its slow path (first packets,
// offers) runs in the workers on the device CPU.
//
// Several queues and workers (Options.Queues, Workers, GenCPUs; `--queues
// N --workers 1,2 --gen-cpus 0,1`, workers.go, genmulti.go): every veth of
// every lab gets N queues; each statewire device runs once per worker
// count K as NAME/wK (`--cores K --queues N`, K > 1 pinned from the device
// CPU on), interleaved with the rest, and the report gives each count's
// rates over the first's. veth puts a live frame on port A's RX queue
// CPU mod N of the CPU that sent it, so a generator on one CPU fills one
// queue; with GenCPUs it runs one thread per CPU, thread k sending the
// flows f mod len(GenCPUs) == k, which spreads them over the queues by
// flow as RSS does. Each trial records every generator and device CPU's
// split (Trial.CPUs). On a 2-CPU machine the workers share the CPUs with
// the generator and port A's receive: see RESULTS.md.
//
// Shared machine: the generator, the devices' threads, statewire and
// ksoftirqd run at nice -20 and the harness's scheduler autogroup is
// reniced too (with kernel.sched_autogroup_enabled every session is a
// group and groups share a CPU equally whatever the nice values inside);
// both are restored at the end (not after a SIGKILL). Interleaving trials spreads the remaining
// drift over all devices alike.
//
// IMIX (FrameSizes entry IMIX, `--sizes ...,imix`): the classic simple
// IMIX, Ethernet frames of 64, 576 and 1500 B (FCS included) in the ratio
// 7:4:1, mixed frame by frame by the generator (bpf_xdp_adjust_tail from a
// 1500 B template, lengths and IPv4 checksum rewritten); rates are given in
// Mpps and in layer-2 Gbit/s (Gbps).
//
// Connections per second (Options.Mode, cps.go, cpsend.go): complete TCP
// sessions of eight 64 B frames (SYN, SYN/ACK, ACK, data each way, FIN
// each way, final ACK), each on a fresh 5-tuple, played by two XDP
// programs on the hosts' veths: each answers a frame of the session with
// the next one by XDP_TX, and the client's is also the generator,
// BPF_PROG_RUN live frames on a SYN template, paced as the flood generator.
// No socket, no copy to user space: back to back (no device) the
// endpoints complete millions of connections a second on one CPU, where
// the AF_XDP endpoints before them (asavie/xdp, copy mode) capped CPS at
// 56 000-130 000 conn/s, under the devices. A connection is complete when
// its final ACK arrived at the client, as the client's program counts it;
// every step is counted where it arrives. CPS is the highest completed
// rate of a trial in which at least CPSComplete (99.5%) of the opened
// connections complete, by a geometric binary search over the opening rate
// from 1 000 conn/s up to the endpoints' own ceiling (client and server
// directly connected, no device); a device that passes at that ceiling is
// reported as "at least". The server's program runs where the device
// delivers to the right host (for statewire, on the device CPU, as the
// receive of any endpoint would): one short XDP run per frame.
//
// Counting: only at the Sink, an XDP program on the right host's veth that
// counts frames carrying the harness's magic and drops them. Nothing is
// read from a device's own counters.
//
// Ownership: a Run owns its labs, generators and sinks and drives them from
// one goroutine; nothing here is safe for concurrent use unless a doc
// comment says so. The harness needs root (namespaces, XDP, nftables).
package perf
