package flowtable

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

const sec = int64(1e9)

func storeConfig(shards int) Config {
	return Config{MaxEntries: 256, Buckets: 64, Shards: shards, MaxExpect: 16, AuxSize: 24, Seed: 0x5eed}
}

func openStore(t *testing.T, path string, c Config, now int64) (*Table, Adoption) {
	t.Helper()
	tb, a, err := Open(c, Persist{Path: path, Now: now, ClockBase: sec})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return tb, a
}

// crash drops tb the way kill -9 does: no Close, the file left as the
// datapath last wrote it, the lock released.
func crash(tb *Table) {
	tb.store.m.unmap()
	tb.store.m.f.Close()
	tb.store = nil
}

// fillStore makes n TCP connections in tb expiring at exp (and one expiring at
// gone), gives the first a helper, aux bytes and an expectation expiring at
// xexp, and returns the first entry's ref.
func fillStore(t *testing.T, tb *Table, n int, now, exp, gone, xexp int64) EntryRef {
	t.Helper()
	var first EntryRef
	for i := range n {
		p := pkt(packet.ProtoTCP, "198.18.0.1", uint16(40000+i), "198.19.0.1", 80)
		e := insertPkt(t, tb, p, now, exp)
		e.Conn.State = statemachine.TCPEstablished
		e.Conn.Status = assured
		e.Conn.TCP.Peer[0].MaxWin = 1000 + uint32(i)
		e.CacheVerdict(statemachine.Original, 2, 0x05) // an earlier process's generation 2
		if i == 0 {
			k := mustKey(t, p)
			sh := tb.Shard(tb.ShardFor(tb.HashKey(&k)))
			e.Helper = 1
			first = sh.Ref(e)
			copy(tb.Aux(sh.ID())[first.Index*24:], "helper state of conn 0")
			if err := tb.Expect.Add(ftpData(first, 5001, xexp), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	insertPkt(t, tb, pkt(packet.ProtoUDP, "198.18.0.9", 53, "198.19.0.9", 53), now, gone)
	for i := range tb.NumShards() {
		tb.Shard(i).ServeRequests(0) // publish the counters, as the workers do per batch
	}
	return first
}

// checkAdopted asserts that tb holds the n TCP connections of fillStore and the
// expectation, not the expired UDP one.
func checkAdopted(t *testing.T, tb *Table, n int, first EntryRef, now int64) {
	t.Helper()
	for i := range n {
		e := lookupPkt(t, tb, pkt(packet.ProtoTCP, "198.19.0.1", 80, "198.18.0.1", uint16(40000+i)), now)
		if e == nil {
			t.Fatalf("connection %d not found after adoption", i)
		}
		if e.Conn.State != statemachine.TCPEstablished || e.Conn.TCP.Peer[0].MaxWin != 1000+uint32(i) {
			t.Errorf("connection %d: state %v maxwin %d, want ESTABLISHED, %d", i, e.Conn.State, e.Conn.TCP.Peer[0].MaxWin, 1000+i)
		}
		if v, ok := e.CachedVerdict(statemachine.Original, 2); ok || e.VerdictGen != 0 {
			t.Errorf("connection %d: cached verdict %#x of the earlier process's rule generation 2 kept (gen %d); want it forgotten", i, v, e.VerdictGen)
		}
	}
	if e := lookupPkt(t, tb, pkt(packet.ProtoUDP, "198.18.0.9", 53, "198.19.0.9", 53), now); e != nil {
		t.Errorf("connection expired during the gap was adopted")
	}
	sh := tb.Shard(int(first.Shard))
	if sh.Resolve(first) == nil {
		t.Fatalf("master ref %+v does not resolve after adoption", first)
	}
	if got := string(tb.Aux(sh.ID())[first.Index*24 : first.Index*24+22]); got != "helper state of conn 0" {
		t.Errorf("aux slot of conn 0: got %q", got)
	}
	x, ok := tb.Expect.Match(pkt(packet.ProtoTCP, "198.18.1.1", 20, "198.18.0.1", 5001), now)
	if !ok || x.Master != first {
		t.Errorf("expectation after adoption: got %+v, %v; want master %+v", x, ok, first)
	}
	// New entries go into the rebuilt free lists without clobbering a live one.
	for i := range 20 {
		insertPkt(t, tb, pkt(packet.ProtoUDP, "198.18.2.1", uint16(i+1), "198.19.2.1", 9), now, now+sec)
	}
	total := 0
	for i := range tb.NumShards() {
		total += tb.Shard(i).Len()
	}
	if total != n+20 {
		t.Errorf("live entries after 20 inserts: got %d, want %d", total, n+20)
	}
	for i := range n {
		if lookupPkt(t, tb, pkt(packet.ProtoTCP, "198.18.0.1", uint16(40000+i), "198.19.0.1", 80), now) == nil {
			t.Fatalf("connection %d lost after inserts into the adopted table", i)
		}
	}
}

func TestStateFileGracefulStop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "br.table")
	now := 100 * sec
	tb, a := openStore(t, path, storeConfig(2), now)
	if a.Adopted || a.Refused != "" {
		t.Fatalf("first open: %+v, want a fresh table", a)
	}
	first := fillStore(t, tb, 50, now, now+300*sec, now+5*sec, now+60*sec)
	inserts := tb.Stats().Insert
	if err := tb.Close(now + sec); err != nil {
		t.Fatal(err)
	}
	later := now + 10*sec // the UDP connection expired in the gap; the rest did not
	tb2, a := openStore(t, path, storeConfig(2), later)
	defer tb2.Close(later)
	if !a.Adopted || !a.Clean || a.Connections != 50 || a.Expectations != 1 || a.ExpiredInGap != 1 {
		t.Fatalf("adoption: got %+v, want 50 connections, 1 expectation, 1 expired, clean", a)
	}
	if a.Gap != 9e9 {
		t.Errorf("gap: got %v, want 9s", a.Gap)
	}
	if !strings.Contains(a.String(), "adopted 50 connections, 1 expectations from "+path) {
		t.Errorf("log line %q", a.String())
	}
	for i := range tb2.NumShards() {
		tb2.Shard(i).ServeRequests(0)
	}
	if got := tb2.Stats().Insert; got != inserts {
		t.Errorf("insert counter: got %d after adoption, want %d carried over", got, inserts)
	}
	checkAdopted(t, tb2, 50, first, later)
}

// TestStateFileCrash leaves the file as a kill -9 in the middle of an
// insert and a removal would: chains and free list pointing anywhere. The
// next process rebuilds them from the used flags.
func TestStateFileCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "br.table")
	now := 100 * sec
	tb, _ := openStore(t, path, storeConfig(2), now)
	first := fillStore(t, tb, 50, now, now+300*sec, now+5*sec, now+60*sec)
	// A removal whose unlinking was done but whose slot was not freed yet,
	// and chain links scrambled.
	for i := range tb.NumShards() {
		sh := tb.Shard(i)
		for j := range sh.entries[:sh.hwm] {
			sh.entries[j].next = uint32(j*7+3) % (sh.hwm + 5)
		}
	}
	crash(tb)
	later := now + 10*sec
	tb2, a := openStore(t, path, storeConfig(2), later)
	defer tb2.Close(later)
	if !a.Adopted || a.Clean || a.Connections != 50 || a.Expectations != 1 {
		t.Fatalf("adoption after crash: got %+v, want 50 connections, 1 expectation, not clean", a)
	}
	if !strings.Contains(a.String(), "died") {
		t.Errorf("log line %q does not say the previous process died", a.String())
	}
	checkAdopted(t, tb2, 50, first, later)
}

