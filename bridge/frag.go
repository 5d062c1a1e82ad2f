package bridge

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// The kernel reassembles before conntrack; statewire does not. Instead the
// first fragment of a datagram (the one with the L4 header) is tracked and
// judged, and the verdict is remembered here so that the later fragments of
// the same datagram (same addresses, protocol and IP ID) get it too. A later
// fragment whose first fragment was not seen (or was forgotten) is INVALID
// and the rules decide. See CONFORMANCE.md.
//
// Several workers. A first fragment has ports, so it goes to the worker
// owning its flow's shard (handed off over an SPSC ring when another
// worker received it) and is judged there, later. A later fragment has no
// ports and no flow. Judged at once where it arrived, it overtook its
// first fragment and found no verdict. So the receiving worker records in
// the datagram's record that the first fragment was handed to worker k
// (FragCache.Steer) and hands the later fragments it receives to k as well
// (FragCache.SteeredTo): the same ring, so k judges them after the first
// one, and their verdicts come back behind its verdict (the wire keeps the
// datagram's order). This holds whenever all fragments of a datagram arrive
// on one queue, which NIC RSS and veth do (fragments hash by addresses
// only, or by the sending socket). A later fragment received on another
// queue than its first fragment is still judged where it arrives and may
// find no verdict yet: INVALID and counted (Stats.FragUnknown), as before.
//
// Reordered on the wire (a later fragment before the first): the kernel
// holds the later fragment in its reassembly queue and judges the whole
// datagram once complete, so every fragment gets the first one's verdict.
// statewire judges the later fragment on arrival: its first fragment is not
// known, so it is INVALID (Stats.FragUnknown) and the rules decide; under
// a policy dropping INVALID the datagram is lost. Holding such fragments
// until their first arrives (spec §8 allows it, bounded in memory and
// time) needs UMEM frames held across batches, their own expiry and a drain
// at Stop; it is not done. A sender fragments in order, so only a path that
// reorders packets shows the difference.
//
// Overlaps (RFC 1858, RFC 3128, RFC 5722). The kernel's reassembly
// (inet_frag_queue_insert) drops a fragment that lies wholly inside data it
// already holds (a duplicate: the queue is kept) and discards the whole
// datagram when a fragment overlaps part of it, or contradicts its known
// end. Without reassembly statewire cannot compare bytes, but it can do the
// same arithmetic: each datagram's record remembers the byte ranges seen so
// far as a few coalesced runs. A duplicate fragment is INVALID; a partial
// overlap makes that fragment and every later one of the datagram INVALID
// (the fragments forwarded before it cannot be recalled, but the receiver
// never gets a complete datagram). Both carry packet.ReasonFragmentOverlap
// and are dropped whatever the rules say (DropMalformed), as the kernel's
// defragmentation drops them before conntrack (spec/conntrack.md §8 calls
// them INVALID; they are counted so).

// Fragment memory lifetimes, as the kernel's reassembly timeouts
// (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time).
const (
	fragTimeoutV4 = 30e9
	fragTimeoutV6 = 60e9
)

// maxFragRuns is how many disjoint byte ranges a datagram's record holds. A
// sender emits fragments in order, so they coalesce into one run; more
// holes than this only come from reordering on a scale no real path shows,
// or from an attacker, and the datagram is then treated as overlapping (a
// bounded record must not let a ninth hole hide an overlap).
const maxFragRuns = 8

type fragKey struct {
	src, dst packet.Addr
	id       uint32
	vlan     uint16
	proto    uint8
	l3       uint8
}

// fragRun is a byte range [start, end) of a datagram's fragmentable part.
type fragRun struct{ start, end uint32 }

// fragWays is how many datagrams a bucket of the cache remembers: the
// datagrams whose keys hash to one bucket share its ways, so a few of them
// in progress at once (several workers, or a first fragment handed to
// another worker while the next datagrams come in) do not take each
// other's records.
const fragWays = 4

// fragBucket is one bucket of the cache: fragWays datagrams under the
// bucket's own lock. tags holds a few bits of each way's key hash (0: never
// used), so a look-up reads the other ways only when their tag matches.
type fragBucket struct {
	mu   sync.Mutex
	tick uint32 // counts uses of the ways; a way's stamp is the tick of its last use
	tags [fragWays]uint32
	ways [fragWays]fragDatagram
	_    [(64 - fragBucketSize%64) % 64]byte // a bucket per cache line run: workers locking neighbours do not share a line
}

const fragBucketSize = unsafe.Sizeof(sync.Mutex{}) + 4 + fragWays*4 + fragWays*unsafe.Sizeof(fragDatagram{})

