//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// statewire's XDP program: the fast path of DESIGN.md "Two levels".
//
// Per frame it parses the subset packet.Parse's fast path takes (Ethernet,
// 0-2 VLAN tags, IPv4 without options or IPv6 without extension headers,
// not fragmented, TCP or UDP), builds the flowtable.Key of the frame and
// looks it up in `flows`. A frame of an offered flow that changes nothing
// but counters, timestamps and the window edges, and whose cached verdict
// for (direction, ctstate, ingress port) is ACCEPT, is judged here exactly
// as bridge.Pipeline.Process would judge it, the entry's window state is
// updated under the flow's lock (lock_flow), and the frame is redirected to the
// other port (ports_devmap). Everything else goes, untouched, to the AF_XDP
// socket of its queue (xsks), as bridge/xdpprog's program did.
//
// Rule: the program never writes a map value for a frame it punts. Every
// check that can punt runs before the first store.
//
// Comments name the Go function (package statemachine, packet, flowtable)
// and the kernel function each block mirrors.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// ---- Constants shared with Go (offload.go mirrors them) ----------------

#define ETH_P_IPV4 0x0800
#define ETH_P_IPV6 0x86dd
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8
#define ETH_P_QINQ_OLD 0x9100

#define PROTO_TCP 6
#define PROTO_UDP 17

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_URG 0x20

// statemachine: Status* bits.
#define ST_SEEN_REPLY 0x01
#define ST_ASSURED 0x02
#define ST_EXPECTED 0x04
#define ST_UNTRACKED 0x08
#define ST_DYING 0x10

// statemachine: CtState (one-hot).
#define CT_NEW 0x02
#define CT_ESTABLISHED 0x04
#define CT_RELATED 0x08

// statemachine: TCPFlag* (per direction).
#define TF_SACK_PERM 0x02
#define TF_BE_LIBERAL 0x08
#define TF_DATA_UNACK 0x10
#define TF_MAXACK_SET 0x20

#define TCP_ESTABLISHED 3 // statemachine.TCPEstablished
#define CLASS_ACK 3       // statemachine classAck

#define MAX_ACK_WIN_CONST 66000        // statemachine maxAckWinConst
#define UDP_STREAM_AFTER 2000000000ULL // statemachine udpStreamAfter (2 s)

// Punt reasons: index of stats.punt. Keep offload.go's PuntReason in sync.
enum punt_reason {
	PUNT_PARSE = 0, // not the subset the fast path parses (or malformed)
	PUNT_MISS,      // no entry in flows
	PUNT_VERDICT,   // no cached ACCEPT for this (direction, ctstate, port)
	PUNT_STATE,     // the packet would change state or status
	PUNT_WINDOW,    // the window check would not accept it as is
	PUNT_CSUM,      // bad L4 checksum, or too long to verify here
	PUNT_EXPIRED,   // the entry's timeout ran out (Go's Lookup deletes it)
	PUNT_REVOKED,   // userspace is taking the flow back
	PUNT_NODEV,     // the other port is not in ports_devmap
	PUNT_PENDING,   // offered, not yet activated (marked, see punt_pending)
	PUNT_BUSY,      // the flow's lock stayed held for LOCK_TRIES attempts
	NUM_PUNT,
};

// ---- Maps and values ---------------------------------------------------

// flow_key is flowtable.Key byte for byte (40 bytes, no padding): A and B
// are 16-byte addresses (IPv4 mapped ::ffff:a.b.c.d), (A, PortA) <= (B,
// PortB) in flowtable's order, ports in host byte order.
struct flow_key {
	__u8 a[16];
	__u8 b[16];
	__u16 port_a;
	__u16 port_b;
	__u8 proto;
	__u8 l3;
	__u16 vlan;
};

// peer is statemachine.TCPPeer (kernel struct ip_ct_tcp_state).
struct peer {
	__u32 end;    // td_end
	__u32 maxend; // td_maxend
	__u32 maxwin; // td_maxwin
	__u32 maxack; // td_maxack
	__u8 scale;   // td_scale
	__u8 flags;   // TCPFlag*
	__u8 _pad[2];
};

// flow_value is what the fast path knows of an offered flow. The first
// block is written by userspace (Offer) only and read without the lock;
// the rest is written by the program holding the flow's lock (revoked[slot]
// with FLOW_BUSY set, see lock_flow) and read back by TakeBack after it
// revoked the flow, by Peek as offload.go describes. Times are
// CLOCK_MONOTONIC ns (bpf_ktime_get_ns).
struct flow_value {
	struct bpf_spin_lock lock; // not taken by the program: Activate's in-place
	                           // update (BPF_F_LOCK) needs it, and the program
	                           // reads nothing of a pending flow's value
	__u32 gen;       // revoked[slot] must be gen for the program to take a packet
	__u32 slot;      // index in revoked
	__u8 proto;      // PROTO_TCP or PROTO_UDP
	__u8 orig_is_b;  // flowtable flagSwapped: the original direction runs B -> A
	__u8 verdict[2]; // cached verdict byte per direction (Original, Reply)
	__u8 status;     // Conn.Status (constant while offered)
	__u8 tcp_state;  // Conn.State (constant while offered)
	__u8 csum;       // verify L4 checksums (Settings.VerifyChecksum)
	__u8 liberal;    // Config.BeLiberal || !Config.WindowTracking
	__u8 max_retrans; // Config.MaxRetrans
	__u8 _pad0[3];
	__u64 to_main;      // TCP: Timeouts.TCPEstablished; UDP: Timeouts.UDP
	__u64 to_alt;       // TCP: Timeouts.TCPUnacknowledged; UDP: Timeouts.UDPStream
	__u64 to_maxretrans; // TCP: Timeouts.TCPMaxRetrans
	__u64 udp_created;  // UDP: creation time (statemachine udpCreated)

	__u64 last_seen; // time of the last packet taken (0: none yet)
	__u64 expires;   // Conn.Expires
	__u64 packets[2]; // taken packets per direction
	__u64 bytes[2];   // their IP lengths per direction
	struct peer peer[2];
	__u32 last_seq;
	__u32 last_ack;
	__u32 last_end;
	__u16 last_win;
	__u8 last_dir;
	__u8 last_index;
	__u8 retrans;
	__u8 _pad1[7];
};

struct port_stats {
	__u64 fast_packets; // frames redirected to the other port
	__u64 fast_bytes;   // their frame lengths
	__u64 punt[NUM_PUNT];
	__u64 csum_completed; // [csum] of fast_packets, partial checksums completed (csum_partial)
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(max_entries, 1); // set by Load (Options.MaxFlows)
} flows SEC(".maps");

