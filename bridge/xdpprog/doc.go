// Package xdpprog loads and attaches statewire's XDP program: for every
// frame it calls bpf_redirect_map(&xsks, ctx->rx_queue_index, fallback), so
// the frame goes to the AF_XDP socket registered for that queue, and a frame
// on a queue without a socket gets the fallback action (the kernel uses the
// low bits of the flags argument as the action on a map miss): XDP_DROP by
// default, XDP_PASS when Options.PassOnMiss is set.
//
// The program is assembled from cilium/ebpf asm instructions in Go, so no
// clang is needed to build statewire.
//
// Each Program has its own XSKMAP, indexed by queue: load one Program per
// port (port A and port B both have a queue 0). Attach uses a bpf_link, so
// the program goes away when the process dies, however it dies. A program
// attached the old way (netlink, e.g. `ip link set dev X xdp obj ...`, or a
// previous tool) is not tied to a process; Attach replaces it and says so
// through Options.Logf.
//
// Ownership: a Program is used by the goroutine that starts and stops the
// datapath (Load, Register, Attach, Close); nothing here is on the packet
// path. Attach and Register work on the network namespace of the calling
// OS thread: call them from the thread that is in the interface's
// namespace (lab.Do in tests).
package xdpprog