// fragDatagram is what a way of a bucket remembers of one datagram.
type fragDatagram struct {
	key     fragKey
	expires int64
	stamp   uint32 // the bucket's tick at the last use of this way (least recently used goes first)
	res     Result
	runs    [maxFragRuns]fragRun // disjoint, unsorted, never adjacent
	nruns   uint8
	end     uint32 // the datagram's length, once its last fragment (MF clear) was seen; 0 unknown
	bad     bool   // an overlap was seen: the rest of the datagram is INVALID
	used    bool
	// first is set once the first fragment was judged: res and runs are
	// the datagram's. A way can be used without it: a worker handed the
	// first fragment to its flow's owner (steer) and the verdict is not
	// recorded yet.
	first bool
	// steer is 1 + the worker the first fragment was handed to (0: it was
	// judged where it arrived). The later fragments received by the same
	// worker follow it over the same SPSC ring, so they are judged after it
	// (see FragCache.Steer).
	steer uint16
}

// fragOutcome is what a fragment's byte range means for its datagram.
type fragOutcome uint8

const (
	fragFresh   fragOutcome = iota // new bytes: the fragment is fine
	fragDup                        // wholly inside bytes already seen
	fragOverlap                    // overlaps part of them, contradicts the end, or the datagram is already bad
)

// FragCache remembers the verdicts of first fragments and the byte ranges
// of each datagram seen so far. It is a fixed-size, set-associative table:
// a datagram's key hashes to a bucket of fragWays ways, and a new datagram
// takes a free or expired way, else the least recently used of the
// complete datagrams (nothing more will be asked of them but duplicates),
// else the least recently used datagram still in progress, which is then
// forgotten (counted as an eviction: its later fragments find no verdict).
// So a datagram in progress is never forgotten while its bucket has room
// for the newcomer elsewhere. It is shared by all workers of a bridge and
// safe for concurrent use. It cannot be per worker: a first fragment is judged by the worker
// owning its flow, while the later ones (no ports, so no flow) are judged
// by the worker that received them, or the one that worker handed their
// first fragment to (Steer, SteeredTo). Each bucket has its own lock, so
// workers wait on each other only for fragments of datagrams sharing a
// bucket, never for the cache as a whole (a fragment flood on one worker does not stall
// the others' fragments). Memory is fixed at creation; nothing is allocated
// per fragment.
type FragCache struct {
	buckets []fragBucket
	mask    uint64
	seed    uint64

	evictions  atomic.Uint64 // datagrams forgotten before they completed, for a newer one in their bucket
	duplicates atomic.Uint64 // fragments wholly inside bytes already seen
	overlaps   atomic.Uint64 // datagrams discarded for a partial overlap, a contradicting end or too many holes
	steered    atomic.Uint64 // later fragments sent after their first fragment to its flow's owner
}

// NewFragCache returns a cache remembering size datagrams (rounded up to a
// power of two, at least fragWays): size/fragWays buckets of fragWays ways.
func NewFragCache(size int, seed uint64) *FragCache {
	n := 1
	for n*fragWays < size {
		n <<= 1
	}
	return &FragCache{buckets: make([]fragBucket, n), mask: uint64(n - 1), seed: seed}
}

// FragCounters returns Evictions, Duplicates and Overlaps (safe from any
// goroutine).
func (c *FragCache) FragCounters() (evictions, duplicates, overlaps uint64) {
	return c.evictions.Load(), c.duplicates.Load(), c.overlaps.Load()
}

// Steered returns how many later fragments were handed to the worker
// judging their datagram's first fragment, instead of being judged where
// they arrived (safe from any goroutine).
func (c *FragCache) Steered() uint64 { return c.steered.Load() }

func keyOfFragment(p *packet.Packet) fragKey {
	return fragKey{src: p.Src, dst: p.Dst, id: p.FragID, vlan: p.VLAN, proto: p.Proto, l3: p.IPVersion}
}

// extentOf returns the byte range of p's datagram that p carries, by its IP
// header. For an IPv6 first fragment the extension headers after the
// fragment header are not counted, so its range may end a little early:
// that can hide an overlap of those header bytes, never invent one.
func extentOf(p *packet.Packet) (start, end uint32) {
	hdr := uint32(p.L4Off) - uint32(p.L3Off)
	if p.L4Off < p.L3Off || hdr > p.IPLen {
		return uint32(p.FragOffset), uint32(p.FragOffset)
	}
	return uint32(p.FragOffset), uint32(p.FragOffset) + p.IPLen - hdr
}

// bucket returns the bucket of k and the tag of k in it (never 0).
func (c *FragCache) bucket(k *fragKey) (*fragBucket, uint32) {
	var b [16 + 16 + 4 + 2 + 2]byte
	copy(b[0:], k.src[:])
	copy(b[16:], k.dst[:])
	b[32], b[33], b[34], b[35] = byte(k.id>>24), byte(k.id>>16), byte(k.id>>8), byte(k.id)
	b[36], b[37] = byte(k.vlan>>8), byte(k.vlan)
	b[38], b[39] = k.proto, k.l3
	h := xxhash.Sum64(b[:]) ^ c.seed
	return &c.buckets[h&c.mask], uint32(h>>32) | 1
}