// revoked[slot] holds the generation of the flow offered in slot, or 0,
// and is the flow's lock: gen | FLOW_BUSY while a program updates the
// value. It is BPF_F_MMAPABLE: userspace compares-and-swaps it in place,
// no syscall (TakeBack gen -> 0, Peek's fallback gen -> gen | FLOW_BUSY;
// see offload.go).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1); // set by Load (Options.MaxFlows)
	__uint(map_flags, BPF_F_MMAPABLE);
} revoked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 2);
} ports_devmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64); // set by Load (Options.Queues)
} xsks SEC(".maps");

// stats: one element per ingress port, per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct port_stats);
	__uint(max_entries, 2);
} stats SEC(".maps");

// clock_adjust is added to bpf_ktime_get_ns(): 0 in production; tests
// move the fast path's clock forward to reach timeouts and the UDP stream
// deadline. A .bss global (the only one: Load shares the .bss map of port
// A's object with port B's, and AdjustClock writes its one 8-byte value),
// so the program reads it with one load instead of a map lookup.
volatile __u64 clock_adjust = 0;

// Set per program object by Load.
volatile const __u32 port_id = 0;      // 0: port A, 1: port B
volatile const __u32 miss_action = XDP_DROP; // XDP_PASS with Options.PassOnMiss

// ---- VLAN zones (--vlan-zones) ------------------------------------------
// vlan_mask is what the innermost tag's id is masked with in the key:
// 0x0fff (the VLAN id is the zone, flowtable's default) or 0 with
// Options.IgnoreVLAN (--vlan-zones=false: the kernel's keys), exactly as
// flowtable.ZoneOf masks Packet.VLAN, so the program and the table build
// the same key. Set by Load.
volatile const __u16 vlan_mask = 0x0fff;
// ---- end VLAN zones ---------------------------------------------------------

// ---- Helpers -----------------------------------------------------------

#define FLOW_BUSY (1ULL << 62) // revoked[slot] of an active flow: its lock is held
                               // (bit 63 is PEND_BIT: a pending flow is never locked)
#define LOCK_TRIES 1024        // attempts before a frame is punted (PUNT_BUSY)

// lock_flow_spin is lock_flow's attempts 2..LOCK_TRIES, made while
// another holder has the lock: the same compare-and-swap, verified once
// for any arguments (a global function). Returns as lock_flow does.
__attribute__((noinline)) int lock_flow_spin(__u64 *rv, __u64 gen)
{
	if (!rv)
		return PUNT_REVOKED;
	__u64 busy = gen | FLOW_BUSY;
#pragma clang loop unroll(disable)
	for (int i = 1; i < LOCK_TRIES; i++) {
		__u64 old = __sync_val_compare_and_swap(rv, gen, busy);
		if (old == gen)
			return 0;
		if (old != busy)
			return PUNT_REVOKED;
	}
	return PUNT_BUSY;
}

// lock_flow takes the lock of the flow whose generation is gen: one
// compare-and-swap of revoked[slot] from gen to gen | FLOW_BUSY, which both
// checks that the flow is not revoked (the revocation check that used to
// run inside a bpf_spin_lock) and takes the lock. BPF atomics with a fetch
// are fully ordered, so the program's reads of the value come after it and
// TakeBack's compare-and-swap gen -> 0 either precedes it (the program sees
// 0 and punts) or follows the release (and TakeBack's read sees every
// update). The holder is another CPU's XDP program (softirq, a few dozen
// ns) or Peek's rare fallback: a bounded spin, then the frame is punted.
// Returns 0 locked, PUNT_REVOKED, or PUNT_BUSY.
//
// The first attempt is inline (the lock is almost always free); the other
// LOCK_TRIES-1 are in lock_flow_spin, a global function, because the
// verifier walks a bounded loop once per iteration for every distinct
// state that reaches it: inline, the spin cost 1024 iterations for each of
// the ~27 states the parser's paths bring here, 440 000 of the 627 000
// instructions it processed (TestVerifierBudget).
static __always_inline int lock_flow(__u64 *rv, __u64 gen)
{
	__u64 busy = gen | FLOW_BUSY;
	__u64 old = __sync_val_compare_and_swap(rv, gen, busy);
	if (old == gen)
		return 0;
	if (old != busy)
		return PUNT_REVOKED;
	// The verifier knows nothing of a global function's result: give
	// punt() one of the constants (count_punt indexes an array with it).
	int r = lock_flow_spin(rv, gen);
	if (r == 0)
		return 0;
	return r == PUNT_BUSY ? PUNT_BUSY : PUNT_REVOKED;
}

// unlock_flow releases it (an atomic exchange: fully ordered, so every
// store to the value is visible before the lock is free). Only the holder
// writes revoked[slot] while FLOW_BUSY is set.
static __always_inline void unlock_flow(__u64 *rv, __u64 gen)
{
	__sync_lock_test_and_set(rv, gen);
}

// before/after: statemachine before()/after(), the kernel's seq compare.
static __always_inline int before(__u32 a, __u32 b) { return (__s32)(a - b) < 0; }
static __always_inline int after(__u32 a, __u32 b) { return (__s32)(b - a) < 0; }

static __always_inline __u16 rd16(const __u8 *p) { return ((__u16)p[0] << 8) | p[1]; }
static __always_inline __u32 rd32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

// endpoint_after is flowtable after(): does endpoint (a, ap) order after
// (b, bp)? Address bytes 8..15 first (big-endian), then 0..7, then the port.
static __always_inline int endpoint_after(const __u64 *a, __u16 ap, const __u64 *b, __u16 bp)
{
	__u64 a1 = bpf_be64_to_cpu(a[1]), b1 = bpf_be64_to_cpu(b[1]);
	if (a1 != b1)
		return a1 > b1;
	__u64 a0 = bpf_be64_to_cpu(a[0]), b0 = bpf_be64_to_cpu(b[0]);
	if (a0 != b0)
		return a0 > b0;
	return ap > bp;
}

static __always_inline void count_punt(__u32 reason)
{
	__u32 k = port_id;
	struct port_stats *st = bpf_map_lookup_elem(&stats, &k);
	if (st && reason < NUM_PUNT)
		st->punt[reason]++;
}

// ---- Fail-open: no worker -> the other port (offload.go pin.go) -------
//
// [pin] block. With --fail-mode=open the program stays attached (pinned in
// bpffs) after statewire exits, however it exits. A frame for the slow path
// whose queue has no AF_XDP socket in xsks (the kernel removes a socket's
// entry when the socket closes, so a kill -9 clears it too) is forwarded
// unchanged to the other port through ports_devmap and counted, instead of
// getting miss_action. fail_cfg[0] is 1 in fail-open mode (set by the
// process, kept across restarts in the pinned map); 0: miss_action as
// before.

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} fail_cfg SEC(".maps");

