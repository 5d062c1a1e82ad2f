package flowtable

import (
	"testing"

	"github.com/statewire/statewire/packet"
)

// TestConnMark: a mark set on an entry is read back and listed, a reused
// slot starts at 0, and a shard that never set one has no mark array.
func TestConnMark(t *testing.T) {
	tab, err := New(Config{Shards: 1, Buckets: 4, MaxEntries: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := tab.Shard(0)
	e := insertPkt(t, tab, pkt(packet.ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 2), 0, 1e12)
	if s.ConnMark(e) != 0 || s.marks != nil {
		t.Fatalf("a fresh shard: mark %d, marks allocated %v", s.ConnMark(e), s.marks != nil)
	}
	s.SetConnMark(e, 0)
	if s.marks != nil {
		t.Errorf("setting 0 allocated the marks")
	}
	s.SetConnMark(e, 42)
	if got := s.ConnMark(e); got != 42 {
		t.Errorf("got mark %d, want 42", got)
	}
	var es EntrySnapshot
	s.Snapshot(e, &es)
	if es.Mark != 42 {
		t.Errorf("Shard.Snapshot: mark %d, want 42", es.Mark)
	}
	s.Delete(e)
	e2 := insertPkt(t, tab, pkt(packet.ProtoUDP, "10.0.0.3", 1, "10.0.0.4", 2), 0, 1e12)
	if got := s.ConnMark(e2); got != 0 {
		t.Errorf("an entry in a reused slot: mark %d, want 0", got)
	}
	if entryIndex(s.entries, e2) != entryIndex(s.entries, e) {
		t.Errorf("the second entry did not reuse the slot; the test checks nothing")
	}
}