// find returns the way of b remembering the datagram k (tag: its tag),
// expired or not, or nil. A datagram has at most one way: every record is
// made where find found none.
func (b *fragBucket) find(k *fragKey, tag uint32) *fragDatagram {
	for i := range b.ways {
		if b.tags[i] == tag && b.ways[i].used && b.ways[i].key == *k {
			return &b.ways[i]
		}
	}
	return nil
}

// touch marks s, a way of b, as the most recently used.
func (b *fragBucket) touch(s *fragDatagram) {
	b.tick++
	s.stamp = b.tick
}

// take returns the way of b that a new datagram (tag: its tag) takes at
// now and tags it: a free or expired way; else the least recently used
// way of a complete datagram; else the least recently used way, whose
// datagram, still in progress (a verdict waiting for later fragments, or a
// first fragment handed off and not judged yet), is forgotten: counted as
// an eviction.
func (c *FragCache) take(b *fragBucket, tag uint32, now int64) *fragDatagram {
	victim, done := -1, false
	var age uint32
	for i := range b.ways {
		s := &b.ways[i]
		if !s.used || s.expires <= now {
			victim = i
			break
		}
		complete := s.first && s.complete()
		a := b.tick - s.stamp // wraps with the tick
		if victim < 0 || complete && !done || complete == done && a > age {
			victim, done, age = i, complete, a
		}
	}
	s := &b.ways[victim]
	if s.used && s.expires > now && !done {
		c.evictions.Add(1)
	}
	b.tags[victim] = tag
	return s
}

// complete reports whether every byte of the datagram was seen.
func (s *fragDatagram) complete() bool {
	return s.end != 0 && s.nruns == 1 && s.runs[0] == fragRun{0, s.end}
}

// add records the range [start, end) of a fragment (last: MF clear) and
// says what it means, as the kernel's inet_frag_queue_insert and
// ip_frag_queue do. Only fragFresh changes the runs.
func (s *fragDatagram) add(start, end uint32, last bool) fragOutcome {
	if s.bad {
		return fragOverlap
	}
	runs := s.runs[:s.nruns]
	for _, r := range runs {
		if start >= r.start && end <= r.end && end > start {
			return fragDup
		}
	}
	switch {
	case last && s.end != 0 && end != s.end:
		// A second, different end of the datagram.
		s.bad = true
		return fragOverlap
	case !last && s.end != 0 && end > s.end:
		// Bytes beyond the known end.
		s.bad = true
		return fragOverlap
	}
	if last {
		for _, r := range runs {
			if r.end > end {
				// Bytes already seen beyond this "last" fragment.
				s.bad = true
				return fragOverlap
			}
		}
		s.end = end
	}
	if end <= start {
		return fragFresh // no bytes: nothing to overlap
	}
	for _, r := range runs {
		if start < r.end && end > r.start {
			s.bad = true
			return fragOverlap
		}
	}
	// Coalesce with the run ending at start and/or the one starting at end.
	before, after := -1, -1
	for i, r := range runs {
		if r.end == start {
			before = i
		}
		if r.start == end {
			after = i
		}
	}
	switch {
	case before >= 0 && after >= 0:
		s.runs[before].end = s.runs[after].end
		s.runs[after] = s.runs[s.nruns-1]
		s.nruns--
	case before >= 0:
		s.runs[before].end = end
	case after >= 0:
		s.runs[after].start = start
	case int(s.nruns) < maxFragRuns:
		s.runs[s.nruns] = fragRun{start, end}
		s.nruns++
	default:
		s.bad = true
		return fragOverlap
	}
	return fragFresh
}

// store remembers r for the datagram p is the first fragment of, and
// returns what p's bytes mean for that datagram: a first fragment arriving
// again while its datagram is still incomplete is a duplicate or an
// overlap, and the verdict already remembered stays.
func (c *FragCache) store(p *packet.Packet, now int64, r *Result) fragOutcome {
	k := keyOfFragment(p)
	timeout := int64(fragTimeoutV4)
	if p.IPVersion == 6 {
		timeout = fragTimeoutV6
	}
	start, end := extentOf(p)
	b, tag := c.bucket(&k)
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.find(&k, tag)
	var steer uint16
	switch {
	case s == nil:
		s = c.take(b, tag, now)
	case s.expires <= now:
	case s.first && !s.complete():
		b.touch(s)
		out := s.add(start, end, false)
		c.count(out)
		return out
	case !s.first:
		// The receiving worker steered this first fragment here: its later
		// fragments keep following it.
		steer = s.steer
	}
	*s = fragDatagram{key: k, expires: now + timeout, res: *r, used: true, first: true, steer: steer}
	b.touch(s)
	s.add(start, end, false)
	return fragFresh
}

