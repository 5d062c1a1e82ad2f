package flowtable

import (
	"context"
	"sync"
	"testing"
)

// flowOn inserts the first UDP flow numbered from *next on that hashes to
// shard si, moving *next past it, and returns its entry (owner: the
// calling goroutine).
func flowOn(t testing.TB, tb *Table, si int, next *int) *Entry {
	t.Helper()
	for ; ; *next++ {
		k, tu := udpFlow(*next)
		h := tb.HashKey(&k)
		if tb.ShardFor(h) != si {
			continue
		}
		*next++
		e, res := tb.Shard(si).Insert(&k, h, &tu, 0)
		if e == nil || res != Inserted {
			t.Fatalf("Insert flow on shard %d: got %v, %v", si, e, res)
		}
		e.Conn.Expires = 1 << 62
		return e
	}
}

// serveAll runs an owner goroutine per shard that serves reads with a
// small budget (so requests span several calls) until the returned stop
// is called (once or more).
func serveAll(tb *Table, budget int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range tb.NumShards() {
		s := tb.Shard(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
					s.ServeRequests(budget)
				}
			}
		}()
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// TestChildCounts: a master's Children counts its live children wherever
// they sit, through Table.Snapshot (owners serving) and Table.ChildCounts
// (single goroutine); deleted children and reused slots do not count, and
// a second master's children are its own.
func TestChildCounts(t *testing.T) {
	tests := []struct {
		name        string
		masterShard int
		childShards []int // shard of each child of the master
		deleted     int   // children deleted after linking (the first ones)
		reuse       bool  // the deleted children's slots get plain entries
		want        uint32
	}{
		{"no children", 0, nil, 0, false, 0},
		{"one child, same shard", 0, []int{0}, 0, false, 1},
		{"three children, same shard", 1, []int{1, 1, 1}, 0, false, 3},
		{"three children, other shard", 0, []int{1, 1, 1}, 0, false, 3},
		{"three children, both shards", 1, []int{0, 1, 0}, 0, false, 3},
		{"one of three deleted", 0, []int{1, 0, 1}, 1, false, 2},
		{"only child deleted", 0, []int{1}, 1, false, 0},
		{"deleted child's slot reused", 0, []int{0, 1}, 2, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(t, Config{MaxEntries: 256, Buckets: 64, Shards: 2})
			next := 1
			master := flowOn(t, tb, tt.masterShard, &next)
			mref := tb.Shard(tt.masterShard).Ref(master)
			other := flowOn(t, tb, 1-tt.masterShard, &next) // a master with one child
			oref := tb.Shard(1 - tt.masterShard).Ref(other)
			oc := flowOn(t, tb, tt.masterShard, &next)
			tb.Shard(tt.masterShard).LinkChild(oc, oref)
			var children []*Entry
			for _, si := range tt.childShards {
				c := flowOn(t, tb, si, &next)
				tb.Shard(si).LinkChild(c, mref)
				if got, ok := tb.Shard(si).MasterOf(c); !ok || got != mref {
					t.Fatalf("MasterOf(child): got %v, %v, want %v, true", got, ok, mref)
				}
				children = append(children, c)
			}
			for i := range tt.deleted {
				si := tt.childShards[i]
				tb.Shard(si).Delete(children[i])
				if tt.reuse {
					e := flowOn(t, tb, si, &next)
					if e != children[i] {
						t.Fatalf("reuse: the new entry got another slot")
					}
					if _, ok := tb.Shard(si).MasterOf(e); ok {
						t.Errorf("MasterOf(plain entry in a child's old slot): got a master, want none")
					}
				}
			}

			counts := tb.ChildCounts()
			if got := counts[mref]; got != tt.want {
				t.Errorf("ChildCounts[master]: got %d, want %d", got, tt.want)
			}
			if got := counts[oref]; got != 1 {
				t.Errorf("ChildCounts[other master]: got %d, want 1", got)
			}

			stop := serveAll(tb, 2)
			got := map[EntryRef]uint32{}
			n := 0
			err := tb.Snapshot(context.Background(), func(es *EntrySnapshot) {
				got[es.Ref] = es.Children
				n++
			})
			stop()
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			if want := 3 + len(tt.childShards) - tt.deleted + map[bool]int{true: tt.deleted}[tt.reuse]; n != want {
				t.Errorf("Snapshot: %d entries, want %d", n, want)
			}
			if got[mref] != tt.want {
				t.Errorf("Snapshot: master Children got %d, want %d", got[mref], tt.want)
			}
			if got[oref] != 1 {
				t.Errorf("Snapshot: other master Children got %d, want 1", got[oref])
			}
			for ref, c := range got {
				if ref != mref && ref != oref && c != 0 {
					t.Errorf("Snapshot: entry %v (not a master) has Children %d, want 0", ref, c)
				}
			}
		})
	}
}

