package flowtable

import (
	"context"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// TestRemoveHook: the hook sees every removal (Delete, lazy expiry in a
// lookup, the sweep, early drop) with the entry still intact, and nothing
// once unset.
func TestRemoveHook(t *testing.T) {
	tab, err := New(Config{Shards: 1, Buckets: 4, MaxEntries: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := tab.Shard(0)
	var seen []uint16
	hook := func(sh *Shard, e *Entry) {
		if sh != s || e.flags&flagUsed == 0 {
			t.Errorf("hook got shard %p entry flags %d, want shard %p and a live entry", sh, e.flags, s)
		}
		var es EntrySnapshot
		sh.Snapshot(e, &es)
		seen = append(seen, es.Orig.SrcPort)
	}
	add := func(port uint16, expires int64, assured bool) *Entry {
		tu := Tuple{Src: packet.AddrFrom4([4]byte{198, 18, 0, 1}), Dst: packet.AddrFrom4([4]byte{198, 18, 0, 2}),
			SrcPort: port, DstPort: 80, Proto: packet.ProtoTCP, L3: 4}
		k := tu.Key()
		e, _ := s.Insert(&k, tab.HashKey(&k), &tu, 0)
		if e == nil {
			t.Fatalf("insert %d: table full", port)
		}
		e.Conn.Expires = expires
		if assured {
			e.Conn.Status |= statemachine.StatusAssured
		}
		return e
	}
	tests := []struct {
		name string
		do   func()
		want uint16
	}{
		{"delete", func() { s.Delete(add(1, 100, true)) }, 1},
		{"lazy expiry", func() {
			e := add(2, 10, true)
			k := e.Key()
			if s.Lookup(&k, tab.HashKey(&k), 20) != nil {
				t.Errorf("expired entry found")
			}
		}, 2},
		{"sweep", func() { add(3, 10, true); s.Expire(20, 100) }, 3},
		{"early drop", func() { add(4, 100, false); add(5, 100, true); add(6, 100, true) }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen = seen[:0]
			s.SetRemoveHook(hook)
			tt.do()
			if len(seen) != 1 || seen[0] != tt.want {
				t.Errorf("hook saw sports %v, want [%d]", seen, tt.want)
			}
			s.SetRemoveHook(nil)
			for _, e := range collect(s) {
				s.Delete(e)
			}
			if len(seen) != 1 {
				t.Errorf("hook called %d times after it was removed", len(seen)-1)
			}
		})
	}
}

func collect(s *Shard) []*Entry {
	var out []*Entry
	s.Range(func(e *Entry) bool { out = append(out, e); return true })
	return out
}

// TestExpiryHook: an offloaded entry whose table Expires has passed is
// asked for its live Expires before lazy expiry, the sweep or early drop
// removes it; it stays while the hook says it lives, and goes once the
// hook's time has passed too. Entries that are not offloaded never ask.
func TestExpiryHook(t *testing.T) {
	tab, err := New(Config{Shards: 1, Buckets: 4, MaxEntries: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := tab.Shard(0)
	live := map[uint16]int64{}
	asked := 0
	s.SetExpiryHook(func(e *Entry, now int64) int64 {
		asked++
		if !e.Offloaded() {
			t.Errorf("hook asked about an entry that is not offloaded")
		}
		return live[e.Tuple().SrcPort]
	})
	add := func(port uint16, expires int64, off bool) (*Entry, Key) {
		tu := Tuple{Src: packet.AddrFrom4([4]byte{198, 18, 0, 1}), Dst: packet.AddrFrom4([4]byte{198, 18, 0, 2}),
			SrcPort: port, DstPort: 80, Proto: packet.ProtoTCP, L3: 4}
		k := tu.Key()
		e, _ := s.Insert(&k, tab.HashKey(&k), &tu, 0)
		if e == nil {
			t.Fatalf("insert %d: table full", port)
		}
		if e.Offloaded() {
			t.Fatalf("a new entry is marked offloaded")
		}
		e.Conn.Expires = expires
		e.SetOffloaded(off)
		return e, k
	}
	e1, k1 := add(1, 10, true)
	live[1] = 50
	if got := s.Lookup(&k1, tab.HashKey(&k1), 20); got != e1 || e1.Conn.Expires != 50 {
		t.Fatalf("lazy expiry: got %p (Expires %d), want the live entry with Expires 50", got, e1.Conn.Expires)
	}
	if s.Expire(40, 100) != 0 {
		t.Fatalf("sweep removed a live offloaded entry")
	}
	if got := s.Lookup(&k1, tab.HashKey(&k1), 60); got != nil {
		t.Fatalf("entry found after the hook's Expires passed")
	}
	_, k2 := add(2, 10, false)
	asked = 0
	if s.Lookup(&k2, tab.HashKey(&k2), 20) != nil || asked != 0 {
		t.Fatalf("an entry that is not offloaded: found or hook asked (%d)", asked)
	}
	e3, _ := add(3, 10, true)
	live[3] = 100
	if s.Expire(20, 100) != 0 || e3.Conn.Expires != 100 {
		t.Fatalf("sweep: removed the live offloaded entry or did not refresh it (Expires %d)", e3.Conn.Expires)
	}
	live[3] = 15
	e3.Conn.Expires = 10
	if s.Expire(20, 100) != 1 {
		t.Fatalf("sweep kept an offloaded entry the hook says expired")
	}
	e1.SetOffloaded(true)
	e1.SetOffloaded(false)
	if e1.Offloaded() {
		t.Fatalf("SetOffloaded(false) left the mark")
	}
}

// TestSnapshotHook: copies of an offloaded entry, through Table.Snapshot
// (served by the owner) and Shard.Snapshot, carry Offloaded and the live
// values the snapshot hook writes (Expires), and leave the entry as it
// was; copies of other entries neither carry the mark nor call the hook,
// and a shard without a hook still marks the offloaded copy. A read
// budget is charged hookCost slots per hook call.
func TestSnapshotHook(t *testing.T) {
	tab, err := New(Config{Shards: 1, Buckets: 16, MaxEntries: 64, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := tab.Shard(0)
	var ents []*Entry
	for port := uint16(1); port <= 4; port++ {
		tu := Tuple{Src: packet.AddrFrom4([4]byte{198, 18, 0, 1}), Dst: packet.AddrFrom4([4]byte{198, 18, 0, 2}),
			SrcPort: port, DstPort: 80, Proto: packet.ProtoTCP, L3: 4}
		k := tu.Key()
		e, _ := s.Insert(&k, tab.HashKey(&k), &tu, 0)
		e.Conn.Expires = 1000
		ents = append(ents, e)
	}
	ents[1].SetOffloaded(true)
	ents[3].SetOffloaded(true)
	calls := 0
	s.SetSnapshotHook(func(e *Entry, out *EntrySnapshot) {
		calls++
		if !e.Offloaded() {
			t.Errorf("hook called for an entry that is not offloaded")
		}
		out.Conn.Expires = 5000 + int64(e.Tuple().SrcPort)
	})
	check := func(how string, es *EntrySnapshot) {
		t.Helper()
		port := es.Orig.SrcPort
		off := port == 2 || port == 4
		want := int64(1000)
		if off {
			want = 5000 + int64(port)
		}
		if es.Offloaded != off || es.Conn.Expires != want {
			t.Errorf("%s: port %d: Offloaded %v Expires %d, want %v %d", how, port, es.Offloaded, es.Conn.Expires, off, want)
		}
	}

	// Table.Snapshot, its requests served by an "owner" loop here.
	done := make(chan error, 1)
	var got []EntrySnapshot
	go func() {
		done <- tab.Snapshot(context.Background(), func(es *EntrySnapshot) { got = append(got, *es) })
	}()
	var visited []int
	testenv.WaitFor(5*time.Second, func() bool {
		if v := s.ServeRequests(1000); v > 0 {
			visited = append(visited, v)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return true
		default:
			return false
		}
	})
	if len(got) != 4 {
		t.Fatalf("snapshot: %d entries, want 4", len(got))
	}
	for i := range got {
		check("Table.Snapshot", &got[i])
	}
	if calls != 2 {
		t.Errorf("hook calls: %d, want 2 (the offloaded entries only)", calls)
	}
	if sum := visited[0]; len(visited) != 1 || sum != 4+2*(hookCost-1) {
		t.Errorf("budget charged %v, want one read of %d slots (4 copies, 2 hook calls)", visited, 4+2*(hookCost-1))
	}
	for _, e := range ents {
		if e.Conn.Expires != 1000 {
			t.Errorf("the hook changed the entry: Expires %d", e.Conn.Expires)
		}
	}

	// Shard.Snapshot (the events' copies).
	var es EntrySnapshot
	for _, e := range ents {
		s.Snapshot(e, &es)
		check("Shard.Snapshot", &es)
	}
	s.SetSnapshotHook(nil)
	calls = 0
	s.Snapshot(ents[1], &es)
	if !es.Offloaded || es.Conn.Expires != 1000 || calls != 0 {
		t.Errorf("without a hook: Offloaded %v Expires %d calls %d, want true, the table's 1000, 0", es.Offloaded, es.Conn.Expires, calls)
	}
	ents[1].SetOffloaded(false)
	if s.Snapshot(ents[1], &es); es.Offloaded {
		t.Errorf("a copy taken after SetOffloaded(false) is marked offloaded")
	}
}