// TestStateFileExpectationsTorn: a process killed while writing the next
// expectation buffer leaves the previous one current.
func TestStateFileExpectationsTorn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "br.table")
	now := 100 * sec
	tb, _ := openStore(t, path, storeConfig(1), now)
	first := fillStore(t, tb, 3, now, now+300*sec, now+300*sec, now+60*sec)
	m := tb.store.mir
	next := 1 - m.h.ExpSel.Load()
	for i := range m.buf[next] {
		m.buf[next][i] = Expect{Dst: addr("203.0.113.1"), Expires: 1 << 62} // half-written garbage
	}
	m.h.ExpN[next].Store(uint32(len(m.buf[next])))
	crash(tb)
	tb2, a := openStore(t, path, storeConfig(1), now+sec)
	defer tb2.Close(now + sec)
	if a.Expectations != 1 {
		t.Fatalf("expectations adopted: got %d, want 1 (the last whole buffer)", a.Expectations)
	}
	tb2.Expect.Range(func(x Expect) bool {
		if x.Master != first || x.DstPort != 5001 {
			t.Errorf("adopted expectation %+v, want master %+v port 5001", x, first)
		}
		return true
	})
}

func TestStateFileRefused(t *testing.T) {
	dir := t.TempDir()
	now := 100 * sec
	tests := []struct {
		name   string
		before func(path string)
		cfg    Config
		want   string
	}{
		{"other helper slot", nil, func() Config { c := storeConfig(2); c.AuxSize = 32; return c }(), "another entry layout"},
		{"other vlan zones", nil, func() Config { c := storeConfig(2); c.IgnoreVLAN = true; return c }(), "--vlan-zones=true, this process runs with --vlan-zones=false"},
		{"truncated", func(p string) { os.Truncate(p, 8192) }, storeConfig(2), "the file is 8192 bytes"},
		{"not a table", func(p string) { os.WriteFile(p, []byte("hello"), 0o600) }, storeConfig(2), "not a statewire table"},
		{"other boot", func(p string) {
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			f.WriteAt([]byte{0xff, 0xee}, 0x40) // inside BootID
			f.Close()
		}, storeConfig(2), "before the last reboot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".table")
			tb, _ := openStore(t, path, storeConfig(2), now)
			fillStore(t, tb, 5, now, now+300*sec, now+300*sec, now+60*sec)
			tb.Close(now)
			if tt.before != nil {
				tt.before(path)
			}
			tb2, a := openStore(t, path, tt.cfg, now)
			defer tb2.Close(now)
			if a.Adopted || !strings.Contains(a.Refused, tt.want) {
				t.Fatalf("got %+v, want refused with %q", a, tt.want)
			}
			if !strings.Contains(a.String(), "refused") || !strings.Contains(a.String(), "fresh table") {
				t.Errorf("log line %q", a.String())
			}
			if n := tb2.Stats().Count; n != 0 || tb2.Expect.Len() != 0 {
				t.Errorf("fresh table holds %d entries, %d expectations", n, tb2.Expect.Len())
			}
			// The fresh table is adopted by the next process.
			fillStore(t, tb2, 2, now, now+300*sec, now+300*sec, now+60*sec)
			tb2.Close(now)
			tb3, a := openStore(t, path, tt.cfg, now)
			tb3.Close(now)
			if !a.Adopted || a.Connections != 3 {
				t.Errorf("reopen of the fresh table: %+v", a)
			}
		})
	}
}

