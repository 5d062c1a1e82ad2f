package flowtable

import (
	"sync/atomic"
	"unsafe"

	"github.com/statewire/statewire/statemachine"
)

// InsertResult says what Insert did.
type InsertResult uint8

const (
	// Inserted: a new entry was created.
	Inserted InsertResult = iota
	// InsertedAfterEarlyDrop: the shard was full; non-ASSURED entries near
	// the key's bucket were evicted to make room, then the entry was created.
	InsertedAfterEarlyDrop
	// InsertExists: a live entry with this key exists; it is returned.
	InsertExists
	// TableFull: the shard was full and nothing could be evicted; the packet
	// must be dropped (kernel "table full, dropping packet").
	TableFull
)

// earlyDropBuckets is how many consecutive buckets early drop scans
// (kernel NF_CT_EVICTION_RANGE).
const earlyDropBuckets = 8

// batchChunk is how many lookups LookupBatch overlaps at once.
const batchChunk = 64

// smallShardBytes: below this much used slot and bucket memory LookupBatch
// just loops: the shard stays in the core's L2 cache and the extra passes
// cost more than the misses they would overlap. Above it the passes win:
// at 10k entries (1.3 MB of slots, more than this EPYC's 1 MiB L2 per
// core, so every lookup went to L3) the batch's misses overlapped took 6-12%
// less time than the loop, interleaved in one process on a loaded machine
// (the threshold was 2 MiB, measured at 3% the other way on another host).
const smallShardBytes = 512 << 10

// deepShardBytes: above this much used slot and bucket memory LookupBatch
// also touches the second entry of chains whose first is not the key
// (measured: at 1M entries, 160 MB, BenchmarkPipelineBatchEstablished1M
// took 9% less time a frame; at 10k, 1.3 MB, where that step hits L3, the
// extra pass cost 1.5% more). Past a few MiB a shard's slots outgrow the
// L3 share of a core.
const deepShardBytes = 8 << 20

// Stats are a shard's counters, named after /proc/net/stat/nf_conntrack.
type Stats struct {
	Found        uint64 // lookups that found a live entry
	Insert       uint64 // entries created (kernel "new" and "insert": we confirm on creation)
	InsertFailed uint64 // Insert found the key already present
	Drop         uint64 // Insert failed: table full and nothing to early-drop
	EarlyDrop    uint64 // non-ASSURED (or closing TCP under pressure) entries evicted
	Delete       uint64 // entries removed for any reason (expiry, Delete, early drop)
	Expired      uint64 // entries removed because their timeout passed (part of Delete)
	Count        uint64 // live entries
}

// add accumulates o into s.
func (s *Stats) add(o *Stats) {
	s.Found += o.Found
	s.Insert += o.Insert
	s.InsertFailed += o.InsertFailed
	s.Drop += o.Drop
	s.EarlyDrop += o.EarlyDrop
	s.Delete += o.Delete
	s.Expired += o.Expired
	s.Count += o.Count
}

