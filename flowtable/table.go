package flowtable

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"strconv"
	"sync"
	"unsafe"

	"github.com/statewire/statewire/packet"
)

// Config sizes a table. Zero fields take the kernel's defaults (spec §6).
type Config struct {
	// MaxEntries is the most live entries (nf_conntrack_max), split evenly
	// over the shards. Default: Buckets, or 8 × Buckets when Buckets was
	// given explicitly.
	MaxEntries int
	// Buckets is the hash size (nf_conntrack_buckets). Default from RAM:
	// RAM/16384/8, 65536 above 1 GiB, 262144 above 4 GiB, at least 1024.
	// Each shard gets Buckets/Shards rounded up to a power of two.
	Buckets int
	// Shards is the number of single-writer shards, one per worker.
	// Default: runtime.NumCPU().
	Shards int
	// Seed keys the hash. 0 draws a random seed (crypto/rand); tests set
	// it for reproducible placement.
	Seed uint64
	// MaxExpect is the most expectations (nf_ct_expect_max). Default
	// 4 × max(Buckets/256, 1).
	MaxExpect int
	// Prefault touches every page of the table in New, so the first fill
	// does not take a page fault per 4 KiB on the datapath (about 30 per
	// thousand entries). The process then holds the whole table resident
	// from the start.
	Prefault bool
	// IgnoreVLAN leaves the VLAN id out of every key (--vlan-zones=false):
	// the kernel's keys, where a frame's VLAN tag plays no part unless
	// conntrack zones are configured. The zero value keeps the VLAN id as
	// the zone, so the same tuple on two VLANs is two connections: the
	// safe choice on a trunk. Fixed for the life of the table: everything
	// that builds a key (ZoneOf) reads it, so both directions, the
	// steering between workers, the expectations, the fragment cache and
	// the XDP fast path agree.
	IgnoreVLAN bool
	// AuxSize is the size in bytes of a slot of caller state kept beside
	// each entry slot (Table.Aux): with the table in a state file (Open)
	// it is kept in the file and survives a restart with the entry. 0:
	// none.
	AuxSize int
}

// VLANMask is what a packet's VLAN id is masked with to give its zone:
// 0x0fff (every VLAN id bit) or 0 with IgnoreVLAN. A mask rather than a
// branch: the pipeline applies it to every parsed packet.
func (c Config) VLANMask() uint16 {
	if c.IgnoreVLAN {
		return 0
	}
	return 0x0fff
}

// ZoneOf makes p's VLAN id its zone under mask (Config.VLANMask): the id,
// or 0 when the table ignores VLANs. Call it right after packet.Parse,
// before anything builds a key from p: KeyOf, SetOf, TupleFromPacket,
// Expectations.Match and the fragment cache read p.VLAN as the zone, so
// applying it once to the parse keeps them all in agreement. Every parse
// whose packet finds a connection (the pipeline's, the workers' steering)
// calls it.
func ZoneOf(p *packet.Packet, mask uint16) { p.VLAN &= mask }

// ErrConfig is wrapped by New for an impossible configuration.
var ErrConfig = errors.New("flowtable: bad config")

// maxShardEntries keeps slot indices (stored +1 in uint32) in range.
const maxShardEntries = 1<<32 - 2

// DefaultBuckets returns the kernel's default hash size for a machine with
// ramBytes of memory (nf_conntrack_init_start).
func DefaultBuckets(ramBytes uint64) int {
	const gib = 1 << 30
	n := int(ramBytes / 16384 / 8)
	switch {
	case ramBytes > 4*gib:
		n = 262144
	case ramBytes > gib:
		n = 65536
	}
	return max(n, 1024)
}

// DefaultMaxEntries returns the maximum entries of a table made with the
// zero Config on this machine (DefaultBuckets of its RAM).
func DefaultMaxEntries() int { return DefaultBuckets(memTotal()) }

// memTotal returns MemTotal from /proc/meminfo in bytes, or 0.
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemTotal:" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// withDefaults resolves the zero fields of c.
func (c Config) withDefaults() Config {
	if c.Shards <= 0 {
		c.Shards = runtime.NumCPU()
	}
	bucketsGiven := c.Buckets > 0
	if !bucketsGiven {
		c.Buckets = DefaultBuckets(memTotal())
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = c.Buckets
		if bucketsGiven {
			c.MaxEntries = 8 * c.Buckets
		}
	}
	if c.MaxExpect <= 0 {
		c.MaxExpect = 4 * max(c.Buckets/256, 1)
	}
	return c
}

// Table is the connection table: Shards single-writer shards, sharing one
// hash seed and one expectation table.
type Table struct {
	seed   uint64
	shards []*Shard
	cfg    Config
	readMu sync.Mutex // serialises Snapshot callers; never taken by workers
	ctlMu  sync.Mutex // serialises DeleteEntries and FlushEntries callers; never taken by workers

	// Expect holds the expectations of all shards.
	Expect *Expectations

	// store is the state file the table lives in (Open); nil for New.
	store *store
}

