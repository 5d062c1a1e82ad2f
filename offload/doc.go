// Package offload is statewire's XDP fast path (DESIGN.md, "Two levels:
// the XDP fast path and the AF_XDP slow path"): the C program offload.c,
// its bpf2go bindings, the layout of the fast-path flow map and the loader.
// It replaces bridge/xdpprog.
//
// # What the program takes
//
// A frame is forwarded in the kernel (bpf_redirect_map to the other port's
// DEVMAP slot) only when all of these hold; anything else goes to the
// AF_XDP socket of its queue exactly as bridge/xdpprog's program sent it
// (bpf_redirect_map(&xsks, rx_queue_index, XDP_DROP or XDP_PASS)):
//
//   - it parses as packet.Parse's fast path parses it: Ethernet with 0-2
//     802.1Q/802.1ad tags; IPv4 with IHL 5, not a fragment, total length
//     within the frame (padding allowed); or IPv6 whose next header is TCP
//     or UDP (no extension header); TCP with 20 <= data offset <= segment,
//     or UDP with 8 <= length <= segment;
//   - its flowtable.Key (built byte for byte, canonical order, innermost
//     VLAN id) is in the flow map (Offer put it there);
//   - the verdict byte cached for its direction is exactly
//     1 | ctstate<<1 | port<<6: ACCEPT, computed for the CtState the Go
//     tracker gives this packet (statemachine ctinfo) and for the port it
//     arrived on;
//   - TCP: the entry is ESTABLISHED with SEEN_REPLY and ASSURED, the packet
//     is ACK or ACK|URG among FIN|SYN|RST|ACK|URG, and statemachine
//     tcpInWindow accepts it (strictly, or through BE_LIBERAL / be_liberal /
//     window tracking off); a packet the window check would IGNORE or call
//     INVALID is not taken;
//   - UDP: an unreplied flow's original-direction packet, or a replied
//     flow's packet within 2 s of its creation, or an ASSURED flow's packet
//     (the packet that would make a replied flow ASSURED is not taken);
//   - its L4 checksum verifies, when the flow was offered with checksum
//     verification (segments over 4 KiB are not taken then);
//   - the entry has not expired (Expires <= now) and is not being taken
//     back.
//
// What it never takes: SYN, FIN, RST, packets without ACK, any packet that
// changes the TCP state or a status bit, the first reply, ICMP of any kind,
// fragments, IPv4 options, IPv6 extension headers, non-IP frames, flows
// with a helper (Offer refuses them), UDP-Lite, SCTP, DCCP and the generic
// protocols, frames more than two VLAN tags deep.
//
// For the packets it takes, the program does what statemachine.Update
// does: the window data of both directions (td_end, td_maxend, td_maxwin,
// td_maxack, DATA_UNACKNOWLEDGED, MAXACK_SET), last_seq/ack/end/win,
// last_dir, last_index and the retransmission count, and Expires from the
// post-packet state (max_retrans, unacknowledged and zero-window timeouts),
// plus per-direction packet and byte (IP length) counters and last-seen.
//
// # Userspace is the authority
//
// Offer copies an entry's state into the map; TakeBack reads it back into
// the entry and deletes it. TakeBack is exact: it first clears the flow's
// generation in the memory-mapped revoked array (one atomic store), then
// reads the value with BPF_F_LOCK. The program checks the generation
// inside the value's spin lock, so a packet either was judged and updated
// the value before TakeBack's locked read (its effect is in what TakeBack
// returns) or sees the cleared generation and goes to the slow path. A
// program still holding a pointer to a deleted value finds a generation
// that is no longer current, even when the slot has been given to another
// flow. What remains: a frame judged before the read may still be on its
// way out of the other port while userspace judges the next one, so two
// frames of one flow can leave in an order other than they came when the
// flow moves between the levels (the same as between two CPUs).
//
// # Time
//
// The program's clock is bpf_ktime_get_ns (CLOCK_MONOTONIC), the same
// clock Go's monotonic time reads. Options.Now is the datapath's clock
// (bridge Datapath.Now: time.Since(epoch)+1s); Load measures the offset
// once, and every time crossing the boundary is converted with it, so
// Expires read back is exactly last packet's time + the timeout Go's
// Update would have chosen.
//
// Ownership: Load, Attach, SetPorts, Register and Close belong to the
// goroutine that starts and stops the datapath. Offer, TakeBack and Peek
// may be called from any worker (a mutex guards the slot allocator only).
package offload