// Shard is one single-writer part of the table. Every method except the
// ones documented otherwise may be called only by the goroutine that owns
// the shard (its worker). See the package documentation.
type Shard struct {
	entries []Entry  // preallocated slots; no pointers, so the GC never scans them
	buckets []uint32 // chain heads: index+1 into entries, 0 = empty
	mask    uint32   // len(buckets)-1
	hwm     uint32   // slots [0, hwm) have been allocated at least once
	free    uint32   // index+1 of the first free slot below hwm, chained through next
	// populated is where populateAhead made the slots resident up to;
	// noPopulate is set when the kernel refused it.
	populated  uint32
	noPopulate bool
	count      int
	max        int
	max95      int // sweep evicts while count >= max95 (0: never)
	cursor     uint32
	id         uint16
	seed       uint64
	exp        *Expectations
	stats      Stats
	sink       uint32 // keeps LookupBatch's touching loads alive

	// aux is the caller's per-slot state (Config.AuxSize bytes per slot,
	// Table.Aux); meta, with the table in a state file, is where publish
	// keeps the counters for the next process. Owner only.
	aux  []byte
	meta *shardMeta
	// marks are the connection marks by slot, nil until one is set
	// (mark.go). Owner only.
	marks []uint32

	// onRemove, when set, sees every entry just before its slot is freed
	// (conntrack -E [DESTROY]). Nil while nobody listens: one predictable
	// branch per removal.
	onRemove func(s *Shard, e *Entry)

	// onExpiry, when set, is asked for the current Expires of an
	// offloaded entry (Entry.Offloaded) whose own Expires has passed,
	// before lazy expiry, early drop or the sweep removes it: the fast
	// path keeps the live value.
	onExpiry func(e *Entry, now int64) int64

	// onSnapshot, when set, fills the live values of an offloaded
	// entry's copy (the fast path's Expires) for listings and events.
	// Entries that are not offloaded never call it.
	onSnapshot func(e *Entry, out *EntrySnapshot)

	// links records which entries are children of which master, for the
	// use= of listings (use.go). Owner only, but links.n, which other
	// goroutines read to skip shards without children.
	links childLinks

	// Published for other goroutines by ServeRequests (reads.go), and
	// the mailbox it serves (requests.go): posted counts the requests in
	// req and ctl.
	pub     [numPub]atomic.Uint64
	lastPub Stats
	posted  atomic.Int32
	req     atomic.Pointer[readRequest]
	ctl     atomic.Pointer[ctlRequest]
	// notify, when set (Table.SetNotify), is called by a poster after
	// it posted: it wakes a sleeping owner.
	notify func()

	_ [64]byte // keep neighbouring shards' hot fields off this cache line
}

// ID returns the shard's index in its table.
func (s *Shard) ID() int { return int(s.id) }

// Len returns the number of live entries. Owner only; Table.Len for others.
func (s *Shard) Len() int { return s.count }

// Max returns the most entries the shard holds.
func (s *Shard) Max() int { return s.max }

// Stats returns the shard's counters. Owner only; Table.Stats for others.
func (s *Shard) Stats() Stats {
	st := s.stats
	st.Count = uint64(s.count)
	return st
}

// Lookup returns the live entry with key k (hash = Table.HashKey(k)), or
// nil. An entry found expired (Expires <= now) is deleted and nil returned:
// lazy expiry, so a stale connection is never resurrected by a late packet.
func (s *Shard) Lookup(k *Key, hash uint64, now int64) *Entry {
	b := uint32(hash) & s.mask
	e := s.walk(s.buckets[b], k, b, now)
	if e != nil {
		s.stats.Found++
	}
	return e
}

// Version changes whenever an entry is inserted or removed (for any
// reason: expiry, early drop, Delete). A result of LookupBatch is the
// answer Lookup would give at the same now for as long as Version has not
// changed: entries are only ever found or lost by insertion and removal.
func (s *Shard) Version() uint64 { return s.stats.Insert + s.stats.Delete }

// Hit counts a LookupBatch result the caller used as a lookup that found
// its entry (Stats.Found), so that a batch counts exactly what a loop of
// Lookup would.
func (s *Shard) Hit() { s.stats.Found++ }