struct fail_stats {
	__u64 packets; // frames forwarded because no worker was registered
	__u64 bytes;   // their frame lengths
};

// fail_open_stats: one element per ingress port, per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fail_stats);
	__uint(max_entries, 2);
} fail_open_stats SEC(".maps");

// Set per program object by Load: 1 sends every frame to the slow path
// without parsing it (--offload=off: no flow is ever offered).
volatile const __u32 slow_only = 0;

// to_slow_path hands the frame to the AF_XDP socket of its queue, as
// bridge/xdpprog's program did: bpf_redirect_map(&xsks, rx_queue_index,
// miss_action). On a miss (no socket: no worker) in fail-open mode the
// frame goes to the other port instead. The hit costs nothing more.
static __attribute__((noinline)) int to_slow_path(struct xdp_md *ctx)
{
	long r = bpf_redirect_map(&xsks, ctx->rx_queue_index, miss_action);
	if (r == XDP_REDIRECT)
		return XDP_REDIRECT;
	__u32 k = 0;
	__u32 *open = bpf_map_lookup_elem(&fail_cfg, &k);
	if (!open || *open != 1)
		return r;
	if (bpf_redirect_map(&ports_devmap, (port_id & 1) ^ 1, 0) != XDP_REDIRECT)
		return r;
	k = port_id & 1;
	struct fail_stats *fs = bpf_map_lookup_elem(&fail_open_stats, &k);
	if (fs) {
		fs->packets++;
		fs->bytes += bpf_xdp_get_buff_len(ctx); // the whole frame, fragments too
	}
	return XDP_REDIRECT;
}

// ---- end of the fail-open block ----------------------------------------

// punt hands the frame to the slow path (to_slow_path).
static __always_inline int punt(struct xdp_md *ctx, __u32 reason)
{
	count_punt(reason);
	return to_slow_path(ctx);
}

// ---- Two-phase offer (offload.go OfferPending, Activate) --------------
//
// While revoked[slot] is gen | PEND_BIT | count<<32 the flow is offered but
// not active: the program takes none of its frames. It numbers each frame
// it punts (count, by compare-and-swap, so that Activate's own
// compare-and-swap from count to gen fails if one more was punted) and
// writes a mark in front of the frame (XDP metadata, which AF_XDP copies
// into the UMEM with the frame): the slow path activates the flow only
// once it has processed every frame punted while pending.

#define PEND_BIT (1ULL << 63)
#define PEND_ONE (1ULL << 32)
#define PEND_MAX 0x7fffffffULL
#define MARK_MAGIC 0x45505753 // "SWPE" little-endian: offload.go markMagic

struct mark {
	__u32 magic;
	__u32 slot;
	__u32 gen;
	__u32 seq; // 1 for the first frame punted while pending
};

// punt_pending returns 1 when the flow of slot, generation gen, is pending
// (the frame is then counted, marked if the driver keeps metadata, and must
// be punted), 0 when it is not (active, or revoked: the usual checks
// follow).
static __always_inline int punt_pending(struct xdp_md *ctx, __u64 *rv, __u32 gen, __u32 slot)
{
	__u64 x = *(volatile __u64 *)rv;
	__u32 seq = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (!(x & PEND_BIT) || (__u32)x != gen)
			return 0;
		__u64 c = (x >> 32) & PEND_MAX;
		if (c == PEND_MAX)
			break; // no number left: punted unmarked
		__u64 old = __sync_val_compare_and_swap(rv, x, x + PEND_ONE);
		if (old == x) {
			seq = (__u32)c + 1;
			break;
		}
		x = old;
	}
	count_punt(PUNT_PENDING);
	if (seq == 0 || bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct mark)) != 0)
		return 1;
	struct mark *m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return 1;
	m->magic = MARK_MAGIC;
	m->slot = slot;
	m->gen = gen;
	m->seq = seq;
	return 1;
}

// add64 is a one's-complement add of 64-bit words (end-around carry).
static __always_inline __u64 add64(__u64 s, __u64 w)
{
	s += w;
	return s + (s < w);
}

// fold16 folds a one's-complement sum to 16 bits (packet fold()).
static __always_inline __u32 fold16(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u32)s;
}

#define CSUM_MAX_CHUNKS 8 // 8 x 512 bytes: longer segments are punted
#define MAX_FRAME 0x1fff  // offsets are masked with this for the verifier

// bound hides what the compiler knows of x, so that the mask that follows
// is kept and the verifier sees x in 0..MAX_FRAME.
#define bound(x) ({ __u32 __v = (x); asm volatile("" : "+r"(__v)); __v & MAX_FRAME; })

// pseudo_sum is the pseudo-header's sum (the addresses at saddr_off, 8
// bytes, or 32 when v6; the protocol; the L4 length), added in memory byte
// order as csum_ok adds everything. 0, or -1 when the addresses are not in
// the linear part. One copy for csum_ok, csum_frags and csum_partial.
static __always_inline int pseudo_sum(void *data, void *data_end, __u32 saddr_off, __u32 proto, __u32 v6, __u32 len, __u64 *sum)
{
	__u64 s = 0;
	__u8 *a = data + bound(saddr_off);
	if (v6) {
		if ((void *)(a + 32) > data_end)
			return -1;
		s = add64(s, *(__u64 *)a);
		s = add64(s, *(__u64 *)(a + 8));
		s = add64(s, *(__u64 *)(a + 16));
		s = add64(s, *(__u64 *)(a + 24));
	} else {
		if ((void *)(a + 8) > data_end)
			return -1;
		s = add64(s, *(__u64 *)a);
	}
	// proto and length as the big-endian words 00 proto, len_hi len_lo,
	// read in memory order.
	s = add64(s, bpf_htons((__u16)proto));
	s = add64(s, bpf_htons((__u16)len));
	*sum = s;
	return 0;
}

