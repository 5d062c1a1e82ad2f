package flowtable

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// idle fails t unless every shard's mailbox is empty and its count 0: the
// state in which ServeRequests costs one atomic load.
func idle(t *testing.T, tb *Table) {
	t.Helper()
	for i := range tb.NumShards() {
		s := tb.Shard(i)
		if n := s.posted.Load(); n != 0 || s.req.Load() != nil || s.ctl.Load() != nil {
			t.Errorf("shard %d: posted %d, read %v, ctl %v; want 0, nil, nil", i, n, s.req.Load(), s.ctl.Load())
		}
	}
}

// TestDeleteAndFlush: DeleteEntries deletes what its refs name through the
// owners (skipping stale refs and refs to no shard), FlushEntries deletes
// the rest; every deletion goes through the remove hook, the published
// counters include the deletions when the call returns, and the mailboxes
// end empty.
func TestDeleteAndFlush(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 1024, Buckets: 256, Shards: 3})
	next := 1
	var refs []EntryRef
	for si := range tb.NumShards() {
		for range 10 {
			refs = append(refs, tb.Shard(si).Ref(flowOn(t, tb, si, &next)))
		}
	}
	// A ref whose slot was freed and reused by another connection.
	s0 := tb.Shard(0)
	gone := s0.Resolve(refs[0])
	s0.Delete(gone)
	reused := flowOn(t, tb, 0, &next)
	if s0.Ref(reused).Index != refs[0].Index {
		t.Fatal("freed slot not reused")
	}
	var removed [3]atomic.Int64 // the hooks run on the owners
	for si := range tb.NumShards() {
		tb.Shard(si).SetRemoveHook(func(s *Shard, e *Entry) { removed[s.ID()].Add(1) })
	}
	stop := serveAll(tb, 7)
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	victims := []EntryRef{refs[0], refs[1], refs[12], refs[25], {Shard: 9, Index: 1, Gen: 1}}
	n, err := tb.DeleteEntries(ctx, victims)
	if err != nil || n != 3 {
		t.Fatalf("DeleteEntries: got %d, %v, want 3, nil (a stale ref and a ref to no shard skipped)", n, err)
	}
	if got := tb.Len(); got != 27 {
		t.Errorf("Len after DeleteEntries: got %d, want 27", got)
	}
	n, err = tb.FlushEntries(ctx)
	if err != nil || n != 27 {
		t.Fatalf("FlushEntries: got %d, %v, want 27, nil", n, err)
	}
	if st := tb.Stats(); st.Count != 0 || st.Delete != 31 {
		t.Errorf("Stats after FlushEntries: got Count %d Delete %d, want 0, 31", st.Count, st.Delete)
	}
	stop()
	// Shard 0 removed one entry by itself before the hooks were set.
	if got := removed[0].Load() + removed[1].Load() + removed[2].Load(); got != 30 {
		t.Errorf("remove hook calls: got %d, want 30", got)
	}
	for si := range tb.NumShards() {
		if l := tb.Shard(si).Len(); l != 0 {
			t.Errorf("shard %d: %d entries after flush, want 0", si, l)
		}
	}
	idle(t, tb)
}

// TestDeleteCancel: with no owner serving, DeleteEntries returns when its
// context ends, withdraws its requests (the mailbox is empty again, so the
// owner's call is back to one load) and deletes nothing.
func TestDeleteCancel(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 2})
	next := 1
	ref := tb.Shard(1).Ref(flowOn(t, tb, 1, &next))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	n, err := tb.DeleteEntries(ctx, []EntryRef{ref})
	if !errors.Is(err, context.DeadlineExceeded) || n != 0 {
		t.Errorf("DeleteEntries with no owner: got %d, %v, want 0, deadline exceeded", n, err)
	}
	if _, err := tb.FlushEntries(ctx); err == nil {
		t.Error("FlushEntries with no owner: got nil error, want the context's")
	}
	idle(t, tb)
	if tb.Shard(1).ServeRequests(64); tb.Shard(1).Len() != 1 {
		t.Errorf("a withdrawn delete was served: Len %d, want 1", tb.Shard(1).Len())
	}
}