// LookupBatch looks up keys[i] (with hashes[i]) into out[i] for every i
// below the shortest of the three lengths, with Lookup's semantics except
// that it counts nothing in Stats.Found: a caller that processes the batch
// in order may find a result stale (Version changed) and look up again, so
// it counts the results it uses with Hit. It
// overlaps the cache misses of the batch: it first loads every bucket head,
// then touches the first entry of every chain, then the second entry of
// every chain whose first is not the key, then walks; the loads of each
// pass are independent, so the CPU keeps many misses in flight.
func (s *Shard) LookupBatch(keys []Key, hashes []uint64, out []*Entry, now int64) {
	n := min(len(keys), len(hashes), len(out))
	used := uintptr(s.hwm)*unsafe.Sizeof(Entry{}) + uintptr(len(s.buckets))*4
	if used <= smallShardBytes {
		// The used slots fit in the caches: the extra passes cost more
		// than the misses they would overlap.
		for i := range n {
			b := uint32(hashes[i]) & s.mask
			out[i] = s.walk(s.buckets[b], &keys[i], b, now)
		}
		s.touchState(out[:n])
		return
	}
	deep := used > deepShardBytes
	var heads [batchChunk]uint32
	for base := 0; base < n; base += batchChunk {
		m := min(n-base, batchChunk)
		hs := hashes[base : base+m]
		for i := range hs {
			heads[i] = s.buckets[uint32(hs[i])&s.mask]
		}
		var sink uint32
		for i := range m {
			if h := heads[i]; h != 0 && int(h) <= len(s.entries) {
				// Both cache lines of the entry: the walk reads the
				// first (link, key, expiry), the tracker the second.
				e := &s.entries[h-1]
				sink += e.next + uint32(e.Helper)
			}
		}
		// A chain whose first entry is not the key goes on: in a shard
		// that spills out of L3, touch its second entry too, so that
		// those misses overlap as well (at half load a quarter of the
		// hits are not first in their chain, and each such step was a
		// memory miss of its own in the walk).
		ks, os := keys[base:base+m], out[base:base+m]
		if deep {
			sink += s.touchSecond(heads[:m], ks)
		}
		s.sink += sink
		for i := range ks {
			os[i] = s.walk(heads[i], &ks[i], uint32(hs[i])&s.mask, now)
		}
	}
}

// touchSecond loads the second entry of every chain (heads[i], for key
// keys[i]) whose first entry is not the key, and returns a sum of what it
// loaded for the caller's sink.
func (s *Shard) touchSecond(heads []uint32, keys []Key) uint32 {
	var sink uint32
	for i := range min(len(heads), len(keys)) {
		if h := heads[i]; h != 0 && int(h) <= len(s.entries) {
			e := &s.entries[h-1]
			if nx := e.next; nx != 0 && int(nx) <= len(s.entries) && !keyEqual(&e.key, &keys[i]) {
				e2 := &s.entries[nx-1]
				sink += e2.next + uint32(e2.Helper)
			}
		}
	}
	return sink
}

// touchState loads the second cache line of every found entry (the TCP
// state, status, cached verdict and helper the pipeline reads next), so
// that the batch's misses on it overlap instead of each stalling its own
// packet later. The walk already loaded the first line.
func (s *Shard) touchState(found []*Entry) {
	var sink uint8
	for _, e := range found {
		if e != nil {
			sink += e.Helper
		}
	}
	s.sink += uint32(sink)
}

// walk is Lookup from chain head i of bucket b (LookupBatch loads the heads
// of a batch ahead).
func (s *Shard) walk(i uint32, k *Key, b uint32, now int64) *Entry {
	for i != 0 {
		e := &s.entries[i-1]
		if keyEqual(&e.key, k) {
			if s.expired(e, now) {
				s.remove(i-1, b)
				s.stats.Expired++
				return nil
			}
			return e
		}
		i = e.next
	}
	return nil
}

// expired reports whether e's timeout has passed at now. For an offloaded
// entry whose Expires has passed it first refreshes Expires through the
// expiry hook (the fast path's value), so a flow the fast path keeps alive
// is not removed on the table's stale time.
func (s *Shard) expired(e *Entry, now int64) bool {
	if e.Conn.Expires > now {
		return false
	}
	if e.flags&flagOffloaded != 0 && s.onExpiry != nil {
		e.Conn.Expires = s.onExpiry(e, now)
		return e.Conn.Expires <= now
	}
	return true
}