// csum_ok is packet.l4Checksum(seg) (0xffff: good): the pseudo-header (the
// addresses at saddr_off, 8 bytes, or 32 when bit 8 of proto_v6 says IPv6;
// the protocol, low byte of proto_v6; the L4 length) and the len
// bytes at l4off. Sums are taken in memory byte order (64-bit loads;
// bpf_csum_diff for chunks of 64 bytes or more), added with end-around
// carry; a byte-swapped one's-complement sum is 0xffff exactly when the big-endian
// one is. Returns the folded sum in memory byte order (0xffff: good; any
// other: bad, or partial, see csum_partial), -1 cannot verify here.
//
// A global function: the verifier checks it once, for any arguments,
// instead of once per path of the parser that calls it.
__attribute__((noinline)) int csum_ok(struct xdp_md *ctx, __u32 saddr_off, __u32 l4off, __u32 len, __u32 proto_v6)
{
	__u32 proto = proto_v6 & 0xff, v6 = proto_v6 >> 8;
	if (!ctx)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (l4off > MAX_FRAME || len > MAX_FRAME || l4off + len > MAX_FRAME || saddr_off > MAX_FRAME)
		return -1;
	__u64 s;
	if (pseudo_sum(data, data_end, saddr_off, proto, v6, len, &s))
		return -1;

	__u32 pos = l4off;
#pragma clang loop unroll(disable)
	for (int i = 0; i < CSUM_MAX_CHUNKS; i++) {
		if (len < 512)
			break;
		pos = bound(pos);
		__u8 *p = data + pos;
		if ((void *)(p + 512) > data_end)
			return -1;
		s = add64(s, (__u32)bpf_csum_diff(0, 0, (void *)p, 512, 0));
		pos += 512;
		len -= 512;
	}
	if (len >= 512)
		return -1;
#define CSUM_STEP(n)                                                          \
	if (len & (n)) {                                                      \
		pos = bound(pos);                                             \
		__u8 *p = data + pos;                                         \
		if ((void *)(p + (n)) > data_end)                             \
			return -1;                                            \
		s = add64(s, (__u32)bpf_csum_diff(0, 0, (void *)p, (n), 0));  \
		pos += (n);                                                   \
	}
	CSUM_STEP(256)
	CSUM_STEP(128)
	CSUM_STEP(64)
	// Below 64 bytes, 64-bit loads summed here cost less than the
	// helper call (a 64-byte frame's whole segment is below 64 bytes).
	if (len & 32) {
		pos = bound(pos);
		__u8 *p = data + pos;
		if ((void *)(p + 32) > data_end)
			return -1;
		s = add64(s, *(__u64 *)p);
		s = add64(s, *(__u64 *)(p + 8));
		s = add64(s, *(__u64 *)(p + 16));
		s = add64(s, *(__u64 *)(p + 24));
		pos += 32;
	}
	if (len & 16) {
		pos = bound(pos);
		__u8 *p = data + pos;
		if ((void *)(p + 16) > data_end)
			return -1;
		s = add64(s, *(__u64 *)p);
		s = add64(s, *(__u64 *)(p + 8));
		pos += 16;
	}
	if (len & 8) {
		pos = bound(pos);
		__u8 *p = data + pos;
		if ((void *)(p + 8) > data_end)
			return -1;
		s = add64(s, *(__u64 *)p);
		pos += 8;
	}
	if (len & 4) {
		pos = bound(pos);
		__u8 *p = data + pos;
		if ((void *)(p + 4) > data_end)
			return -1;
		s = add64(s, *(__u32 *)p);
		pos += 4;
	}
#undef CSUM_STEP
	pos = bound(pos);
	__u8 *p = data + pos;
	if (len & 2) {
		if ((void *)(p + 2) > data_end)
			return -1;
		__u16 w;
		__builtin_memcpy(&w, p, 2);
		s = add64(s, w);
		p += 2;
	}
	if (len & 1) {
		if ((void *)(p + 1) > data_end)
			return -1;
		// packet sum(): the last byte is the high byte of a big-endian
		// word, i.e. the first byte of a zero-padded word in memory.
		__u16 w = 0;
		*(__u8 *)&w = p[0];
		s = add64(s, w);
	}
	return fold16(s);
}

// sack is the right edges of the first well-formed SACK option.
struct sack {
	__u32 right[4];
	__u32 n;
};

#define OPT_STOP 64 // opt_step, tcp_opt: the walk ends here

// opt_step is one step of tcp_sack's walk: the option at offset i (< doff)
// of the TCP header th. Returns the offset of the next option, OPT_STOP
// when the walk ends (end of list; a length below 2 or past the header),
// or -1 when the option is not in the frame. The first well-formed SACK
// option (out->n still 0) fills out.
static __always_inline int opt_step(void *data_end, __u8 *th, __u32 i, __u32 doff, struct sack *out)
{
	i &= 63;
	__u8 *o = th + i;
	if ((void *)(o + 1) > data_end)
		return -1;
	__u8 kind = o[0];
	if (kind == 0)
		return OPT_STOP;
	if (kind == 1)
		return i + 1;
	if (i + 2 > doff)
		return OPT_STOP;
	if ((void *)(o + 2) > data_end)
		return -1;
	__u32 l = o[1];
	if (l < 2 || i + l > doff)
		return OPT_STOP;
	if (kind == 5 && out->n == 0 && l >= 10 && ((l - 2) & 7) == 0) {
		__u32 nb = (l - 2) / 8;
		if (nb > 4)
			nb = 4;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			if (k < nb) {
				__u8 *r = o + 2 + 8 * k + 4;
				if ((void *)(r + 4) > data_end)
					return -1;
				out->right[k] = rd32(r);
			}
		}
		out->n = nb;
	}
	return i + l;
}

// tcp_opt is opt_step as a global function, verified once for any offset.
__attribute__((noinline)) int tcp_opt(struct xdp_md *ctx, __u32 l4off, __u32 i, __u32 doff, struct sack *out)
{
	if (!ctx || !out)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (l4off > MAX_FRAME || doff > 60 || i >= doff)
		return -1;
	return opt_step(data_end, data + bound(l4off), i, doff, out);
}

// OPTS_INLINE options are walked inline, the rest (up to 40: all NOPs)
// one tcp_opt call each. The verifier walks an inline step once per
// distinct offset it can be at, and those multiply with every step:
// the whole walk inline cost 86 000 processed instructions, a call per
// option 25-60 ns more per frame (BPF_PROG_RUN). Six covers what
// Linux sends (NOP, NOP, timestamps; then NOP, NOP, SACK).
#define OPTS_INLINE 6

// tcp_sack is packet parseTCPOptions for the one option an ACK-class
// segment needs: the first well-formed SACK option (kind 5, length >= 10,
// (length-2) % 8 == 0), up to 4 blocks. End of list stops the walk; a
// length below 2 or past the header stops it too (OptsBroken there).
// Returns 0, or -1 when the header is not in the frame. A global function
// for the same reason as csum_ok.
__attribute__((noinline)) int tcp_sack(struct xdp_md *ctx, __u32 l4off, __u32 doff, struct sack *out)
{
	if (!ctx || !out)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	out->n = 0;
	if (l4off > MAX_FRAME || doff > 60)
		return -1;
	__u8 *th = data + bound(l4off);
	__u32 i = 20;
	int n = 0;
#pragma clang loop unroll(disable)
	for (; n < OPTS_INLINE; n++) {
		if (i >= doff)
			return 0;
		int r = opt_step(data_end, th, i, doff, out);
		if (r < 0)
			return -1;
		if (r == OPT_STOP)
			return 0;
		i = r;
	}
#pragma clang loop unroll(disable)
	for (; n < 40; n++) {
		if (i >= doff)
			break;
		int r = tcp_opt(ctx, l4off, i, doff, out);
		if (r < 0)
			return -1;
		if (r == OPT_STOP)
			break;
		i = r;
	}
	return 0;
}