// TestStateFileMigrate: a file of another shard count or size is not
// refused: its live connections and expectations are re-inserted into the
// new geometry, keeping their contents and helper state; what does not
// fit is counted.
func TestStateFileMigrate(t *testing.T) {
	now := 100 * sec
	tests := []struct {
		name      string
		cfg       Config
		why       string
		wantConns int // of the 50 live ones
	}{
		{"more shards", storeConfig(4), "it has 2 shards", 50},
		{"fewer shards", storeConfig(1), "it has 2 shards", 50},
		{"larger", func() Config { c := storeConfig(2); c.MaxEntries = 512; c.Buckets = 256; return c }(), "sized for 128 entries", 50},
		{"smaller", func() Config { c := storeConfig(2); c.MaxEntries = 40; c.Buckets = 16; return c }(), "sized for 128 entries", 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "br.table")
			tb, _ := openStore(t, path, storeConfig(2), now)
			first := fillStore(t, tb, 50, now, now+300*sec, now+5*sec, now+60*sec)
			tb.Close(now)
			later := now + 10*sec
			tb2, a := openStore(t, path, tt.cfg, later)
			defer tb2.Close(later)
			if !a.Adopted || !strings.Contains(a.Migrated, tt.why) || a.Connections != tt.wantConns ||
				a.Lost != 50-tt.wantConns || a.ExpiredInGap != 1 {
				t.Fatalf("got %+v, want %d connections re-inserted (%q), %d lost, 1 expired", a, tt.wantConns, tt.why, 50-tt.wantConns)
			}
			if !strings.Contains(a.String(), "adopted "+strconv.Itoa(tt.wantConns)+" connections") || !strings.Contains(a.String(), "re-inserted") {
				t.Errorf("log line %q", a.String())
			}
			found := 0
			var master *Entry
			for i := range 50 {
				p := pkt(packet.ProtoTCP, "198.19.0.1", 80, "198.18.0.1", uint16(40000+i))
				e := lookupPkt(t, tb2, p, later)
				if e == nil {
					continue
				}
				found++
				if e.Conn.TCP.Peer[0].MaxWin != 1000+uint32(i) || e.Conn.State != statemachine.TCPEstablished {
					t.Errorf("connection %d re-inserted with maxwin %d state %v", i, e.Conn.TCP.Peer[0].MaxWin, e.Conn.State)
				}
				if e.VerdictGen != 0 || e.Verdict != [2]uint8{} {
					t.Errorf("connection %d re-inserted with the earlier process's cached verdicts (gen %d, %v)", i, e.VerdictGen, e.Verdict)
				}
				if e.DirOf(p) != statemachine.Reply {
					t.Errorf("connection %d: reply packet judged %v after re-insertion", i, e.DirOf(p))
				}
				if i == 0 {
					master = e
				}
			}
			if found != tt.wantConns {
				t.Errorf("found %d connections, want %d", found, tt.wantConns)
			}
			if master == nil {
				return // the master did not fit (smaller)
			}
			k := master.Key()
			sh := tb2.Shard(tb2.ShardFor(tb2.HashKey(&k)))
			ref := sh.Ref(master)
			if ref.Gen != first.Gen {
				t.Errorf("master generation %d after re-insertion, want %d (the helper state names it)", ref.Gen, first.Gen)
			}
			if got := string(tb2.Aux(sh.ID())[ref.Index*24 : ref.Index*24+22]); got != "helper state of conn 0" {
				t.Errorf("aux slot of the master after re-insertion: %q", got)
			}
			x, ok := tb2.Expect.Match(pkt(packet.ProtoTCP, "198.18.1.1", 20, "198.18.0.1", 5001), later)
			if !ok || x.Master != ref {
				t.Errorf("expectation after re-insertion: %+v, %v; want master %+v", x, ok, ref)
			}
			// And the next process adopts the new file as it lies.
			tb2.Close(later)
			tb3, a := openStore(t, path, tt.cfg, later)
			tb3.Close(later)
			if !a.Adopted || a.Migrated != "" || a.Connections != tt.wantConns {
				t.Errorf("reopen after the re-insertion: %+v", a)
			}
		})
	}
}

func TestStateFileBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "br.table")
	tb, _ := openStore(t, path, storeConfig(1), sec)
	defer tb.Close(sec)
	_, _, err := Open(storeConfig(1), Persist{Path: path, Now: sec, ClockBase: sec})
	if !errors.Is(err, ErrStateFileBusy) || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("second Open: got %v, want ErrStateFileBusy naming --name", err)
	}
}

// TestResumeOffloaded: an adopted entry marked offloaded whose fast path
// did not survive is taken back with its window tracking reset and a
// grace period when its stored expiry passed.
func TestResumeOffloaded(t *testing.T) {
	for _, adopted := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "br.table")
		now := 100 * sec
		tb, _ := openStore(t, path, storeConfig(1), now)
		e := insertPkt(t, tb, pkt(packet.ProtoTCP, "198.18.0.1", 1, "198.19.0.1", 80), now, now+sec)
		e.Conn.TCP.Peer[0] = statemachine.TCPPeer{End: 5, MaxEnd: 9, MaxWin: 4, MaxAck: 3, Scale: 7}
		e.SetOffloaded(true)
		crash(tb)
		later := now + 10*sec // past the stored expiry
		tb2, a := openStore(t, path, storeConfig(1), later)
		if a.Connections != 1 || a.Offloaded != 1 {
			t.Fatalf("adoption: %+v, want the offloaded connection kept", a)
		}
		n := tb2.ResumeOffloaded(adopted, later, 30*sec)
		// Range, not Lookup: an offloaded entry past its stored expiry
		// is judged by the fast path's expiry hook, absent here.
		e = nil
		tb2.Shard(0).Range(func(x *Entry) bool { e = x; return false })
		switch {
		case adopted && (n != 0 || e == nil || !e.Offloaded()):
			t.Errorf("fast path adopted: took back %d, entry %v", n, e)
		case !adopted && (n != 1 || e == nil || e.Offloaded() || e.Conn.Expires != later+30*sec ||
			e.Conn.TCP.Peer[0] != statemachine.TCPPeer{Scale: 7, Flags: statemachine.TCPFlagSACKPerm | statemachine.TCPFlagBeLiberal}):
			t.Errorf("fast path lost: took back %d, entry %+v", n, e)
		}
		tb2.Close(later)
	}
}

