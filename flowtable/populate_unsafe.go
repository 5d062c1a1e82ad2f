package flowtable

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// populateChunk is how many entry slots one populate makes resident ahead
// of the high-water mark: 2 MiB of entries.
const populateChunk = 2 << 20 / uint32(unsafe.Sizeof(Entry{}))

// populateAhead makes the entry slots from idx (the next slot Insert takes
// above the high-water mark) to idx+populateChunk resident with one
// madvise(MADV_POPULATE_WRITE): a table that is not prefaulted (Config.
// Prefault) would otherwise take a page fault per 4 KiB of its first fill,
// on the worker, in the middle of a burst of new connections. The fault
// was the largest cost of a new connection (BenchmarkPipelineBatchHandshake:
// Insert's first write to a fresh slot, 38% of the profile); populating
// costs the kernel the same zeroing but no trap per page, once per 16 384
// inserts, and the memory still becomes resident only as the table fills.
// A kernel without MADV_POPULATE_WRITE (before 5.14) refuses it: the shard
// stops asking and takes the faults as before. Owner only.
func (s *Shard) populateAhead(idx uint32) {
	n := uint32(len(s.entries))
	end := min(idx+populateChunk, n)
	if s.noPopulate || idx >= end {
		s.populated = n
		return
	}
	const page = 4096
	size := unsafe.Sizeof(Entry{})
	base := uintptr(unsafe.Pointer(unsafe.SliceData(s.entries)))
	// Whole pages inside the slots only: the partial last page faults
	// as before.
	lo := (base + uintptr(idx)*size) &^ (page - 1)
	hi := (base + uintptr(end)*size) &^ (page - 1)
	if lo < base&^(page-1) || hi <= lo {
		s.populated = end
		return
	}
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, unix.MADV_POPULATE_WRITE); e != 0 {
		s.noPopulate = true
	}
	s.populated = end
}