// TestSnapshotWithoutChildren: a table that never had a child lists with
// Children 0 everywhere and no links round trip (readChildCounts returns
// nil without posting anything, which a shard nobody serves would block).
func TestSnapshotWithoutChildren(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 2})
	next := 1
	flowOn(t, tb, 0, &next)
	flowOn(t, tb, 1, &next)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nobody serves: any round trip would fail with ctx's error
	tb.readMu.Lock()
	counts, err := tb.readChildCounts(ctx)
	tb.readMu.Unlock()
	if counts != nil || err != nil {
		t.Errorf("readChildCounts without children: got %v, %v, want nil, nil", counts, err)
	}
	if c := tb.ChildCounts(); c != nil {
		t.Errorf("ChildCounts without children: got %v, want nil", c)
	}
}

// TestLinksRestartAfterCompaction: a links request served over several
// ServeRequests calls starts over when LinkChild compacts the list in between
// (links moved below its cursor), and the reader learns it must drop what
// it took; the result counts every live child once.
func TestLinksRestartAfterCompaction(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 256, Buckets: 64, Shards: 1})
	s := tb.Shard(0)
	next := 1
	master := flowOn(t, tb, 0, &next)
	mref := s.Ref(master)
	var children []*Entry
	for range minLinks {
		c := flowOn(t, tb, 0, &next)
		s.LinkChild(c, mref)
		children = append(children, c)
	}
	r := &readRequest{masters: make([]EntryRef, 64), ready: make(chan struct{}, 1)}
	s.postRead(r)
	s.ServeRequests(5)
	if r.n != 5 || r.restart {
		t.Fatalf("first call: got n=%d restart=%v, want 5, false", r.n, r.restart)
	}
	for _, c := range children[:10] {
		s.Delete(c)
	}
	s.LinkChild(flowOn(t, tb, 0, &next), mref) // the list is full: compacts
	s.ServeRequests(1000)
	select {
	case <-r.ready:
	default:
		t.Fatal("links request not signalled after the list was done")
	}
	if !r.restart {
		t.Error("restart: got false, want true after a compaction")
	}
	if want := minLinks - 10 + 1; r.n != want {
		t.Errorf("masters: got %d, want %d", r.n, want)
	}
	for _, m := range r.masters[:r.n] {
		if m != mref {
			t.Errorf("master: got %v, want %v", m, mref)
		}
	}
}

// TestLinkChildSteadyStateAllocs: while children come and go at a steady
// number, LinkChild reuses its list (compaction) and allocates nothing.
func TestLinkChildSteadyStateAllocs(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 256, Buckets: 64, Shards: 1})
	s := tb.Shard(0)
	next := 1
	mref := s.Ref(flowOn(t, tb, 0, &next))
	live := make([]*Entry, 4)
	for i := range live {
		live[i] = flowOn(t, tb, 0, &next)
		s.LinkChild(live[i], mref)
	}
	keys := make([]Key, 8)
	tuples := make([]Tuple, 8)
	for i := range keys {
		keys[i], tuples[i] = udpFlow(10_000 + i)
	}
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		s.Delete(live[i%4])
		k := &keys[i%8]
		// keys i%8 and (i+4)%8 alternate: the one inserted 4 runs ago was
		// just deleted.
		e, _ := s.Insert(k, tb.HashKey(k), &tuples[i%8], 0)
		e.Conn.Expires = 1 << 62
		s.LinkChild(e, mref)
		live[i%4] = e
		i++
	})
	if allocs != 0 {
		t.Errorf("LinkChild in steady state: got %.1f allocs, want 0", allocs)
	}
	if got := tb.ChildCounts()[mref]; got != 4 {
		t.Errorf("ChildCounts: got %d, want 4", got)
	}
}

// TestLinkChildIgnoresForeignEntry: an entry of another shard (or a dead
// one) is not linked.
func TestLinkChildIgnoresForeignEntry(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 2})
	next := 1
	m := flowOn(t, tb, 0, &next)
	mref := tb.Shard(0).Ref(m)
	c := flowOn(t, tb, 1, &next)
	tb.Shard(0).LinkChild(c, mref) // wrong shard
	d := flowOn(t, tb, 1, &next)
	tb.Shard(1).Delete(d)
	tb.Shard(1).LinkChild(d, mref) // dead
	if got := tb.ChildCounts(); got != nil {
		t.Errorf("ChildCounts: got %v, want nil", got)
	}
}

// MasterOf returns the master of e when e was linked as a child
// (LinkChild). It scans the shard's links (O(children)); the tests' view
// of a link, nothing in the datapath needs it.
func (s *Shard) MasterOf(e *Entry) (EntryRef, bool) {
	idx := entryIndex(s.entries, e)
	l := &s.links
	if idx < 0 || e.flags&flagUsed == 0 {
		return EntryRef{}, false
	}
	for i := range l.list {
		if c := &l.list[i]; c.child == uint32(idx) && c.gen == e.gen {
			return c.master, true
		}
	}
	return EntryRef{}, false
}