// Steer records that the first fragment p (offset 0, more fragments) was
// handed to worker owner, the owner of its flow, at time now. Until the
// datagram expires or its way is taken by another one, SteeredTo for
// its later fragments says owner: the receiving worker hands them over the
// same SPSC ring, behind the first fragment, so that the owner judges them
// after it has recorded the verdict (judged at once on the receiving
// worker, they could overtake it and find no verdict).
//
// A record of a judged, still incomplete datagram is kept (a second first
// fragment is a duplicate or an overlap, which the owner finds); an
// expired or complete record of the same datagram (an IP ID reused) gives
// way to a record with no verdict yet, and a datagram not remembered takes
// a way as store does (FragCache).
func (c *FragCache) Steer(p *packet.Packet, now int64, owner int) {
	k := keyOfFragment(p)
	timeout := int64(fragTimeoutV4)
	if p.IPVersion == 6 {
		timeout = fragTimeoutV6
	}
	b, tag := c.bucket(&k)
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.find(&k, tag)
	switch {
	case s == nil:
		s = c.take(b, tag, now)
	case s.expires > now && (!s.first || !s.complete()):
		s.steer = uint16(owner) + 1
		b.touch(s)
		return
	}
	*s = fragDatagram{key: k, expires: now + timeout, used: true, steer: uint16(owner) + 1}
	b.touch(s)
}

// SteeredTo returns the worker a later fragment p must be handed to at time
// now, the one its first fragment was handed to (Steer), or -1 when the
// first fragment was judged where it arrived or is not known.
func (c *FragCache) SteeredTo(p *packet.Packet, now int64) int {
	k := keyOfFragment(p)
	b, tag := c.bucket(&k)
	b.mu.Lock()
	var steer uint16
	if s := b.find(&k, tag); s != nil && s.expires > now {
		steer = s.steer
		b.touch(s)
	}
	b.mu.Unlock()
	return int(steer) - 1
}

// count counts an outcome of add.
func (c *FragCache) count(out fragOutcome) {
	switch out {
	case fragDup:
		c.duplicates.Add(1)
	case fragOverlap:
		c.overlaps.Add(1)
	}
}

// later records a later fragment of p's datagram and returns the result
// remembered for its first fragment and what p's bytes mean; ok is false
// when the first fragment is not known.
func (c *FragCache) later(p *packet.Packet, now int64) (res Result, out fragOutcome, ok bool) {
	k := keyOfFragment(p)
	start, end := extentOf(p)
	b, tag := c.bucket(&k)
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.find(&k, tag)
	if s == nil || !s.first || s.expires <= now {
		return Result{}, fragFresh, false
	}
	b.touch(s)
	wasBad := s.bad
	out = s.add(start, end, !p.MoreFrags)
	if !wasBad {
		c.count(out)
	}
	return s.res, out, true
}

// laterFragment judges a non-first fragment by its datagram's first one.
func (pl *Pipeline) laterFragment(s *Settings, p *packet.Packet, in Port, now int64, r Result) Result {
	if pl.frags != nil {
		if first, out, ok := pl.frags.later(p, now); ok {
			if out != fragFresh {
				pl.overlapping(&r)
				return r
			}
			pl.stats.FragCached++
			first.Parse = r.Parse
			return first
		}
	}
	pl.stats.FragUnknown++
	r.State = statemachine.StateInvalid
	pl.stats.Invalid++
	pl.filter(s, p, in, &r)
	return r
}

// overlapping makes r an INVALID drop with packet.ReasonFragmentOverlap.
// The kernel's reassembly discards such fragments before conntrack and the
// rules ever see them, so no rule set can forward them here either. The
// parser counted the frame as parsed (it cannot see other fragments); the
// count moves to the overlap reason, so Stats.Parse still sums to the
// frames received.
func (pl *Pipeline) overlapping(r *Result) {
	pl.stats.Parse[r.Parse]--
	r.Parse = packet.ReasonFragmentOverlap
	pl.stats.Parse[r.Parse]++
	if r.State != statemachine.StateInvalid {
		pl.stats.Invalid++
	}
	r.State = statemachine.StateInvalid
	r.Tracked = false
	r.Rule = rules.PolicyRule
	r.Verdict, r.Drop = Drop, DropMalformed
}

// noteFirstFragment remembers the result of a first fragment, or, when the
// datagram's first fragment was already seen, turns r into an overlap.
func (pl *Pipeline) noteFirstFragment(p *packet.Packet, now int64, r *Result) {
	if pl.frags == nil || !p.Fragment || p.FragOffset != 0 || !p.MoreFrags {
		return
	}
	if pl.frags.store(p, now, r) != fragFresh {
		pl.overlapping(r)
	}
}
