package flowtable

import (
	"strconv"
	"testing"
	"unsafe"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// TestBytesPerEntry computes the memory per entry, bucket array share
// included, and holds it to the budget.
func TestBytesPerEntry(t *testing.T) {
	entry := unsafe.Sizeof(Entry{})
	tests := []struct {
		name string
		cfg  Config
		want float64 // bytes per entry
	}{
		// Default sizing: MaxEntries == Buckets, one 4-byte head per entry.
		{"max = buckets", Config{MaxEntries: 1 << 16, Buckets: 1 << 16, Shards: 2}, float64(entry) + 4},
		// Buckets given: MaxEntries = 8 × Buckets.
		{"max = 8 x buckets", Config{Buckets: 1 << 16, Shards: 2}, float64(entry) + 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(t, tt.cfg)
			var bytes, entries int
			for i := range tb.NumShards() {
				s := tb.Shard(i)
				bytes += len(s.entries)*int(entry) + len(s.buckets)*4
				entries += s.Max()
			}
			got := float64(bytes) / float64(entries)
			t.Logf("Entry %d bytes (Conn %d, Key %d); %.2f bytes/entry with buckets", entry,
				unsafe.Sizeof(statemachine.Conn{}), unsafe.Sizeof(Key{}), got)
			if got != tt.want {
				t.Errorf("bytes/entry: got %.2f, want %.2f", got, tt.want)
			}
			// Budget: Key (40) + Conn + 16 bytes of link, slot generation,
			// verdict cache, helper and flags, rounded to 8.
			if entry > 128 {
				t.Errorf("Entry: got %d bytes, want ≤ 128 (two cache lines)", entry)
			}
			if budget := 40 + unsafe.Sizeof(statemachine.Conn{}) + 16; entry > budget {
				t.Errorf("Entry: got %d bytes, budget %d", entry, budget)
			}
		})
	}
}

func TestHotFieldsInFirst64Bytes(t *testing.T) {
	var e Entry
	end := unsafe.Offsetof(e.Conn) + unsafe.Offsetof(e.Conn.Expires) + 8
	if end > 64 {
		t.Errorf("next, key and Conn.Expires end at byte %d, want <= 64", end)
	}
}

func TestExpiry(t *testing.T) {
	const sec = int64(1e9)
	t.Run("lazy on lookup", func(t *testing.T) {
		tb := newTable(t, Config{MaxEntries: 16, Buckets: 16, Shards: 1})
		p := pkt(packet.ProtoUDP, "198.18.0.1", 1, "198.18.0.2", 2)
		insertPkt(t, tb, p, 0, 30*sec)
		if lookupPkt(t, tb, p, 30*sec-1) == nil {
			t.Fatal("lookup 1 ns before expiry: got nil, want the entry")
		}
		if e := lookupPkt(t, tb, p, 30*sec); e != nil {
			t.Fatal("lookup at expiry: got an entry, want nil")
		}
		s := tb.Shard(0)
		if got := s.Len(); got != 0 {
			t.Errorf("Len after lazy expiry: got %d, want 0", got)
		}
		if st := s.Stats(); st.Expired != 1 || st.Delete != 1 || st.Found != 1 {
			t.Errorf("stats: got %+v, want Found 1, Expired 1, Delete 1", st)
		}
	})
	t.Run("sweep", func(t *testing.T) {
		// Below 95% full, so the sweep removes only expired entries.
		tb := newTable(t, Config{MaxEntries: 2000, Buckets: 256, Shards: 1})
		s := tb.Shard(0)
		for i := range 1000 {
			k, tu := udpFlow(i)
			h := tb.HashKey(&k)
			e, _ := s.Insert(&k, h, &tu, 0)
			e.Conn.Expires = int64(i%10+1) * sec // 100 entries expire each second
		}
		now := 5 * sec
		removed := 0
		for range 20 { // 20 × 64 slots covers the 1000 slots once
			removed += s.Expire(now, 64)
		}
		if removed != 500 || s.Len() != 500 {
			t.Fatalf("after sweep at 5s: removed %d, Len %d, want 500, 500", removed, s.Len())
		}
		if got := s.Expire(now, 10000); got != 0 {
			t.Errorf("second sweep: removed %d, want 0", got)
		}
		for i := range 1000 {
			k, _ := udpFlow(i)
			e := s.Lookup(&k, tb.HashKey(&k), now)
			if want := i%10+1 > 5; (e != nil) != want {
				t.Fatalf("flow %d (expires %ds): found %v, want %v", i, i%10+1, e != nil, want)
			}
		}
		if got := s.Expire(now, 0); got != 0 {
			t.Errorf("budget 0: removed %d, want 0", got)
		}
		if got := s.Expire(11*sec, 1000); got != 500 {
			t.Errorf("sweep at 11s: removed %d, want 500", got)
		}
	})
	t.Run("pressure evicts unassured and closing tcp", func(t *testing.T) {
		tb := newTable(t, Config{MaxEntries: 100, Buckets: 64, Shards: 1})
		s := tb.Shard(0)
		// 96 entries (>= 95%): 40 ASSURED established TCP, 20 ASSURED
		// TIME_WAIT TCP, 36 unassured UDP. Nothing has expired.
		for i := range 96 {
			k, tu := udpFlow(i)
			k.Proto, tu.Proto = packet.ProtoTCP, packet.ProtoTCP
			switch {
			case i < 40:
			case i < 60:
			default:
				k.Proto, tu.Proto = packet.ProtoUDP, packet.ProtoUDP
			}
			e, _ := s.Insert(&k, tb.HashKey(&k), &tu, 0)
			e.Conn.Expires = 1e15
			switch {
			case i < 40:
				e.Conn.Status, e.Conn.State = assured, statemachine.TCPEstablished
			case i < 60:
				e.Conn.Status, e.Conn.State = assured, statemachine.TCPTimeWait
			}
		}
		removed := s.Expire(1, 1000)
		// Eviction stops as soon as the count drops below 95 (max95 = 95):
		// 96 → 94 removes 2.
		if removed != 2 || s.Len() != 94 {
			t.Fatalf("pressure sweep: removed %d, Len %d, want 2, 94", removed, s.Len())
		}
		s.Range(func(e *Entry) bool {
			if e.Conn.State == statemachine.TCPEstablished && e.Conn.Status&statemachine.StatusAssured == 0 {
				t.Errorf("established entry lost assured")
			}
			return true
		})
		// The cursor starts at slot 0: the 40 established entries are kept,
		// the first two TIME_WAIT ones go.
		var established, timeWait, udp int
		s.Range(func(e *Entry) bool {
			switch {
			case e.Conn.State == statemachine.TCPEstablished:
				established++
			case e.Conn.State == statemachine.TCPTimeWait:
				timeWait++
			default:
				udp++
			}
			return true
		})
		if established != 40 || timeWait != 18 || udp != 36 {
			t.Errorf("left: got %d established, %d TIME_WAIT, %d UDP, want 40, 18, 36", established, timeWait, udp)
		}
		if got := s.Stats().EarlyDrop; got != 2 {
			t.Errorf("EarlyDrop: got %d, want 2", got)
		}
	})
}