// Insert creates the entry for key k (hash = Table.HashKey(k)) whose
// original direction is t (nil: from (A, PortA) to (B, PortB); ignored for
// ICMP, whose request is always original), at time now. Conn is zero except
// Proto and Created; the caller sets Expires (an entry with Expires <= now
// is gone at the next lookup). When the shard is full it early-drops
// non-ASSURED entries from the key's bucket and the next seven (stopping at
// the first bucket that yielded a drop); if none could go, it returns nil,
// TableFull. An existing live entry with the key is returned with
// InsertExists.
func (s *Shard) Insert(k *Key, hash uint64, t *Tuple, now int64) (*Entry, InsertResult) {
	b := uint32(hash) & s.mask
	for i := s.buckets[b]; i != 0; {
		e := &s.entries[i-1]
		next := e.next
		if keyEqual(&e.key, k) {
			if !s.expired(e, now) {
				s.stats.InsertFailed++
				return e, InsertExists
			}
			s.remove(i-1, b)
			s.stats.Expired++
			break
		}
		i = next
	}
	res := Inserted
	if s.count >= s.max {
		if !s.earlyDrop(b, now) {
			s.stats.Drop++
			return nil, TableFull
		}
		res = InsertedAfterEarlyDrop
	}
	var idx uint32
	if s.free != 0 {
		idx = s.free - 1
		s.free = s.entries[idx].next
	} else {
		idx = s.hwm
		s.hwm++
		if idx >= s.populated {
			s.populateAhead(idx)
		}
	}
	e := &s.entries[idx]
	gen := e.gen + 1
	*e = Entry{next: s.buckets[b], gen: gen, key: *k, flags: flagUsed}
	if s.marks != nil {
		s.marks[idx] = 0
	}
	if t != nil && !k.IsICMP() && !(t.Src == k.A && t.SrcPort == k.PortA) {
		e.flags |= flagSwapped
	}
	e.Conn.Proto = k.Proto
	s.buckets[b] = idx + 1
	s.count++
	s.stats.Insert++
	return e, res
}

// earlyDrop frees room for an insert into bucket b (kernel early_drop):
// scanning b and the next seven buckets, it removes expired entries and
// evicts every non-ASSURED one, stopping after the first bucket where it
// removed anything. It reports whether the shard has room now.
func (s *Shard) earlyDrop(b uint32, now int64) bool {
	for n := uint32(0); n < earlyDropBuckets; n++ {
		bi := (b + n) & s.mask
		removed := false
		for i := s.buckets[bi]; i != 0; {
			e := &s.entries[i-1]
			next := e.next
			switch {
			case s.expired(e, now):
				s.remove(i-1, bi)
				s.stats.Expired++
				removed = true
			case e.Conn.Status&statemachine.StatusAssured == 0:
				s.remove(i-1, bi)
				s.stats.EarlyDrop++
				removed = true
			}
			i = next
		}
		if removed {
			break
		}
	}
	return s.count < s.max
}

// Delete removes e, an entry of this shard returned by Lookup or Insert. A
// pointer that is not a live entry of this shard is ignored.
func (s *Shard) Delete(e *Entry) {
	idx := entryIndex(s.entries, e)
	if idx < 0 || e.flags&flagUsed == 0 {
		return
	}
	s.remove(uint32(idx), uint32(hashKey(s.seed, &e.key))&s.mask)
}

// remove unlinks slot idx from bucket b and frees it. The entry keeps its
// contents (with StatusDying set) until the slot is reused.
func (s *Shard) remove(idx, b uint32) {
	e := &s.entries[idx]
	for p := &s.buckets[b]; *p != 0; p = &s.entries[*p-1].next {
		if *p == idx+1 {
			*p = e.next
			break
		}
	}
	if e.Helper != 0 && s.exp != nil && s.exp.list.Load() != nil {
		s.exp.RemoveMaster(EntryRef{Shard: s.id, Index: idx, Gen: e.gen})
	}
	if s.onRemove != nil {
		s.onRemove(s, e)
	}
	e.flags = 0
	e.Conn.Status |= statemachine.StatusDying
	e.next = s.free
	s.free = idx + 1
	s.count--
	s.stats.Delete++
}

// Expire is the incremental sweep: it visits at most budget slots from a
// cursor that wraps around the used part of the slot array, and deletes
// entries whose timeout passed. While the shard holds at least 95% of its
// maximum it also evicts entries that may be early-dropped (not ASSURED, or
// TCP in a closing state), as the kernel's gc worker does. It returns how
// many entries it removed. The worker calls it once per batch. One call
// visits each slot at most once: a second lap at the same now would find
// nothing the first did not (an idle worker's large budget, bridge).
func (s *Shard) Expire(now int64, budget int) int {
	removed := 0
	budget = min(budget, int(s.hwm))
	for ; budget > 0 && s.hwm > 0; budget-- {
		if s.cursor >= s.hwm {
			s.cursor = 0
		}
		idx := s.cursor
		s.cursor++
		e := &s.entries[idx]
		if e.flags&flagUsed == 0 {
			continue
		}
		switch {
		case s.expired(e, now):
			s.stats.Expired++
		case s.max95 > 0 && s.count >= s.max95 && canEarlyDrop(e):
			s.stats.EarlyDrop++
		default:
			continue
		}
		s.remove(idx, uint32(hashKey(s.seed, &e.key))&s.mask)
		removed++
	}
	return removed
}