// TestStateFileAllocs: the packet path over a table in a state file
// allocates nothing, as over the heap.
func TestStateFileAllocs(t *testing.T) {
	tb, _ := openStore(t, filepath.Join(t.TempDir(), "br.table"), storeConfig(1), sec)
	defer tb.Close(sec)
	k, tu := udpFlow(1)
	h := tb.HashKey(&k)
	sh := tb.Shard(0)
	allocs := testing.AllocsPerRun(1000, func() {
		e := sh.Lookup(&k, h, sec)
		if e == nil {
			e, _ = sh.Insert(&k, h, &tu, sec)
			e.Conn.Expires = 2 * sec
		}
		sh.Expire(sec, 8)
		sh.ServeRequests(8)
	})
	if allocs != 0 {
		t.Errorf("lookup/insert/expire/serve over a state file: %v allocations per run, want 0", allocs)
	}
}

// FuzzStateHeader: whatever the first page of a state file holds, reading
// and judging it never panics, and only a header this build writes is
// accepted.
func FuzzStateHeader(f *testing.F) {
	g := geometry{Shards: 2, PerShard: 128, Buckets: 32, MaxExpect: 16, AuxSize: 24, VLANMask: 0xfff}
	want := newHeader(&g, 7, sec)
	f.Add([]byte{})
	f.Add([]byte(fileMagic))
	f.Add(headerBytes(want))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _ := readHeader(b)
		size := int64(fileLayout(&g).size)
		if h.mismatch(want, size, size) == "" && (string(h.Magic[:]) != fileMagic || h.Shards != 2 || h.PerShard != 128) {
			t.Fatalf("accepted header %+v", h)
		}
	})
}

// BenchmarkStateFile compares the packet path over a table on the heap
// (New) and over a state file on tmpfs (Open), in one run: LookupBatch at
// 1M entries, and Insert with the sweep's removals.
func BenchmarkStateFile(b *testing.B) {
	const n = 1 << 20
	dir := "/dev/shm"
	if _, err := os.Stat(dir); err != nil {
		dir = b.TempDir()
	}
	for _, where := range []string{"heap", "file"} {
		mk := func(b *testing.B) *Table {
			c := Config{MaxEntries: n, Buckets: n, Shards: 1, Prefault: true, Seed: 0x5eed, AuxSize: 24}
			if where == "heap" {
				return newTable(b, c)
			}
			path := filepath.Join(dir, "statewire-bench.table")
			os.Remove(path)
			tb, _, err := Open(c, Persist{Path: path, Now: 1, ClockBase: sec})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { tb.Discard() })
			return tb
		}
		b.Run("LookupBatch/"+where, func(b *testing.B) {
			tb := mk(b)
			s := tb.Shard(0)
			keys, hashes := make([]Key, n), make([]uint64, n)
			for i, j := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
				k, tu := udpFlow(j)
				h := tb.HashKey(&k)
				e, _ := s.Insert(&k, h, &tu, 0)
				e.Conn.Expires = 1 << 62
				keys[i], hashes[i] = k, h
			}
			var out [batchChunk]*Entry
			b.ReportAllocs()
			b.ResetTimer()
			i, pkts := 0, 0
			for pkts < b.N {
				s.LookupBatch(keys[i:i+batchChunk], hashes[i:i+batchChunk], out[:], 1)
				pkts += batchChunk
				i = nextBatch(i, n)
			}
			pktsPerSec(b, pkts)
		})
		b.Run("Insert/"+where, func(b *testing.B) {
			tb := mk(b)
			s := tb.Shard(0)
			keys, tuples := make([]Key, n), make([]Tuple, n)
			for i := range n {
				keys[i], tuples[i] = udpFlow(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for range b.N {
				if i == n {
					b.StopTimer()
					s.Expire(1<<62, n)
					i = 0
					b.StartTimer()
				}
				e, _ := s.Insert(&keys[i], tb.HashKey(&keys[i]), &tuples[i], 0)
				e.Conn.Expires = 1 << 61
				i++
			}
			pktsPerSec(b, b.N)
		})
	}
}
