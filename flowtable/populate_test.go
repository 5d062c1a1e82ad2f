package flowtable

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident returns how many of the whole pages under slots [from, to) of
// s are resident (mincore), and how many there are.
func resident(t *testing.T, s *Shard, from, to uint32) (in, pages int) {
	t.Helper()
	const page = 4096
	size := unsafe.Sizeof(Entry{})
	base := uintptr(unsafe.Pointer(unsafe.SliceData(s.entries)))
	lo := (base + uintptr(from)*size + page - 1) &^ (page - 1)
	hi := (base + uintptr(to)*size) &^ (page - 1)
	if hi <= lo {
		return 0, 0
	}
	vec := make([]byte, (hi-lo)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, lo, hi-lo, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec)
}

// noHugePages takes back the shard's request for transparent huge pages
// on its entry slots (madvise MADV_NOHUGEPAGE).
func noHugePages(t *testing.T, s *Shard) {
	t.Helper()
	size := uintptr(len(s.entries)) * unsafe.Sizeof(Entry{})
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s.entries))), size)
	base := uintptr(unsafe.Pointer(&b[0]))
	lo := (base + 4095) &^ 4095
	if err := unix.Madvise(b[lo-base:], unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatalf("madvise MADV_NOHUGEPAGE: %v", err)
	}
}

// TestPopulateAhead: in a table that is not prefaulted, the first insert
// of each 2 MiB of entry slots makes all of them resident (so the inserts
// that follow take no page fault), and asks for the next 2 MiB only when
// the fill reaches them; with populating refused (an old kernel) only the pages
// written are.
func TestPopulateAhead(t *testing.T) {
	n := int(3 * populateChunk)
	keys := make([]Key, populateChunk+1)
	for i := range keys {
		if !keys[i].SetOf(pkt(6, "198.18.0.1", uint16(1+i%60000), "198.19.0.1", uint16(80+i/60000))) {
			t.Fatal("key")
		}
	}
	for _, refused := range []bool{false, true} {
		tb, err := New(Config{MaxEntries: n, Buckets: n, Shards: 1, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		s := tb.Shard(0)
		s.noPopulate = refused
		if refused {
			// The shard asks for transparent huge pages: a first write
			// would then fault in 2 MiB whenever the kernel has one free,
			// whatever populating does. Without them here, what is
			// resident is what was written.
			noHugePages(t, s)
		}
		insert := func(i int) {
			if _, r := s.Insert(&keys[i], tb.HashKey(&keys[i]), nil, 1); r != Inserted {
				t.Fatalf("insert %d: %v", i, r)
			}
		}
		insert(0)
		in, pages := resident(t, s, 0, populateChunk)
		if refused {
			if in > 2 {
				t.Errorf("refused: %d of the first chunk's %d pages resident after one insert, want the one written", in, pages)
			}
			if s.populated != uint32(n) {
				t.Errorf("refused: populated %d, want %d (stops asking)", s.populated, n)
			}
			continue
		}
		if s.noPopulate {
			t.Skip("kernel without MADV_POPULATE_WRITE")
		}
		if in != pages {
			t.Errorf("%d of the first chunk's %d pages resident after one insert, want all", in, pages)
		}
		// (Whether the next chunk is resident yet depends on the
		// allocator: the race detector's zeroes fresh memory.)
		if s.populated != populateChunk {
			t.Errorf("populated up to slot %d after one insert, want %d", s.populated, populateChunk)
		}
		for i := 1; i <= int(populateChunk); i++ {
			insert(i)
		}
		if in, pages := resident(t, s, populateChunk, 2*populateChunk); in != pages {
			t.Errorf("%d of the second chunk's %d pages resident once the fill reached it, want all", in, pages)
		}
		if s.populated != 2*populateChunk {
			t.Errorf("populated up to slot %d, want %d", s.populated, 2*populateChunk)
		}
	}
}
