// Package offload is statewire's XDP fast path (DESIGN.md, "Two levels:
// the XDP fast path and the AF_XDP slow path"): the C program offload.c,
// its bpf2go bindings, the layout of the fast-path flow map and the loader.
// It replaced bridge/xdpprog: the same program serves --offload=off,
// loaded slow-only (Options.SlowOnly: no parse, every frame to the AF_XDP
// socket of its queue, as xdpprog's five instructions did).
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
//     VLAN id, or 0 with Options.IgnoreVLAN: --vlan-zones=false) is in
//     the flow map (Offer put it there);
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
//     verification (segments over 4 KiB are not taken then); or it is a
//     partial checksum (CHECKSUM_PARTIAL from a sender that offloads it:
//     the field holds the folded pseudo-header sum, packet.Packet's
//     ChecksumPartial), with or without verification: csum_partial writes
//     the real checksum into the frame after the last punt, as the worker
//     does (packet.CompleteChecksum), and counts it (PortStats.CsumCompleted);
//     without verification only a field equal to the pseudo-header sum
//     costs the segment's sum, and such a segment over 4 KiB is punted;
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
// the entry and deletes it. TakeBack is exact. An active flow's lock is its
// word in the memory-mapped revoked array: the flow's generation while
// free, generation | busy (bit 62) while a program updates the value (bit
// 63 marks a pending offer, below, which the program never updates). The
// program takes the lock with one compare-and-swap from the generation it
// read in the value, which is also the revocation check; TakeBack swaps
// the generation for 0 (spinning while a program holds the lock, a few
// dozen ns), then reads the value. Both sides' atomics are fully ordered,
// so a packet either took the lock before the swap (its update is in what
// TakeBack reads) or finds 0 and goes to the slow path. A program still
// holding a pointer to a deleted value compares against a generation that
// is no longer current, even when the slot has been given to another
// flow. A frame that finds the lock held for 1024 attempts (the other
// direction on another CPU, or Peek's fallback) is punted (PuntBusy): the
// lock is never waited for unboundedly in softirq. Peek reads twice and
// keeps a read whose usage fields the next read repeats; on a flow so busy
// that none does it takes the lock itself for one lookup. The value keeps
// a bpf_spin_lock only for Activate's in-place update (BPF_F_LOCK); the
// program does not take it. This replaced the program's bpf_spin_lock,
// which disables interrupts and costs two helper calls: ~40 ns of a ~210
// ns taken frame under BPF_PROG_RUN on this machine (perf/RESULTS.md).
// What remains is reordering at the moment a flow moves between the
// levels (below).
//
// # Moving between the levels
//
// Within one level a flow's frames leave in the order they came, per
// direction: the program forwards a port's frames in its NAPI order, and
// the worker takes a port's RX ring in order and writes the accepted
// frames to the other port's TX ring in the same order (frames handed to
// the owning worker keep their order over its SPSC ring). Both levels then
// enqueue on the same egress (on veth, the peer's ring when it has one RX
// queue; with more, as between two CPUs), so only
// frames that are in different levels at the same moment can swap. That
// happens only when the flow moves, and only in two ways:
//
//   - Moving in (OfferPending, then Activate: two phases). When the
//     entry appears, frames of the flow the program punted (miss) before
//     are still queued: in the offering batch, the XSK RX rings, a hand-off
//     ring. With a one-phase Offer the first of them reached the pipeline
//     as a frame of an offered flow and took it back at once (measured:
//     33 of 34 offers undone at 20 000/s, 352 of 353 at 100 000/s), and the
//     frames the program forwarded meanwhile overtook them. So the
//     pipeline offers pending: revoked[slot] = gen | bit 63 | count<<32.
//     The program takes no frame of a pending flow; it numbers every frame
//     of it it punts (count+1, by compare-and-swap on revoked[slot]) and
//     writes a Mark (slot, generation, number) in front of the frame as XDP
//     metadata (bpf_xdp_adjust_meta: AF_XDP copies data_meta..data_end
//     into the UMEM in copy mode, xsk_copy_xdp, and zero-copy frames are
//     the UMEM; the worker reads the 16 bytes in front of each received
//     frame and clears them, so a reused UMEM frame carries no stale Mark).
//     The pipeline judges every frame of a pending flow on its table,
//     which is the flow's state (the program took nothing): an unmarked
//     one was punted before the offer (PreOffer), a marked one after
//     (Marked). Once it has judged the frame with the highest number the
//     program gave (a frame lost on the way, at a full RX ring, is as if
//     the wire had lost it), and a marked frame of each direction with a
//     verdict (or waited for one: pendingWait, 2 ms, or as long again as
//     the first Mark took to come), Activate writes the table's
//     current state into the value and swaps revoked[slot] from exactly
//     gen | bit 63 | count<<32 to gen: if the program numbered one more
//     frame in between, the swap fails and the next marked frame tries
//     again. So at the activation every frame the program punted while
//     pending has been judged, and every frame punted before the offer
//     that came in front of a marked one on its ring too (a port's queue
//     is FIFO, and so are the worker's batches and hand-off rings); the
//     value holds the state after all of them; and the worker activates
//     only once every frame it put on a TX ring has left it (a copy-mode
//     sendto sends 32: it kicks until the ring is empty), so the
//     program's first taken frame follows them. What remains: a frame
//     numbered while pending that reaches the pipeline after the
//     activation (from the other direction's ring) is dropped, as under
//     overload (below); a frame punted before
//     the offer on a queue (RSS, several queues per port) or in a
//     direction that delivered no marked frame before the activation
//     reaches the pipeline after it, as a frame of an active flow, and
//     takes the flow back exactly as any punted frame does (below). A pending offer the entry no longer qualifies for (its state
//     or verdicts changed), a Settings change or a removal cancels it:
//     TakeBack of a pending offer deletes the map entry and leaves the
//     table's entry as it is (Cancelled). A driver that keeps no XDP
//     metadata gets no Marks: its flows stay pending (slow path, exact)
//     until cancelled and offered again.
//   - Moving out (TakeBack). A frame the program punts (a state change: FIN,
//     RST, a window failure, a checksum it cannot verify, the UDP
//     packet that makes the flow ASSURED...) waits in the XSK RX ring behind
//     the frames of other flows queued there, while later frames of the same
//     flow that the program can take (ACKs, data in window) are still
//     forwarded until the worker gets to the punted frame and TakeBack
//     revokes the entry. After the revoke (one compare-and-swap of the
//     word the program locks) all go up the slow path behind it, in
//     order. A take-back with no punted frame (a Settings change: rules
//     reload, sysctl; conntrack -D/-F; expiry) reorders nothing beyond the
//     race of a frame the program has judged but not yet enqueued with the
//     worker's next transmission, which the slow path's own latency (a copy
//     into the UMEM, the ring, the worker, sendto) makes vanishingly rare.
//
// Directions are independent: each is a sequence of its own, and a move
// affects both at once (one map entry), so each direction can see the
// runs above; nothing orders one direction against the other, on the wire
// or here. Across ports there is nothing else to keep: a flow's direction
// arrives on one port. Frames of different flows are never ordered.
//
// What bounds it: nothing but queue depths and the worker's latency for a
// move out. offerDelay (10 ms eligible before the first offer) keeps short
// flows from moving at all; offerHoldoff (2 ms after a slow-path
// take-back) bounds a busy flow to one move in and one out per 2 ms; the
// Settings take-back moves every offered flow out once per change.
//
// No state is judged on stale data either way. Each frame is judged once,
// by one level, on the state every frame judged before it left: moving in,
// Activate copies the entry after the last frame the worker judged and
// the worker judges nothing of the flow until it takes it back; the frames
// the program took meanwhile are in what TakeBack reads back, so a stranded
// older frame is judged after them, exactly as the tracker judges a frame
// reordered on the wire (TCP: an old sequence number within the window,
// td_end never moves back). Moving out, TakeBack's read after the revoke holds every
// frame the program judged. The lab tests count INVALID and find none.
//
// Measured (bridge/datapath_reorder_lab_test.go, one worker, one queue,
// veth lab with GRO on the hosts, 2 shared cores also running the senders
// and receivers; 64-byte UDP datagrams numbered per direction, both ways
// over one flow, 3 s). Before the two-phase offer, then with it (one run
// each unless said):
//
//   - Fast path off, a Settings change every 30 ms, 20 000/s each way: no
//     datagram out of order, none lost.
//   - Fast path on, no reloads, 20 000/s each way. Before (two runs): 20
//     and 34 offers, 19 and 33 slow-path take-backs (the frames queued at
//     the offer); 14-1 664 of ~60 000 datagrams out of order (0.02-2.8 %),
//     in 5-22 runs, at most 8-674 behind. Now: 2 offers, both activated
//     (53 pre-offer frames and 83 marked ones judged without a take-back),
//     1 slow-path take-back (the UDP packet that makes the flow ASSURED);
//     no datagram out of order, none lost.
//   - Fast path on, no reloads, 100 000/s each way. Before: 350-380 moves
//     (352 of 353 offers undone at once), 25-40 % lost at the full RX rings
//     (counted), runs up to 8 000-23 000 behind. Now: 2 offers, 2
//     activations (310 pre-offer and 2 744 marked frames judged on the
//     way), 1 slow-path take-back; ~163 000 and ~167 000 datagrams, none
//     out of order, none lost.
//   - Fast path on, a Settings change every 30 ms (102 reloads), 20 000/s
//     each way. Before (three runs): 420-547 offers, 58-76 Settings and
//     358-471 slow-path take-backs; 1.2-9.1 % out of order, at most
//     121-1 178 behind. Now: 91 offers, 89 activated and 2 cancelled (by a
//     reload while pending), 88 Settings take-backs and 1 slow-path one; no
//     datagram out of order; 82 of ~120 000 lost, counted as drops.
//   - TCP, 256 MB left to right, fast path on, a Settings change every
//     30 ms. Before (two runs): 95-101 offers, 40-43 Settings and 55-58
//     slow-path take-backs; the sender retransmitted 8 342-11 161 of
//     ~185 400 segments (4.5-6 %; 6 092-8 622 DSACKs: spurious), detected
//     reordering 686-4 935 times by SACK and 5-653 by timestamps, and the
//     receiver queued 385-1 712 segments out of order. Now (70 reloads):
//     63 offers, 10 activated and 53 cancelled (a reload came first: a
//     busy flow activates only when the worker has caught up with its
//     last marked frame, so the fast path took 65 000 of ~250 000 frames),
//     10 Settings take-backs and no slow-path one; 1 segment
//     retransmitted (1 DSACK), reordering detected 6 times by SACK and
//     once by timestamps, 3 segments queued out of order.
//   - bridge/datapath_offload_lab_test.go (128 MB TCP, one settings change
//     and 4 flushes): 7 offers, 3 activated, 4 cancelled (the flushes and
//     the change), 1 slow-path take-back; 2 739 pre-offer and 22 750 marked
//     frames judged that each would have taken the flow back before.
//
// # Under overload
//
// The worker may never catch up with a flow that keeps sending: its RX
// ring stays full, and by the time it judges a marked frame the program
// has numbered more. Waiting keeps such a flow in the slow path for ever
// (measured, main before pendingForce: TCP at 1 000 flows, 14 404 offers
// for 1 000 flows, 0.21x XDP_REDIRECT). Activating at the program's count
// anyway (pendingForce, as first built) leaves the frames numbered between
// the last Mark judged and that count queued; the first of them took the
// flow back (exactly) after the program had forwarded later frames: the
// one-phase offer's reordering, and the flow out again, round and round
// (bridge TestFastPathOverload, 64 UDP flows flooding a -race worker:
// 2 708 offers, 2 644 take-backs, 46 291 frames out of order, 39% of the
// frames by the fast path).
//
// What is done instead, the hand-over: after 5 ms pending (bridge
// pendingForce) the worker activates at once (ActivateNow: the value is
// written, then revoked[slot] is swapped from whatever count it holds to
// gen) and remembers the count swapped away, the cut. Every frame with
// that offer's Mark numbered at or below the cut that reaches it
// afterwards is dropped unjudged (bridge DropHandover, counted: the
// fastpath handover_drops in conntrack -S, statewire_fastpath_handover_drops_total).
// Nothing is judged out of order and nothing is judged twice: each
// direction's frames are judged by the worker up to some point, then
// dropped, then judged by the program. The same happens to a frame numbered
// while pending that arrives after an activation that was not forced
// (the other direction's ring lagging). Measured with the hand-over: the
// same test, 64 offers, 64 activations (all forced), no take-back, no
// frame out of order, 98-99% of the frames by the fast path, 1 500-2 000
// frames dropped at the hand-over (about one RX ring) against 5 000-8 500
// the kernel dropped at the full ring.
//
// The cost is the frames of the flow that were queued at the activation:
// about one RX ring's delay of the flow's traffic (2 048 frames shared by
// every flow the ring holds), lost once per activation, and only when the
// worker is behind, where the full ring is already dropping. A TCP sender
// recovers them by SACK retransmission (TestDatapathReorderTCP under
// -race on the loaded machine, a reload every 30 ms, 154 offers and 118
// activations: 23 532 of 185 416 segments retransmitted (12.7%), 255 of
// them spurious (DSACK), no reordering detected by SACK or timestamps;
// with the forced take-backs before, 11% retransmitted, spurious and
// DSACKed, reordering detected).
//
// Considered and not done:
//   - Drain, then activate: the program drops the flow's new frames (count
//     above a cut it is told) until the worker has judged the cut's frame.
//     It loses as many frames (the flow's traffic for one ring's delay),
//     but the new ones rather than the old: both directions stop for the
//     drain, so a TCP sender's ACK clock stops and it waits for its
//     retransmission timeout (200 ms or more) instead of a fast
//     retransmission; the flow stays in the slow path meanwhile; and the
//     end of the drain needs proof that the cut's frame was judged, which
//     a frame lost at the full ring never gives (ring positions, or a
//     timeout). It would also change offload.c; the hand-over changes
//     nothing in the program.
//   - Holding frames back instead of dropping them: XDP cannot queue a
//     frame. The program could copy it into a map or ring buffer for the
//     worker to send after the frames before it, but a flow sending faster
//     than the worker judges (the case at hand: a flood) fills any such
//     buffer faster than it drains, so it ends in drops too, after
//     more work on the overloaded worker.
//
// So a flow now moves in without moving out again, overloaded or not: the reordering that
// remains comes from moves out (a punted frame overtaken by taken ones
// until the worker reaches it) and from the rare pre-offer frame that
// reaches the pipeline after the activation. The tests assert what does
// not depend on timing: no loss beyond counted drops, no duplicate,
// nothing INVALID, no reordering with the fast path off, at most two runs
// of reordering per direction per move.
//
// # Redirects the kernel drops
//
// The program counts a frame forwarded when it returns XDP_REDIRECT; the
// kernel transmits it afterwards and drops it when the egress port cannot
// take it: down (the redirect fails with ENETDOWN), the frame above its
// MTU (EMSGSIZE), or its driver refusing it at the flush (a veth whose
// peer is down or has no NAPI). Two tracing programs in offload.c
// (tp_btf on xdp_redirect_err, keyed by our DEVMAP's id, and on
// xdp_devmap_xmit, keyed by the egress ifindex and network namespace
// SetPorts recorded) count those per ingress port: PortStats.RedirectErrors,
// a part of FastPackets. They need the kernel's BTF; without it Load logs
// that these drops go uncounted and carries on (Tracing reports it).
//
// # Time
//
// The program's clock is bpf_ktime_get_ns (CLOCK_MONOTONIC), the same
// clock Go's monotonic time reads. Options.Now is the datapath's clock
// (bridge Datapath.Now: CLOCK_MONOTONIC+1s, the same in every process of
// a boot, so a table adopted from a state file keeps its times); Load
// measures the offset once, and every time crossing the boundary is
// converted with it, so Expires read back is exactly last packet's time +
// the timeout Go's Update would have chosen.
//
// # Fail-open, pins and the next start
//
// With Options.FailOpen (statewire run --fail-mode=open) the program
// outlives the process: once both ports are attached its two bpf_links
// and its maps are pinned in PinDir(name) (/sys/fs/bpf/statewire/NAME;
// bpffs is mounted there when it is not, and the log says so), so that
// neither an exit nor a kill -9 detaches it. The program's slow-path
// redirect (offload.c to_slow_path) looks the frame's queue up in the
// XSKMAP; when the socket is missing, that is, no worker is registered
// (the kernel removes a socket's entry when the socket closes, so no
// process has to clear anything, and a kill -9 clears it too), it forwards
// the frame unchanged to the other port through the DEVMAP the fast path
// uses and counts it per ingress port (fail_open_stats; FailOpen). Offered
// flows keep going through the fast path meanwhile, their counters and
// window state updated in the pinned flow map. A socket registered costs
// the slow path nothing more: the XSKMAP hit returns at once.
//
// The next Load with the same Pin adopts the pinned maps when they fit
// (same layout and sizes; otherwise it logs why and starts on new maps),
// and Attach takes the pinned links over with bpf_link_update: the new
// program replaces the old one in place, so no frame meets a port without
// a program. Until the sockets are registered the program goes on
// forwarding unjudged (fail-open) or dropping (closed). The adopted flow
// map belongs to the earlier run's table, and userspace stays the
// authority over it:
//
//   - Without that table (a fresh one: --state-file none, a refused
//     file) or without the fast path (--offload=off), RevokeAdopted
//     empties the map: every flow's next frame goes up the slow path.
//   - With the table carried over (its state file adopted), the datapath
//     reconciles the two before any worker runs (bridge adoptFastPath)
//     with KeepAdopted and OfferedAs. An active flow whose entry is
//     present and marked offloaded stays in the fast path when it is
//     that entry's connection and fits the run's settings as an Offer
//     would write it now (OfferedAs: orientation, TCP state, status, UDP
//     creation time, window scales, sequence edges not behind the
//     entry's; the verdict bytes, walked afresh through the run's rules
//     for the state and port they carry, checksum verification, liberal
//     tracking, retransmission limit and timeouts): the map keeps its live
//     window, expiry and counters, the entry stays offloaded, and the
//     worker owning it counts it as its own offer, taken back like one
//     (by its next punted frame, its removal, the next settings change).
//     One offered otherwise (FitOther) is taken back exactly (TakeBack
//     reads its live state into the entry); one that is not the entry's
//     connection (FitNone) is deleted unread and the entry taken back
//     liberally, as below. A flow with no offloaded entry (a kill
//     -9 between an offer's map write and the entry's mark, or between a
//     take-back's two), a pending offer (its entry holds the state: the
//     program took nothing; it only loses the mark) and a flow an
//     unfinished take-back revoked are deleted from the map. An
//     offloaded entry with no active flow in the map is taken back
//     liberally (flowtable Entry.ResumeOffloaded), as when the map did
//     not survive. The kept flows' slots and generations leave the
//     allocator; every slot's generation moves past the earlier run's,
//     so no Mark of a frame still queued names a new offer.
//
// The table records no offer generation of its own: a flow and an entry
// are matched by key, then by what OfferedAs compares, which tells a
// flow of an earlier connection with the same key from the entry's.
//
// Without FailOpen (closed, the default) nothing is pinned, and a start
// that adopted pins of an earlier fail-open run removes them once it is
// attached: nothing outlives the process, also on a graceful restart.
// That is deliberate: a SIGTERM does not say whether a restart follows,
// and a closed bridge that stopped must pass nothing, not even its offered
// flows. DetachPinned (statewire detach) removes the pins: the links
// detach when no process holds them. A run holds an flock on its pin
// directory for its lifetime (the kernel drops it however the process
// ends): a second process started with the same name is refused instead
// of taking the live run's links over, and so is a detach.
//
// # The verifier's work
//
// The kernel verifies the program at every Load (twice: one per port),
// and statewire run's start waits for it. The verifier walks every path,
// and a bounded loop once per iteration for each distinct state that
// reaches it, so offload.c keeps loops out of the places many paths meet:
// the lock's spin (attempts 2..1024) is a global function,
// lock_flow_spin, verified once for any arguments, as are csum_ok,
// csum_frags and csum_partial; the TCP option walk takes its first six
// options inline (what Linux sends: NOP, NOP, timestamps, NOP, NOP,
// SACK) and the rest by tcp_opt calls. Measured on Linux 6.18, clang-14:
// 64 431 instructions processed, 0.2-0.8 s on the loaded 2-CPU machine;
// before, 627 206 (limit 1 000 000) and 5-6.5 s. TestVerifierBudget logs
// both and fails above 130 000.
//
// Ownership: Load, Attach, SetPorts, Register and Close belong to the
// goroutine that starts and stops the datapath. Offer, TakeBack and Peek
// may be called from any worker (a mutex guards the slot allocator only).
package offload