// TestTablesShareNothing: a request posted to one table is invisible to
// another table's owners (no process-wide mailbox or count), and a served
// table's owners do not serve another's.
func TestTablesShareNothing(t *testing.T) {
	a := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 1})
	b := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 1})
	na, nb := 1, 1
	refA := a.Shard(0).Ref(flowOn(t, a, 0, &na))
	flowOn(t, b, 0, &nb)
	stopB := serveAll(b, 64)
	defer stopB()

	done := make(chan int)
	go func() {
		n, _ := a.DeleteEntries(context.Background(), []EntryRef{refA})
		done <- n
	}()
	for a.Shard(0).posted.Load() == 0 {
		runtime.Gosched()
	}
	if n := b.Shard(0).posted.Load(); n != 0 {
		t.Errorf("table B's count while A has a request: got %d, want 0", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	left := 0
	if err := b.Snapshot(ctx, func(*EntrySnapshot) { left++ }); err != nil || left != 1 {
		t.Errorf("table B after A's delete was posted: got %d entries, %v, want 1, nil", left, err)
	}
	select {
	case n := <-done:
		t.Fatalf("A's delete answered by B's owner: %d", n)
	default:
	}
	stopA := serveAll(a, 64)
	defer stopA()
	if n := <-done; n != 1 {
		t.Errorf("A's delete once A is served: got %d, want 1", n)
	}
	stopA()
	stopB()
	idle(t, a)
	idle(t, b)
}

// TestTableCollected: a table whose owners served reads and deletes is
// garbage once nothing refers to it (the mailbox is part of the table, not
// of a process-wide registry).
func TestTableCollected(t *testing.T) {
	collected := make(chan struct{})
	func() {
		tb := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 2})
		next := 1
		ref := tb.Shard(0).Ref(flowOn(t, tb, 0, &next))
		stop := serveAll(tb, 64)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tb.Snapshot(ctx, func(*EntrySnapshot) {}); err != nil {
			t.Fatal(err)
		}
		if n, err := tb.DeleteEntries(ctx, []EntryRef{ref}); n != 1 || err != nil {
			t.Fatalf("DeleteEntries: got %d, %v, want 1, nil", n, err)
		}
		if _, err := tb.FlushEntries(ctx); err != nil {
			t.Fatal(err)
		}
		stop()
		runtime.AddCleanup(tb, func(ch chan struct{}) { close(ch) }, collected)
	}()
	for end := time.Now().Add(10 * time.Second); ; {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatal("table not collected after its last use: something still refers to it")
		}
	}
}

// TestMailboxConcurrent: owners inserting, deleting and serving while
// other goroutines snapshot, delete by ref and flush, some of them giving
// up early (withdrawals racing with the owners' answers); run with -race.
// Afterwards every mailbox is empty with a count of 0, which is what keeps
// an idle owner at one atomic load.
func TestMailboxConcurrent(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 4096, Buckets: 1024, Shards: 2})
	ctx, cancel := context.WithCancel(context.Background())
	var owners sync.WaitGroup
	for si := range tb.NumShards() {
		s := tb.Shard(si)
		owners.Add(1)
		go func() {
			defer owners.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k, tu := udpFlow(i % 1000)
				h := tb.HashKey(&k)
				if tb.ShardFor(h) == si {
					if e := s.Lookup(&k, h, 1); e != nil && i%3 == 0 {
						s.Delete(e)
					} else if e == nil {
						if e, _ := s.Insert(&k, h, &tu, 1); e != nil {
							e.Conn.Expires = 1 << 62
						}
					}
				}
				if i%8 == 0 {
					s.ServeRequests(200)
				}
			}
		}()
	}
	var posters sync.WaitGroup
	for p := range 3 {
		posters.Add(1)
		go func() {
			defer posters.Done()
			rnd := rand.New(rand.NewPCG(uint64(p), 1))
			for range 20 {
				// Some calls get a deadline short enough to withdraw.
				d := time.Duration(rnd.IntN(300)) * time.Microsecond
				if rnd.IntN(2) == 0 {
					d = 10 * time.Second
				}
				c, cc := context.WithTimeout(ctx, d)
				switch p {
				case 0:
					var refs []EntryRef
					err := tb.Snapshot(c, func(es *EntrySnapshot) {
						if rnd.IntN(4) == 0 {
							refs = append(refs, es.Ref)
						}
					})
					if err == nil {
						_, err = tb.DeleteEntries(c, refs)
					}
					if err != nil && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("snapshot/delete: %v", err)
					}
				case 1:
					if err := tb.Snapshot(c, func(*EntrySnapshot) {}); err != nil && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("snapshot: %v", err)
					}
				case 2:
					if rnd.IntN(8) == 0 {
						if _, err := tb.FlushEntries(c); err != nil && !errors.Is(err, context.DeadlineExceeded) {
							t.Errorf("flush: %v", err)
						}
					}
				}
				cc()
			}
		}()
	}
	posters.Wait()
	cancel()
	owners.Wait()
	idle(t, tb)
}
