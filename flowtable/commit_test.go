package flowtable

import (
	"context"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// TestInsertEntries: committed connections land on the shard their key
// hashes to, with the state given, in the direction given; an existing
// one is left alone and counted; a full shard fails the rest; an entry
// with a helper is marked for pickup once.
func TestInsertEntries(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 8, Buckets: 16, Shards: 2})
	stop := serveAll(tb, 64)
	defer stop()
	commit := func(sport uint16, helper uint8) Commit {
		// Original direction from the right (B) side's address: the entry
		// must keep it, not the canonical order.
		tu := Tuple{Src: packet.AddrFrom4([4]byte{198, 18, 0, 2}), Dst: packet.AddrFrom4([4]byte{198, 18, 0, 1}),
			SrcPort: sport, DstPort: 21, Proto: packet.ProtoTCP, L3: 4}
		return Commit{Orig: tu, Helper: helper, Conn: statemachine.Conn{Expires: 100e9, Proto: packet.ProtoTCP,
			State: statemachine.TCPEstablished, Status: statemachine.StatusAssured | statemachine.StatusSeenReply}}
	}
	cs := []Commit{commit(1000, 1), commit(1001, 0), {}}
	res, err := tb.InsertEntries(context.Background(), cs, 1e9)
	if err != nil || res != (CommitResult{Inserted: 2, Failed: 1}) {
		t.Fatalf("first commit: %+v, %v; want 2 inserted, 1 failed (no tuple)", res, err)
	}
	res, err = tb.InsertEntries(context.Background(), cs[:2], 2e9)
	if err != nil || res != (CommitResult{Exists: 2}) {
		t.Fatalf("second commit: %+v, %v; want 2 existing", res, err)
	}
	stop()
	found := 0
	for i := range tb.NumShards() {
		tb.Shard(i).Range(func(e *Entry) bool {
			found++
			tu := e.Tuple()
			want := commit(tu.SrcPort, 0)
			if tu != want.Orig || e.Conn.State != statemachine.TCPEstablished || e.Conn.Expires != 100e9 ||
				e.Conn.Status != want.Conn.Status {
				t.Errorf("entry %v state %v expires %d status %#x; want %v as committed", tu, e.Conn.State, e.Conn.Expires, e.Conn.Status, want.Orig)
			}
			if i != tb.ShardFor(tb.HashKey(&e.key)) {
				t.Errorf("entry %v on shard %d, not its hash's", tu, i)
			}
			wantHelper := tu.SrcPort == 1000
			if got := e.TakeHelperPickup(); got != wantHelper || e.TakeHelperPickup() {
				t.Errorf("entry %v: pickup %v then again, want %v once", tu, got, wantHelper)
			}
			return true
		})
	}
	if found != 2 {
		t.Fatalf("%d entries in the table, want 2", found)
	}
	// A full table: 8 entries at most, 4 per shard; the committed ones
	// are ASSURED, so nothing can be early-dropped for the rest.
	stop = serveAll(tb, 64)
	defer stop()
	var many []Commit
	for p := range 20 {
		many = append(many, commit(uint16(2000+p), 0))
	}
	res, _ = tb.InsertEntries(context.Background(), many, 3e9)
	if res.Inserted+res.Failed != 20 || res.Failed == 0 || tb.Len() > 8 {
		t.Errorf("commit into a full table: %+v, table %d; want the overflow failed, at most 8 entries", res, tb.Len())
	}
}