// ---- Jumbo frames (multi-buffer, [jumbo]) ------------------------------
// The program is loaded with frags support (SEC("xdp.frags"), so the
// loader sets BPF_F_XDP_HAS_FRAGS): veth and most drivers refuse a
// program without it above an MTU of about 3500. A frame larger than a
// page then comes as a linear part plus fragments. Every header is read
// from the linear part (data .. data_end): the bounds checks below punt
// a frame whose headers are not all there (PUNT_PARSE). csum_ok sees only
// the linear part; csum_frags below verifies the rest (with --checksum).
// Lengths (the IP length check, the port's byte counter) use the whole
// frame.
static __always_inline __u32 whole_frame_len(struct xdp_md *ctx)
{
	return (__u32)bpf_xdp_get_buff_len(ctx);
}

// csum_frags is csum_ok for a segment csum_ok cannot see: one that runs
// into the fragments of a multi-buffer frame, or is longer than
// CSUM_MAX_CHUNKS chunks. It copies the segment, 512 bytes at a time, into
// a per-CPU scratch buffer with bpf_xdp_load_bytes (the only way to reach
// fragment bytes) and sums each copy. The tail is summed as a whole number
// of 32-bit words with the word it ends in zeroed first: an odd last byte
// is then the high byte of a zero-padded big-endian word, as packet sum()
// has it. The pseudo-header addresses are in the linear part (the parser
// checked). Returns the folded sum as csum_ok does (0xffff good), -1
// cannot verify (punt).
#define JUMBO_CHUNK 512
#define JUMBO_MAX_CHUNKS 20 // 10240 bytes: an MTU 9000 segment and more

struct jumbo_buf {
	__u8 b[JUMBO_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct jumbo_buf);
} jumbo_scratch SEC(".maps");

__attribute__((noinline)) int csum_frags(struct xdp_md *ctx, __u32 saddr_off, __u32 l4off, __u32 len, __u32 proto_v6)
{
	__u32 proto = proto_v6 & 0xff, v6 = proto_v6 >> 8;
	if (!ctx)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (saddr_off > MAX_FRAME || len > JUMBO_MAX_CHUNKS * JUMBO_CHUNK)
		return -1;
	__u64 s;
	if (pseudo_sum(data, data_end, saddr_off, proto, v6, len, &s))
		return -1;
	__u32 zero = 0;
	struct jumbo_buf *buf = bpf_map_lookup_elem(&jumbo_scratch, &zero);
	if (!buf)
		return -1;
	__u32 pos = l4off;
#pragma clang loop unroll(disable)
	for (int i = 0; i < JUMBO_MAX_CHUNKS; i++) {
		if (len < JUMBO_CHUNK)
			break;
		if (bpf_xdp_load_bytes(ctx, pos, buf->b, JUMBO_CHUNK) != 0)
			return -1;
		s = add64(s, (__u32)bpf_csum_diff(0, 0, (void *)buf->b, JUMBO_CHUNK, 0));
		pos += JUMBO_CHUNK;
		len -= JUMBO_CHUNK;
	}
	if (len >= JUMBO_CHUNK)
		return -1;
	if (len) {
		// The masks after the empty asm are what the verifier sees:
		// 1 <= tail <= 511, words a multiple of 4 in 4..512.
		__u32 tail = len, words = len + 3;
		asm volatile("" : "+r"(tail));
		asm volatile("" : "+r"(words));
		tail &= JUMBO_CHUNK - 1;
		words &= (JUMBO_CHUNK - 1) | JUMBO_CHUNK;
		words &= ~3u;
		if (tail < 1 || words < 4 || words > JUMBO_CHUNK)
			return -1;
		*(__u32 *)(buf->b + ((words - 4) & (JUMBO_CHUNK - 4))) = 0;
		if (bpf_xdp_load_bytes(ctx, pos, buf->b, tail) != 0)
			return -1;
		s = add64(s, (__u32)bpf_csum_diff(0, 0, (void *)buf->b, words, 0));
	}
	return fold16(s); // [csum] the sum, as csum_ok returns it
}
// ---- end of jumbo block ----

// ---- [csum] Partial checksums (CHECKSUM_PARTIAL) ----------------------
//
// A host that offloads checksums (a veth's default) sends TCP and UDP
// frames whose checksum field holds the folded pseudo-header sum; the
// kernel calls them valid, packet.Parse too (Packet.ChecksumPartial), with
// or without VerifyChecksum. Redirected as they are, they reach the far
// host as CHECKSUM_NONE frames with a wrong checksum, and it drops them:
// the program completes them instead, as the slow path does
// (packet.CompleteChecksum), from the sum csum_ok took.

// csum_partial checks the TCP or UDP checksum of the len bytes at l4off
// (pseudo-header as for csum_ok; proto_v6 as there, and bit 9 set when
// checksums are verified, v->csum: five arguments at most) and says what to do:
// 0 forward as it is (the checksum verifies; or, when not verified, it is
// not partial), -1 punt (bad and verified: INVALID in Go; or it cannot be
// summed here and may be partial), else 1 + the checksum to store, in
// memory byte order (the frame is partial). Unverified, only a field
// equal to the pseudo-header sum costs the segment's sum.
__attribute__((noinline)) int csum_partial(struct xdp_md *ctx, __u32 saddr_off, __u32 l4off, __u32 len, __u32 flags)
{
	__u32 proto = flags & 0xff, v6 = (flags >> 8) & 1, verify = (flags >> 9) & 1;
	__u32 proto_v6 = flags & 0x1ff;
	if (!ctx)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (l4off > MAX_FRAME || saddr_off > MAX_FRAME)
		return -1;
	__u8 *ck = data + bound(l4off) + (proto == PROTO_TCP ? 16 : 6);
	if ((void *)(ck + 2) > data_end)
		return -1;
	__u16 field;
	__builtin_memcpy(&field, ck, 2);
	// The pseudo-header sum, as csum_ok adds it.
	__u64 s;
	if (pseudo_sum(data, data_end, saddr_off, proto, v6, len, &s))
		return -1;
	__u32 ph = fold16(s);
	if (!verify && field != ph)
		return 0;
	int full = csum_ok(ctx, saddr_off, l4off, len, proto_v6);
	if (full < 0) // [jumbo] beyond the linear part or CSUM_MAX_CHUNKS
		full = csum_frags(ctx, saddr_off, l4off, len, proto_v6);
	if (full < 0)
		return -1;
	if (full == 0xffff)
		return 0;
	if (field != ph)
		return verify ? -1 : 0;
	// The segment without the field sums to full - ph (one's
	// complement); the checksum is its complement. UDP sends 0 as 0xffff.
	__u32 c = ~fold16((__u64)full + (~ph & 0xffff)) & 0xffff;
	if (c == 0 && proto == PROTO_UDP)
		c = 0xffff;
	return (int)c + 1;
}
// ---- end of [csum] block ----

