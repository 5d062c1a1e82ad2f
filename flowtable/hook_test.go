package flowtable

import (
	"testing"

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