func TestTableFull(t *testing.T) {
	const max = 256
	tb := newTable(t, Config{MaxEntries: max, Buckets: 64, Shards: 1})
	s := tb.Shard(0)
	isAssured := func(i int) bool { return i%2 == 0 }
	for i := range max {
		k, tu := udpFlow(i)
		e, res := s.Insert(&k, tb.HashKey(&k), &tu, 0)
		if res != Inserted {
			t.Fatalf("insert %d: got %v, want Inserted", i, res)
		}
		e.Conn.Expires = 1e15
		if isAssured(i) {
			e.Conn.Status = assured
		}
	}
	var got [4]int
	inserted := make(map[int]bool)
	for i := max; i < 4*max; i++ {
		k, tu := udpFlow(i)
		e, res := s.Insert(&k, tb.HashKey(&k), &tu, 0)
		got[res]++
		if e != nil {
			inserted[i] = true
			e.Conn.Expires = 1e15
			if isAssured(i) {
				e.Conn.Status = assured
			}
		}
		if s.Len() > max {
			t.Fatalf("Len %d exceeds max %d", s.Len(), max)
		}
	}
	if got[InsertedAfterEarlyDrop] == 0 || got[TableFull] == 0 {
		t.Errorf("results: got %d early-drop inserts and %d table-full, want both > 0", got[InsertedAfterEarlyDrop], got[TableFull])
	}
	// Every ASSURED entry ever inserted is still there.
	for i := range 4 * max {
		k, _ := udpFlow(i)
		e := s.Lookup(&k, tb.HashKey(&k), 1)
		if isAssured(i) && (i < max || inserted[i]) && e == nil {
			t.Fatalf("ASSURED flow %d lost", i)
		}
		if e != nil && isAssured(i) != (e.Conn.Status&statemachine.StatusAssured != 0) {
			t.Fatalf("flow %d: assured %v, want %v", i, !isAssured(i), isAssured(i))
		}
	}
	st := s.Stats()
	if st.Drop != uint64(got[TableFull]) {
		t.Errorf("Drop: got %d, want %d", st.Drop, got[TableFull])
	}
	if st.Insert != uint64(max+got[Inserted]+got[InsertedAfterEarlyDrop]) {
		t.Errorf("Insert: got %d, want %d", st.Insert, max+got[Inserted]+got[InsertedAfterEarlyDrop])
	}
	if st.Insert-st.Delete != uint64(s.Len()) || st.Delete != st.EarlyDrop {
		t.Errorf("Insert %d - Delete %d != Len %d, or Delete != EarlyDrop %d", st.Insert, st.Delete, s.Len(), st.EarlyDrop)
	}
	t.Logf("results %v, stats %+v", got, st)

	t.Run("all assured: table full", func(t *testing.T) {
		tb := newTable(t, Config{MaxEntries: 8, Buckets: 8, Shards: 1})
		s := tb.Shard(0)
		for i := range 8 {
			k, tu := udpFlow(i)
			e, _ := s.Insert(&k, tb.HashKey(&k), &tu, 0)
			e.Conn.Expires, e.Conn.Status = 1e15, assured
		}
		k, tu := udpFlow(100)
		if e, res := s.Insert(&k, tb.HashKey(&k), &tu, 0); e != nil || res != TableFull {
			t.Errorf("insert into a full assured table: got %v, %v, want nil, TableFull", e, res)
		}
	})
	t.Run("expired entry frees room", func(t *testing.T) {
		tb := newTable(t, Config{MaxEntries: 8, Buckets: 1, Shards: 1})
		s := tb.Shard(0)
		for i := range 8 {
			k, tu := udpFlow(i)
			e, _ := s.Insert(&k, tb.HashKey(&k), &tu, 0)
			e.Conn.Expires, e.Conn.Status = 10, assured
		}
		k, tu := udpFlow(100)
		if e, res := s.Insert(&k, tb.HashKey(&k), &tu, 10); e == nil || res != InsertedAfterEarlyDrop {
			t.Errorf("insert after expiry: got %v, %v, want an entry", e, res)
		}
	})
}