// ---- The program -------------------------------------------------------

SEC("xdp.frags")
int statewire_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *pkt = data;
	__u32 frame_len = whole_frame_len(ctx);

	if (slow_only) // [pin] --offload=off: the XSKMAP-only program's path
		return to_slow_path(ctx);

	// -- packet.Parse (parseFast / parseGeneral), the subset we take. --
	// Ethernet and 0-2 tags of 0x8100/0x88a8/0x9100; the key's VLAN is
	// the innermost tag's id (Packet.VLAN). A third tag: punt
	// (ReasonTooManyVLANTags).
	if ((void *)(pkt + 14) > data_end)
		return punt(ctx, PUNT_PARSE);
	__u16 et = rd16(pkt + 12);
	__u32 off = 14;
	__u16 vlan = 0;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (et != ETH_P_8021Q && et != ETH_P_8021AD && et != ETH_P_QINQ_OLD)
			break;
		if ((void *)(pkt + off + 4) > data_end)
			return punt(ctx, PUNT_PARSE);
		vlan = rd16(pkt + off) & 0x0fff;
		et = rd16(pkt + off + 2);
		off += 4;
	}

	// The key is built with the packet's source in A and destination in
	// B, then put in canonical order.
	struct flow_key key __attribute__((aligned(8))) = {};
	__u8 *src = key.a, *dst = key.b;
	__u8 *l3 = pkt + off;
	__u32 saddr_off; // pseudo-header addresses (src then dst) for the checksum
	__u32 l4off, endoff, iplen;
	__u8 proto;
	int v6 = 0;

	if (et == ETH_P_IPV4) {
		// parseIPv4, fast path conditions: version 4, IHL 5 (options:
		// punt), MF clear and offset 0 (fragments: punt), TCP or UDP,
		// 20 <= total length, datagram within the frame (Ethernet
		// padding beyond it is allowed). The IPv4 header checksum is
		// not verified (packet.Options: the bridge drops those before
		// conntrack, and Parse does not look at it).
		if ((void *)(l3 + 20) > data_end)
			return punt(ctx, PUNT_PARSE);
		if (l3[0] != 0x45 || (rd16(l3 + 6) & 0x3fff) != 0)
			return punt(ctx, PUNT_PARSE);
		proto = l3[9];
		if (proto != PROTO_TCP && proto != PROTO_UDP)
			return punt(ctx, PUNT_PARSE);
		iplen = rd16(l3 + 2);
		if (iplen < 20 || off + iplen > frame_len)
			return punt(ctx, PUNT_PARSE);
		l4off = off + 20;
		endoff = off + iplen;
		src[10] = src[11] = dst[10] = dst[11] = 0xff;
		__builtin_memcpy(src + 12, l3 + 12, 4);
		__builtin_memcpy(dst + 12, l3 + 16, 4);
		saddr_off = off + 12;
		key.l3 = 4;
	} else if (et == ETH_P_IPV6) {
		// parseIPv6 with next header TCP or UDP: no extension header.
		if ((void *)(l3 + 40) > data_end)
			return punt(ctx, PUNT_PARSE);
		if ((l3[0] >> 4) != 6)
			return punt(ctx, PUNT_PARSE);
		proto = l3[6];
		if (proto != PROTO_TCP && proto != PROTO_UDP)
			return punt(ctx, PUNT_PARSE);
		iplen = 40 + (__u32)rd16(l3 + 4);
		if (off + iplen > frame_len)
			return punt(ctx, PUNT_PARSE);
		l4off = off + 40;
		endoff = off + iplen;
		__builtin_memcpy(src, l3 + 8, 16);
		__builtin_memcpy(dst, l3 + 24, 16);
		saddr_off = off + 8;
		key.l3 = 6;
		v6 = 1;
	} else {
		return punt(ctx, PUNT_PARSE);
	}

	l4off &= 0xffff;
	__u8 *l4 = pkt + l4off;
	__u32 seg = endoff - l4off; // L4 length by the IP header
	__u16 sport, dport;
	__u32 seq = 0, ack = 0, paylen = 0;
	__u16 win = 0;
	__u8 tflags = 0;
	struct sack sk = {};
	int verify = 1; // UDP over IPv4 with checksum 0: none to verify

	if (proto == PROTO_TCP) {
		// parseTCP: 20 <= data offset <= segment.
		if (seg < 20 || (void *)(l4 + 20) > data_end)
			return punt(ctx, PUNT_PARSE);
		__u32 doff = (__u32)(l4[12] >> 4) * 4;
		if (doff < 20 || doff > seg)
			return punt(ctx, PUNT_PARSE);
		sport = rd16(l4);
		dport = rd16(l4 + 2);
		seq = rd32(l4 + 4);
		ack = rd32(l4 + 8);
		tflags = l4[13];
		win = rd16(l4 + 14);
		paylen = seg - doff;

		if (tcp_sack(ctx, l4off, doff, &sk) != 0)
			return punt(ctx, PUNT_PARSE);
	} else {
		// parseUDP: 8 <= UDP length <= segment.
		if (seg < 8 || (void *)(l4 + 8) > data_end)
			return punt(ctx, PUNT_PARSE);
		__u32 ulen = rd16(l4 + 4);
		if (ulen < 8 || ulen > seg)
			return punt(ctx, PUNT_PARSE);
		sport = rd16(l4);
		dport = rd16(l4 + 2);
		if (!v6 && rd16(l4 + 6) == 0)
			verify = 0;
	}

	// -- flowtable setCanonical: (A, PortA) is the smaller endpoint. --
	__u64 *ka = (__u64 *)key.a, *kb = (__u64 *)key.b;
	int src_after = endpoint_after(ka, sport, kb, dport);
	if (src_after) {
		__u64 t0 = ka[0], t1 = ka[1];
		ka[0] = kb[0];
		ka[1] = kb[1];
		kb[0] = t0;
		kb[1] = t1;
		key.port_a = dport;
		key.port_b = sport;
	} else {
		key.port_a = sport;
		key.port_b = dport;
	}
	key.proto = proto;
	key.vlan = vlan & vlan_mask; // VLAN zones: see vlan_mask

	struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
	if (!v)
		return punt(ctx, PUNT_MISS);
	{
		// Two-phase offer (offload.go OfferPending): a pending flow
		// has revoked[slot] = gen | PEND_BIT | count<<32.
		__u32 pslot = v->slot;
		__u64 *prv = bpf_map_lookup_elem(&revoked, &pslot);
		if (prv && punt_pending(ctx, prv, v->gen, pslot))
			return to_slow_path(ctx);
	}

	// -- Entry.DirOf: the packet runs from A unless its source is B. --
	__u32 fromA = !src_after;
	__u32 dir = (fromA != (__u32)v->orig_is_b) ? 0 : 1;

	// -- statemachine ctinfo: the CtState the Go tracker gives. --
	__u8 status = v->status;
	__u8 ct;
	if (dir != 0 || (status & ST_SEEN_REPLY))
		ct = CT_ESTABLISHED;
	else if (status & ST_EXPECTED)
		ct = CT_RELATED;
	else
		ct = CT_NEW;
	// The cached verdict contract: bit 0 accept, bits 1..5 the CtState,
	// bit 6 the ingress port. A frame on the other port than the byte
	// says (spoofed) is not taken.
	__u8 want = 1 | (ct << 1) | ((port_id & 1) << 6);
	__u8 have = dir ? v->verdict[1] : v->verdict[0];
	if (have != want)
		return punt(ctx, PUNT_VERDICT);
	if (status & (ST_UNTRACKED | ST_DYING) || v->proto != proto)
		return punt(ctx, PUNT_STATE);

	if (proto == PROTO_TCP) {
		// statemachine tcpError + tcpClass: only ACK or ACK|URG of
		// FIN|SYN|RST|ACK|URG (PSH, ECE, CWR free): class ack, valid.
		// nf_conntrack_tcp_packet in ESTABLISHED: ack -> ESTABLISHED,
		// no state change; ASSURED and SEEN_REPLY already set, so
		// nothing but the window data and the timeout changes.
		__u8 f = tflags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG);
		if (f != TCP_ACK && f != (TCP_ACK | TCP_URG))
			return punt(ctx, PUNT_STATE);
		if (v->tcp_state != TCP_ESTABLISHED ||
		    (status & (ST_SEEN_REPLY | ST_ASSURED)) != (ST_SEEN_REPLY | ST_ASSURED))
			return punt(ctx, PUNT_STATE);
	}

	// -- packet.Parse with VerifyChecksum: a bad one is INVALID in Go. --
	// [csum] A partial one is valid with or without it: completed below,
	// after the last punt (csum_partial; it calls csum_ok, and
	// csum_frags [jumbo] for what csum_ok cannot see).
	int partial = 0;
	if (verify) {
		partial = csum_partial(ctx, saddr_off, l4off, seg, proto | (v6 << 8) | ((v->csum != 0) << 9));
		if (partial < 0)
			return punt(ctx, PUNT_CSUM);
	}

	__u32 egress = (port_id & 1) ^ 1;
	// Set the redirect now: it fails (XDP_ABORTED, flags 0) when the
	// other port is not in ports_devmap, before any store. A later punt
	// calls bpf_redirect_map(&xsks, ...), which replaces the target.
	if (bpf_redirect_map(&ports_devmap, egress, 0) != XDP_REDIRECT)
		return punt(ctx, PUNT_NODEV);
	__u32 slot = v->slot;
	__u64 *rv = bpf_map_lookup_elem(&revoked, &slot);
	if (!rv)
		return punt(ctx, PUNT_REVOKED);
	__u64 now = bpf_ktime_get_ns() + clock_adjust;

	// Revocation and the lock in one step: TakeBack swaps revoked[slot]
	// from gen to 0 when no program holds the lock, so a packet either
	// got the lock before (its update is in what TakeBack reads) or
	// finds 0 here and punts.
	__u64 gen = v->gen;
	int reason = lock_flow(rv, gen);
	if (reason)
		return punt(ctx, reason);
	reason = -1;
	// The clock of one flow never runs backwards (a packet that read the
	// clock on another CPU before the previous holder of the lock).
	if (now < v->last_seen)
		now = v->last_seen;
	// flowtable Shard.walk: an entry with Expires <= now is gone.
	if ((__s64)(v->expires - now) <= 0) {
		reason = PUNT_EXPIRED;
		goto unlock;
	}

	if (proto == PROTO_UDP) {
		// statemachine udpPacket (kernel nf_conntrack_udp_packet) and
		// Update's SEEN_REPLY: take only packets that change no bit.
		if (!(status & ST_SEEN_REPLY)) {
			if (dir != 0) { // the first reply sets SEEN_REPLY
				reason = PUNT_STATE;
				goto unlock;
			}
			v->expires = now + v->to_main;
		} else if ((__s64)(now - v->udp_created) <= (__s64)UDP_STREAM_AFTER) {
			v->expires = now + v->to_main;
		} else if (status & ST_ASSURED) {
			v->expires = now + v->to_alt;
		} else { // would become ASSURED: Go does it
			reason = PUNT_STATE;
			goto unlock;
		}
	} else {
		// statemachine tcpInWindow (kernel tcp_in_window) for an
		// ACK-class segment without SYN, FIN or RST.
		struct peer *s, *r;
		if (dir) {
			s = &v->peer[1];
			r = &v->peer[0];
		} else {
			s = &v->peer[0];
			r = &v->peer[1];
		}
		__u32 end = seq + paylen; // segEnd: no SYN, no FIN
		__u32 sack = ack;
		__u32 w = win;
		if (r->flags & TF_SACK_PERM) {
			// tcpSACK: highest right edge after ack.
#pragma unroll
			for (int k = 0; k < 4; k++)
				if (k < sk.n && after(sk.right[k], sack))
					sack = sk.right[k];
		}
		if (s->maxwin == 0) {
			// The mid-connection initialisation of a direction: not
			// on an ASSURED flow in practice; Go does it.
			reason = PUNT_WINDOW;
			goto unlock;
		}
		int liberal = v->liberal || (s->flags & TF_BE_LIBERAL);
		__u32 maxackwin = s->maxwin > MAX_ACK_WIN_CONST ? s->maxwin : MAX_ACK_WIN_CONST;
		int mode; // 0: full update, 1: accepted with no update, 2: check I's record
		if (!before(seq, s->maxend + 1)) {
			// I: seq beyond the receiver's window.
			__u32 overshot = end - s->maxend + 1;
			int ackok = after(sack, r->end - maxackwin - 1);
			int inrecv = r->maxwin != 0 && after(end, s->end - r->maxwin - 1);
			if (inrecv && ackok && overshot <= r->maxwin && before(sack, r->end + 1))
				mode = 2; // accepted if liberal, else IGNORE
			else
				mode = 1; // accepted if liberal, else INVALID
			if (!liberal) {
				reason = PUNT_WINDOW;
				goto unlock;
			}
		} else if (!before(sack, r->end + 1) ||                                  // III
			   (r->maxwin != 0 && !after(end, s->end - r->maxwin - 1)) ||    // II
			   !after(sack, r->end - maxackwin - 1)) {                        // IV
			if (!liberal) { // INVALID (III) or IGNORE (II, IV)
				reason = PUNT_WINDOW;
				goto unlock;
			}
			mode = 1;
		} else {
			mode = 0;
		}

		// From here on nothing punts: the stores begin.
		if (mode == 2) {
			s->end = end;
			s->flags |= TF_DATA_UNACK;
		} else if (mode == 0) {
			w <<= s->scale & 15;
			__u32 swin = w + (sack - ack);
			if (s->maxwin < swin)
				s->maxwin = swin;
			if (after(end, s->end)) {
				s->end = end;
				s->flags |= TF_DATA_UNACK;
			}
			if (!(s->flags & TF_MAXACK_SET)) {
				s->maxack = ack;
				s->flags |= TF_MAXACK_SET;
			} else if (after(ack, s->maxack)) {
				s->maxack = ack;
			}
			if (r->maxwin != 0 && after(end, s->maxend))
				r->maxwin += end - s->maxend;
			if (after(sack + w, r->maxend - 1)) {
				r->maxend = sack + w;
				if (w == 0)
					r->maxend++;
			}
			if (ack == r->end)
				r->flags &= ~TF_DATA_UNACK;
			// Retransmission count: the same ACK-class segment again.
			if (v->last_dir == dir && v->last_seq == seq && v->last_ack == ack &&
			    v->last_end == end && v->last_win == win) {
				v->retrans++;
			} else {
				v->last_dir = dir;
				v->last_seq = seq;
				v->last_ack = ack;
				v->last_end = end;
				v->last_win = win;
				v->retrans = 0;
			}
		}
		// tcpPacket after the window check.
		v->last_index = CLASS_ACK;
		v->last_dir = dir;
		// Timeout of ESTABLISHED (tcpPacket's switch, minus the RST row).
		__u64 to = v->to_main;
		if (v->retrans >= v->max_retrans && to > v->to_maxretrans)
			to = v->to_maxretrans;
		else if (((v->peer[0].flags | v->peer[1].flags) & TF_DATA_UNACK) && to > v->to_alt)
			to = v->to_alt;
		else if (v->last_win == 0 && to > v->to_maxretrans)
			to = v->to_maxretrans;
		v->expires = now + to;
	}
	v->last_seen = now;
	if (dir) {
		v->packets[1]++;
		v->bytes[1] += iplen;
	} else {
		v->packets[0]++;
		v->bytes[0] += iplen;
	}
