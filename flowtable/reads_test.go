package flowtable

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestSnapshotConcurrentWriter runs an owner goroutine inserting and
// deleting while another goroutine snapshots; run with -race.
func TestSnapshotConcurrentWriter(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 4096, Buckets: 1024, Shards: 2})
	const stable = 1000 // flows 0..999 live for the whole test
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for si := range tb.NumShards() {
		s := tb.Shard(si)
		for i := range stable {
			k, tu := udpFlow(i)
			h := tb.HashKey(&k)
			if tb.ShardFor(h) == si {
				e, _ := s.Insert(&k, h, &tu, 0)
				e.Conn.Expires = 1 << 62
			}
		}
		wg.Add(1)
		go func() { // the owner
			defer wg.Done()
			now := int64(1)
			for i := 0; ctx.Err() == nil; i++ {
				k, tu := udpFlow(stable + i%2000)
				h := tb.HashKey(&k)
				if tb.ShardFor(h) == si {
					if e := s.Lookup(&k, h, now); e != nil {
						s.Delete(e)
					} else if e, _ := s.Insert(&k, h, &tu, now); e != nil {
						e.Conn.Expires = 1 << 62
						e.Conn.TCP.LastSeq = uint32(i) // writes readers must not race with
					}
				}
				if i%64 == 0 {
					s.Expire(now, 64)
					s.ServeRequests(100)
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()

	for round := range 3 {
		seen := make(map[Tuple]int)
		total := 0
		err := tb.Snapshot(context.Background(), func(es *EntrySnapshot) {
			seen[es.Orig]++
			total++
		})
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		for i := range stable {
			_, tu := udpFlow(i)
			if seen[tu] != 1 {
				t.Fatalf("round %d: stable flow %d seen %d times, want 1", round, i, seen[tu])
			}
		}
		if total < stable || total > stable+2000 {
			t.Errorf("round %d: %d entries, want %d..%d", round, total, stable, stable+2000)
		}
	}
	st := tb.Stats()
	if st.Count < stable || st.Insert < stable {
		t.Errorf("published stats: got %+v, want Count and Insert >= %d", st, stable)
	}
}

// TestSnapshotCancel: with no worker serving reads, Snapshot returns when
// its context ends, and a later Snapshot is served normally.
func TestSnapshotCancel(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 16, Buckets: 16, Shards: 1})
	s := tb.Shard(0)
	k, tu := udpFlow(1)
	e, _ := s.Insert(&k, tb.HashKey(&k), &tu, 0)
	e.Conn.Expires = 100
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := tb.Snapshot(ctx, func(*EntrySnapshot) {}); err == nil {
		t.Fatal("Snapshot with no worker: got nil error, want the context's")
	}
	if got := s.ServeRequests(10); got != 0 {
		t.Errorf("ServeRequests after the reader gave up: visited %d, want 0", got)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				s.ServeRequests(10)
				time.Sleep(time.Millisecond)
			}
		}
	}()
	n := 0
	err := tb.Snapshot(context.Background(), func(es *EntrySnapshot) {
		n++
		if es.Orig != tu || es.Conn.Expires != 100 {
			t.Errorf("snapshot: got %v expires %d, want %v expires 100", es.Orig, es.Conn.Expires, tu)
		}
	})
	close(done)
	if err != nil || n != 1 {
		t.Errorf("Snapshot: got %d entries, err %v, want 1, nil", n, err)
	}
}
