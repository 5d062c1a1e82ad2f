package flowtable

import (
	"fmt"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// A hash-bucket flood (issue 8): an attacker who knows the hash seed can
// choose spoofed tuples that all land in one bucket, so every lookup and
// insert of those flows walks one long chain. The table's defence is the
// seed: 0 draws a random one (crypto/rand) per table, so keys chosen for one
// seed spread over the buckets of any other. These tests build such keys by
// brute force for a known seed and measure both tables.

const (
	floodSeed    = 0x5eed_0bad_cafe_f00d // the seed the attacker knows
	floodBuckets = 4096                  // one shard: the bucket is hash & 4095
	floodKeys    = 2048                  // colliding keys built
)

// synKey is the key of a SYN from a spoofed source inside 198.18.0.0/15 to
// the lab's right host (198.18.0.2:80): the attacker controls the source
// address and port.
func synKey(i uint32) Key {
	p := &packet.Packet{IPVersion: 4, Proto: packet.ProtoTCP, SrcPort: uint16(1024 + i%60000), DstPort: 80}
	p.Src = packet.AddrFrom4([4]byte{198, 18 + byte(i>>24&1), byte(i >> 16), byte(i >> 8)})
	p.Src[15] ^= byte(i) // low byte varies with i too
	p.Dst = packet.AddrFrom4([4]byte{198, 18, 0, 2})
	k, _ := KeyOf(p)
	return k
}

var floodKeyCache []Key

// collidingKeys returns floodKeys distinct keys whose hash under floodSeed
// falls in bucket 0 of a floodBuckets-bucket shard (about floodBuckets
// tries per key: 8M hashes, ~0.1 s).
func collidingKeys(tb testing.TB) []Key {
	tb.Helper()
	if floodKeyCache != nil {
		return floodKeyCache
	}
	keys := make([]Key, 0, floodKeys)
	for i := uint32(0); len(keys) < floodKeys; i++ {
		if i == 1<<25 {
			tb.Fatalf("brute force: %d colliding keys after %d tries, want %d", len(keys), i, floodKeys)
		}
		k := synKey(i)
		if hashKey(floodSeed, &k)&(floodBuckets-1) == 0 {
			keys = append(keys, k)
		}
	}
	floodKeyCache = keys
	return keys
}

// bucketOccupancy returns the longest chain of a shard and how many entries
// it holds.
func bucketOccupancy(s *Shard) (longest, entries int) {
	for _, head := range s.buckets {
		n := 0
		for i := head; i != 0; i = s.entries[i-1].next {
			n++
		}
		longest = max(longest, n)
		entries += n
	}
	return longest, entries
}

// fill inserts keys (non-ASSURED, like SYN_SENT entries) into a fresh
// one-shard table with seed and room for max entries.
func fill(tb testing.TB, seed uint64, max int, keys []Key) *Table {
	tb.Helper()
	t, err := New(Config{MaxEntries: max, Buckets: floodBuckets, Shards: 1, Seed: seed})
	if err != nil {
		tb.Fatal(err)
	}
	s := t.Shard(0)
	for i := range keys {
		e, r := s.Insert(&keys[i], t.HashKey(&keys[i]), nil, 0)
		if e == nil {
			tb.Fatalf("insert %d: %v", i, r)
		}
		e.Conn.Expires = 1 << 62
	}
	return t
}

// TestHashFloodSpread: the attacker's keys all share one bucket under the
// seed they were built for, and spread under any other seed (a fresh
// random one, as the product draws, and a few fixed ones for a
// reproducible bound).
func TestHashFloodSpread(t *testing.T) {
	keys := collidingKeys(t)
	if got, _ := bucketOccupancy(fill(t, floodSeed, 2*floodKeys, keys).Shard(0)); got != floodKeys {
		t.Fatalf("known seed: longest chain got %d, want %d (the brute force is wrong)", got, floodKeys)
	}
	// 2048 keys in 4096 buckets: the expected longest chain is about 5;
	// 12 would be a one-in-billions event for a uniform hash.
	const maxChain = 12
	for _, seed := range []uint64{0, 0, 0, 1, 0x5eed, floodSeed + 1} {
		name := fmt.Sprintf("seed=%#x", seed)
		if seed == 0 {
			name = "seed=random"
		}
		t.Run(name, func(t *testing.T) {
			tb := fill(t, seed, 2*floodKeys, keys)
			longest, n := bucketOccupancy(tb.Shard(0))
			if n != floodKeys {
				t.Fatalf("entries got %d, want %d", n, floodKeys)
			}
			if longest > maxChain {
				t.Errorf("longest chain got %d, want <= %d (seed %#x)", longest, maxChain, tb.Config().Seed)
			}
			t.Logf("seed %#x: %d attacker keys, longest chain %d", tb.Config().Seed, n, longest)
		})
	}
}

// TestHashFloodKnownSeedBounded: with the seed known, nothing bounds a
// chain but the shard's entry limit: the flood's own non-ASSURED entries
// fill the shard, then early drop empties the attacked bucket (every
// non-ASSURED entry in it goes) and the chain starts again. An ASSURED
// connection in another bucket keeps its entry and its lookup cost.
func TestHashFloodKnownSeedBounded(t *testing.T) {
	keys := collidingKeys(t)
	const max = 1024
	tb, err := New(Config{MaxEntries: max, Buckets: floodBuckets, Shards: 1, Seed: floodSeed})
	if err != nil {
		t.Fatal(err)
	}
	s := tb.Shard(0)
	victim := synKey(1 << 30)
	vh := tb.HashKey(&victim)
	if vh&(floodBuckets-1) == 0 {
		t.Fatal("victim key collides with the flood; pick another")
	}
	ve, _ := s.Insert(&victim, vh, nil, 0)
	ve.Conn.Expires = 1 << 62
	ve.Conn.Status |= statemachine.StatusAssured | statemachine.StatusSeenReply
	longestSeen, full := 0, 0
	for i := range keys {
		e, r := s.Insert(&keys[i], tb.HashKey(&keys[i]), nil, 0)
		switch r {
		case TableFull:
			full++
			continue
		case InsertExists:
			t.Fatalf("key %d: InsertExists, want distinct keys", i)
		}
		e.Conn.Expires = 1 << 62
		if s.Len() > max {
			t.Fatalf("after key %d: %d entries, want <= %d", i, s.Len(), max)
		}
		if i%64 == 0 {
			l, _ := bucketOccupancy(s)
			longestSeen = maxInt(longestSeen, l)
		}
	}
	if e := s.Lookup(&victim, vh, 1); e == nil || e.Conn.Status&statemachine.StatusAssured == 0 {
		t.Errorf("ASSURED victim after the flood: got %v, want its entry", e)
	}
	st := s.Stats()
	if st.EarlyDrop == 0 {
		t.Errorf("early drops got 0, want > 0 (the flood overfilled the shard)")
	}
	if longestSeen > max {
		t.Errorf("longest chain got %d, want <= %d (the shard's limit)", longestSeen, max)
	}
	t.Logf("known seed, max %d: %d flood inserts, longest chain %d, early drops %d, table-full %d", max, len(keys), longestSeen, st.EarlyDrop, full)
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// BenchmarkHashFlood measures a lookup of an attacker's flow and the insert
// of a new one, in a table holding the attacker's floodKeys flows, when the
// attacker knew the seed (one chain of floodKeys) and when the seed is the
// product's default, random.
func BenchmarkHashFlood(b *testing.B) {
	keys := collidingKeys(b)
	for _, c := range []struct {
		name string
		seed uint64
	}{{"known-seed", floodSeed}, {"random-seed", 0}} {
		b.Run(c.name+"/lookup", func(b *testing.B) {
			tb := fill(b, c.seed, 2*floodKeys, keys)
			s := tb.Shard(0)
			hashes := make([]uint64, len(keys))
			for i := range keys {
				hashes[i] = tb.HashKey(&keys[i])
			}
			i := 0
			for b.Loop() {
				if s.Lookup(&keys[i], hashes[i], 1) == nil {
					b.Fatal("miss")
				}
				if i += 7; i >= len(keys) {
					i -= len(keys)
				}
			}
		})
		b.Run(c.name+"/insert", func(b *testing.B) {
			// A SYN flood's steady state: the table holds the flood's
			// flows and every new SYN inserts one more (after walking its
			// chain for an existing entry) and deletes the oldest.
			half := keys[:floodKeys/2]
			tb := fill(b, c.seed, 2*floodKeys, half)
			s := tb.Shard(0)
			next, old := floodKeys/2, 0
			for b.Loop() {
				k := &keys[next]
				e, r := s.Insert(k, tb.HashKey(k), nil, 0)
				if r != Inserted {
					b.Fatalf("insert: %v", r)
				}
				e.Conn.Expires = 1 << 62
				if oe := s.Lookup(&keys[old], tb.HashKey(&keys[old]), 1); oe != nil {
					s.Delete(oe)
				}
				if next++; next == len(keys) {
					next = 0
				}
				if old++; old == len(keys) {
					old = 0
				}
			}
		})
	}
}