unlock:
	unlock_flow(rv, gen);
	if (reason >= 0)
		return punt(ctx, reason);

	__u32 k = port_id;
	struct port_stats *st = bpf_map_lookup_elem(&stats, &k);
	if (st) {
		st->fast_packets++;
		st->fast_bytes += frame_len;
	}
	// [csum] Complete a partial checksum (the field is within the header
	// parsed above, so the check never fails).
	if (partial > 0) {
		__u8 *ck = pkt + (l4off & MAX_FRAME) + (proto == PROTO_TCP ? 16 : 6);
		if ((void *)(ck + 2) <= data_end) {
			__u16 c = (__u16)(partial - 1);
			__builtin_memcpy(ck, &c, 2);
			if (st)
				st->csum_completed++;
		}
	}
	return XDP_REDIRECT; // to ports_devmap[egress], set above
}

// ---- Redirects the kernel could not complete (offload.go Stats) -------
//
// The program counts a frame forwarded (fast_packets) when it returns
// XDP_REDIRECT; the kernel sends it afterwards, and drops it when the
// egress port cannot take it: down (xdp_ok_fwd_dev: ENETDOWN, reported by
// the xdp_redirect_err tracepoint with our DEVMAP's id), too long for its
// MTU (EMSGSIZE, same), or refused by its driver at the flush (a veth
// whose peer is down or has no NAPI: the xdp_devmap_xmit tracepoint, with
// the drops). Two tracing programs count those per ingress port into
// redirect_errs; they run for every XDP redirect error on the machine and
// keep only ours: the DEVMAP id, or the egress devices SetPorts wrote
// into egress (ifindex and network namespace inode; ifindexes repeat
// across namespaces). Loaded only when the kernel has BTF (tp_btf).

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct egress_dev {
	__u32 ifindex; // 0: not set
	__u32 netns;   // inode of its network namespace
};