// SetRemoveHook makes the shard call fn with every entry it removes, for
// any reason (expiry, lazy expiry in a lookup, early drop, Delete), just
// before the slot is freed, on the owner goroutine; nil removes the hook.
// fn must not insert or delete entries. Owner only.
func (s *Shard) SetRemoveHook(fn func(s *Shard, e *Entry)) { s.onRemove = fn }

// SetExpiryHook makes the shard call fn for an offloaded entry
// (Entry.Offloaded) whose Expires has passed, before lazy expiry, early
// drop or the sweep would remove it; fn returns the entry's current
// Expires (the fast path's), which the shard stores, and the entry is
// removed only if that has passed too. fn must not insert or delete
// entries. nil removes the hook. Owner only.
func (s *Shard) SetExpiryHook(fn func(e *Entry, now int64) (expires int64)) { s.onExpiry = fn }

// SetSnapshotHook makes the shard call fn for every copy of an offloaded
// entry (Entry.Offloaded) it hands out (Table.Snapshot's reads,
// Shard.Snapshot), after the copy is made: fn writes the values the fast
// path keeps live into out (today Conn.Expires), so listings show the
// current timeout. The entry itself is not changed. Copies of entries that
// are not offloaded never call it. fn must not insert or delete entries.
// nil removes the hook. Owner only.
func (s *Shard) SetSnapshotHook(fn func(e *Entry, out *EntrySnapshot)) { s.onSnapshot = fn }

// snapshotAt copies live entry e, at slot idx, into out: EntrySnapshot's
// Offloaded mark, and through the snapshot hook the live values of an
// offloaded entry. It reports whether the hook ran.
func (s *Shard) snapshotAt(e *Entry, idx uint32, out *EntrySnapshot) bool {
	e.snapshot(s.id, idx, out)
	if s.marks != nil && int(idx) < len(s.marks) {
		out.Mark = s.marks[idx]
	}
	if e.flags&flagOffloaded == 0 {
		return false
	}
	out.Offloaded = true
	if s.onSnapshot == nil {
		return false
	}
	s.onSnapshot(e, out)
	return true
}

// Snapshot copies live entry e of this shard into out (with its Ref), as
// Table.Snapshot does for other goroutines. Owner only.
func (s *Shard) Snapshot(e *Entry, out *EntrySnapshot) {
	idx := entryIndex(s.entries, e)
	if idx < 0 {
		*out = EntrySnapshot{}
		return
	}
	s.snapshotAt(e, uint32(idx), out)
}

// Range calls fn for every live entry until fn returns false. Owner only
// (replay, tests, a stopped table); fn must not insert or delete.
func (s *Shard) Range(fn func(*Entry) bool) {
	for i := uint32(0); i < s.hwm; i++ {
		e := &s.entries[i]
		if e.flags&flagUsed != 0 && !fn(e) {
			return
		}
	}
}

// Ref returns the reference other shards and the expectation table use to
// name e.
func (s *Shard) Ref(e *Entry) EntryRef {
	idx := entryIndex(s.entries, e)
	if idx < 0 {
		return EntryRef{}
	}
	return EntryRef{Shard: s.id, Index: uint32(idx), Gen: e.gen}
}

// Resolve returns the live entry r names, or nil when r belongs to another
// shard, or its slot was freed or reused since. Owner only.
func (s *Shard) Resolve(r EntryRef) *Entry {
	if r.Shard != s.id || r.Index >= s.hwm {
		return nil
	}
	e := &s.entries[r.Index]
	if e.flags&flagUsed == 0 || e.gen != r.Gen {
		return nil
	}
	return e
}