func TestInsertDeleteRef(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 4, Buckets: 4, Shards: 1})
	s := tb.Shard(0)
	k, tu := udpFlow(1)
	h := tb.HashKey(&k)
	e, _ := s.Insert(&k, h, &tu, 0)
	e.Conn.Expires = 100
	if got, res := s.Insert(&k, h, &tu, 0); got != e || res != InsertExists {
		t.Errorf("second insert: got %p, %v, want %p, InsertExists", got, res, e)
	}
	ref := s.Ref(e)
	if s.Resolve(ref) != e {
		t.Fatal("Resolve(Ref(e)) != e")
	}
	s.Delete(e)
	if s.Len() != 0 || s.Lookup(&k, h, 1) != nil {
		t.Fatalf("after Delete: Len %d, want 0 and no entry", s.Len())
	}
	if e.Conn.Status&statemachine.StatusDying == 0 {
		t.Error("deleted entry not marked dying")
	}
	s.Delete(e) // a second delete is ignored
	if s.Len() != 0 || s.Stats().Delete != 1 {
		t.Errorf("double delete: Len %d, Delete %d, want 0, 1", s.Len(), s.Stats().Delete)
	}
	k2, tu2 := udpFlow(2)
	e2, _ := s.Insert(&k2, tb.HashKey(&k2), &tu2, 0)
	if e2 != e {
		t.Fatalf("freed slot not reused")
	}
	if s.Resolve(ref) != nil {
		t.Error("Resolve of a reused slot's old ref: got an entry, want nil")
	}
	s.Delete(&Entry{}) // not in the shard: ignored
	if s.Len() != 1 {
		t.Errorf("Len: got %d, want 1", s.Len())
	}
}

func TestAllocs(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 1024, Buckets: 1024, Shards: 1})
	s := tb.Shard(0)
	k, tu := udpFlow(1)
	h := tb.HashKey(&k)
	keys := make([]Key, 64)
	hashes := make([]uint64, 64)
	out := make([]*Entry, 64)
	for i := range keys {
		keys[i], _ = udpFlow(i)
		hashes[i] = tb.HashKey(&keys[i])
	}
	p := pkt(packet.ProtoTCP, "198.18.0.1", 1, "198.18.0.2", 2)
	tests := []struct {
		name string
		fn   func()
	}{
		{"insert+lookup+delete", func() {
			e, _ := s.Insert(&k, h, &tu, 0)
			e.Conn.Expires = 10
			if s.Lookup(&k, h, 1) != e {
				panic("lookup")
			}
			s.Delete(e)
		}},
		{"KeyOf+HashKey", func() {
			kk, _ := KeyOf(p)
			_ = tb.HashKey(&kk)
		}},
		{"LookupBatch", func() { s.LookupBatch(keys, hashes, out, 1) }},
		{"Expire", func() { s.Expire(1, 64) }},
		{"ServeRequests", func() { s.ServeRequests(64) }},
		{"Expectations.Match empty", func() { tb.Expect.Match(&packet.Packet{}, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, tt.fn); got != 0 {
				t.Errorf("allocs per run: got %v, want 0", got)
			}
		})
	}
}