// egress: DEVMAP slot (the egress port) -> its device, as SetPorts set it.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct egress_dev);
	__uint(max_entries, 2);
} egress SEC(".maps");

// redirect_errs: per ingress port, per CPU, the frames taken (counted in
// fast_packets) that the kernel then dropped.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} redirect_errs SEC(".maps");

volatile const __u32 devmap_id = 0; // ports_devmap's id, set by Load

static __always_inline void count_redirect_errs(__u32 egress_slot, __u64 n)
{
	__u32 in = (egress_slot & 1) ^ 1;
	__u64 *c = bpf_map_lookup_elem(&redirect_errs, &in);
	if (c)
		*c += n;
}

SEC("tp_btf/xdp_redirect_err")
int count_redirect_err(__u64 *ctx)
{
	// (dev, xdp, tgt, err, map_type, map_id, index)
	__u32 map_id = (__u32)ctx[5], index = (__u32)ctx[6];
	if (map_id == devmap_id && devmap_id != 0)
		count_redirect_errs(index, 1);
	return 0;
}

SEC("tp_btf/xdp_devmap_xmit")
int count_devmap_xmit(__u64 *ctx)
{
	// (from_dev, to_dev, sent, drops, err)
	const struct net_device *to = (const void *)ctx[1];
	int drops = (int)ctx[3];
	if (drops <= 0 || !to)
		return 0;
	int ifindex = to->ifindex;
	unsigned int inum = to->nd_net.net->ns.inum;
#pragma unroll
	for (__u32 slot = 0; slot < 2; slot++) {
		__u32 k = slot;
		struct egress_dev *e = bpf_map_lookup_elem(&egress, &k);
		if (e && e->ifindex != 0 && e->ifindex == (__u32)ifindex && e->netns == inum)
			count_redirect_errs(slot, (__u64)drops);
	}
	return 0;
}