// New allocates a table: all entry slots and buckets are allocated here,
// once; nothing is allocated afterwards. The memory is
// MaxEntries × unsafe.Sizeof(Entry) plus 4 bytes per bucket (plus AuxSize
// per entry). Open makes one that outlives the process.
func New(cfg Config) (*Table, error) {
	c, g, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	t := makeTable(c, g, nil)
	if c.Prefault {
		for _, s := range t.shards {
			prefault(s)
		}
	}
	return t, nil
}

// resolve fills the defaults of cfg, draws the seed and computes the
// geometry.
func (cfg Config) resolve() (Config, geometry, error) {
	c := cfg.withDefaults()
	var g geometry
	if c.Shards > 1<<16 {
		return c, g, fmt.Errorf("%w: %d shards", ErrConfig, c.Shards)
	}
	per := c.MaxEntries / c.Shards
	if per < 1 || per > maxShardEntries {
		return c, g, fmt.Errorf("%w: %d entries over %d shards", ErrConfig, c.MaxEntries, c.Shards)
	}
	nb := 1 << bits.Len(uint((c.Buckets+c.Shards-1)/c.Shards-1))
	if nb > 1<<31 {
		return c, g, fmt.Errorf("%w: %d buckets", ErrConfig, c.Buckets)
	}
	if c.AuxSize < 0 || c.AuxSize > 1<<12 {
		return c, g, fmt.Errorf("%w: aux slot of %d bytes", ErrConfig, c.AuxSize)
	}
	if c.Seed == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return c, g, fmt.Errorf("flowtable: seed: %w", err)
		}
		c.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	g = geometry{Shards: uint32(c.Shards), PerShard: uint32(per), Buckets: uint32(nb),
		MaxExpect: uint32(c.MaxExpect), AuxSize: uint32(c.AuxSize), VLANMask: uint32(c.VLANMask())}
	return c, g, nil
}

// makeTable makes the table of geometry g: its slots over the state file
// st, or on the heap when st is nil. Buckets are always on the heap (the
// file's chains are rebuilt, never read).
func makeTable(c Config, g geometry, st *store) *Table {
	t := &Table{seed: c.Seed, cfg: c, Expect: NewExpectations(c.MaxExpect), store: st}
	per, nb, aux := int(g.PerShard), int(g.Buckets), int(g.AuxSize)
	var entries []Entry
	var auxes []byte
	var metas []shardMeta
	if st != nil {
		entries = st.m.entries(&st.l, c.Shards*per)
		auxes = st.m.aux(&st.l)
		metas = st.m.metas(&st.l, c.Shards)
	}
	t.shards = make([]*Shard, c.Shards)
	for i := range t.shards {
		s := &Shard{
			buckets: make([]uint32, nb),
			mask:    uint32(nb - 1),
			max:     per,
			max95:   per * 95 / 100,
			id:      uint16(i),
			seed:    c.Seed,
			exp:     t.Expect,
		}
		if st != nil {
			s.entries = entries[i*per : (i+1)*per : (i+1)*per]
			s.aux = auxes[i*per*aux : (i+1)*per*aux : (i+1)*per*aux]
			s.meta = &metas[i]
		} else {
			s.entries = make([]Entry, per)
			s.aux = alignedBytes(per * aux)
		}
		adviseHugeShard(s)
		t.shards[i] = s
	}
	return t
}

// prefault writes one word per page of the shard's arrays.
func prefault(s *Shard) {
	const page = 4096
	step := max(1, page/int(unsafe.Sizeof(Entry{})))
	for i := 0; i < len(s.entries); i += step {
		s.entries[i].next = 0
	}
	for i := 0; i < len(s.buckets); i += page / 4 {
		s.buckets[i] = 0
	}
}

// Config returns the configuration with defaults resolved (and the seed).
func (t *Table) Config() Config { return t.cfg }

// Aux returns shard i's caller slots: AuxSize bytes per entry slot, slot j
// at [j*AuxSize, (j+1)*AuxSize), 8-byte aligned, zero in a fresh table. They
// belong to the shard's owner, like its entries; in a state file they
// survive a restart with them.
func (t *Table) Aux(i int) []byte { return t.shards[i].aux }

// NumShards returns the number of shards.
func (t *Table) NumShards() int { return len(t.shards) }

// Shard returns shard i, for its owner.
func (t *Table) Shard(i int) *Shard { return t.shards[i] }

// HashKey returns the seeded xxhash64 of k. Safe from any goroutine.
func (t *Table) HashKey(k *Key) uint64 { return hashKey(t.seed, k) }

// ShardFor returns the shard that owns a key with hash h. It uses the high
// 32 bits (the low bits pick the bucket inside the shard), mapped onto the
// shard count by multiplication rather than modulo.
func (t *Table) ShardFor(h uint64) int {
	return int((h >> 32) * uint64(len(t.shards)) >> 32)
}

// Stats returns the sum of the counters the shards last published (in
// ServeRequests). Safe from any goroutine.
func (t *Table) Stats() Stats {
	var st Stats
	for _, s := range t.shards {
		p := s.PublishedStats()
		st.add(&p)
	}
	return st
}

// Len returns the number of live entries as last published. Safe from any
// goroutine.
func (t *Table) Len() int { return int(t.Stats().Count) }