func TestLookupBatchMatchesLookup(t *testing.T) {
	// 20000 entries (2.7 MB) take LookupBatch's overlapped path, not the
	// small-table loop; 70000 (9 MB) also its touch of second entries.
	// 4096 buckets make chains of 5 and 17: the key is rarely first.
	for _, tc := range []struct {
		flows int
		deep  bool
	}{{20000, false}, {70000, true}} {
		t.Run(strconv.Itoa(tc.flows), func(t *testing.T) {
			flows := tc.flows
			tb := newTable(t, Config{MaxEntries: flows, Buckets: 4096, Shards: 1})
			s := tb.Shard(0)
			size := uintptr(flows) * unsafe.Sizeof(Entry{})
			if size <= smallShardBytes || (size > deepShardBytes) != tc.deep {
				t.Fatalf("table of %d bytes does not exercise the path under test", size)
			}
			for i := range flows {
				k, tu := udpFlow(i)
				e, _ := s.Insert(&k, tb.HashKey(&k), &tu, 0)
				e.Conn.Expires = int64(1 + i%2) // odd flows live longer
			}
			n := 150 // more than one chunk
			step := flows / 100
			keys, hashes, out := make([]Key, n), make([]uint64, n), make([]*Entry, n)
			for i := range n {
				keys[i], _ = udpFlow(i*step + i%2) // hits and misses (>= flows misses)
				hashes[i] = tb.HashKey(&keys[i])
			}
			s.LookupBatch(keys, hashes, out, 1)
			for i := range n {
				j := i*step + i%2
				want := j < flows && j%2 == 1
				if (out[i] != nil) != want {
					t.Fatalf("flow %d: found %v, want %v", j, out[i] != nil, want)
				}
				if out[i] != nil && out[i].Key() != keys[i] {
					t.Fatalf("flow %d: wrong entry", j)
				}
			}
			if got := testing.AllocsPerRun(100, func() { s.LookupBatch(keys, hashes, out, 1) }); got != 0 {
				t.Errorf("LookupBatch allocs: got %v, want 0", got)
			}
		})
	}
}

func TestShardFor(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 1 << 12, Buckets: 1 << 10, Shards: 3})
	var per [3]int
	for i := range 30000 {
		k, _ := udpFlow(i)
		per[tb.ShardFor(tb.HashKey(&k))]++
	}
	for i, n := range per {
		if n < 9000 || n > 11000 {
			t.Errorf("shard %d got %d of 30000 keys, want about 10000", i, n)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		ram  uint64
		want int
	}{
		{64 << 20, 1024}, // 64 MiB → 512, raised to the minimum
		{512 << 20, 4096},
		{2 * gib, 65536},
		{8 * gib, 262144},
	}
	for _, tt := range tests {
		if got := DefaultBuckets(tt.ram); got != tt.want {
			t.Errorf("DefaultBuckets(%d): got %d, want %d", tt.ram, got, tt.want)
		}
	}
	c := Config{Buckets: 1000, Shards: 4}.withDefaults()
	if c.MaxEntries != 8000 || c.MaxExpect != 12 {
		t.Errorf("buckets given: got max %d, expect max %d, want 8000, 12", c.MaxEntries, c.MaxExpect)
	}
	c = Config{Shards: 1}.withDefaults()
	if c.MaxEntries != c.Buckets || c.Buckets < 1024 {
		t.Errorf("defaults: got max %d, buckets %d, want max == buckets >= 1024", c.MaxEntries, c.Buckets)
	}
	tb := newTable(t, Config{MaxEntries: 100, Buckets: 100, Shards: 3})
	if got := tb.Shard(0).Max(); got != 33 {
		t.Errorf("per-shard max: got %d, want 33", got)
	}
	if got := len(tb.Shard(0).buckets); got != 64 {
		t.Errorf("per-shard buckets: got %d, want 64 (34 rounded up)", got)
	}
	pf := newTable(t, Config{MaxEntries: 5000, Buckets: 1000, Shards: 2, Prefault: true})
	if pf.Shard(1).Len() != 0 || pf.Shard(1).Max() != 2500 {
		t.Errorf("prefaulted table: Len %d, Max %d, want 0, 2500", pf.Shard(1).Len(), pf.Shard(1).Max())
	}
	if _, err := New(Config{MaxEntries: 1, Buckets: 1, Shards: 2}); err == nil {
		t.Error("New with fewer entries than shards: got nil error")
	}
}
