package flowtable

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on x86-64 and arm64
// with 4 KiB base pages.
const hugePage = 2 << 20

// adviseHuge asks the kernel to back the whole 2 MiB pages inside the n
// bytes at p with transparent huge pages (madvise MADV_HUGEPAGE; with
// /sys/kernel/mm/transparent_hugepage/enabled at "madvise", the common
// default, only regions so marked get them, and Go's heap is not marked).
//
// Why: a lookup in a large shard touches one random entry, and with 4 KiB
// pages each one is a TLB miss too (a shard of a million entries spans 40
// 000 pages; the CPU's second-level TLB holds about 2 000), a page-table
// walk on top of the cache miss. With 2 MiB pages the whole shard fits in
// the TLB. A kernel or a mapping that refuses (THP off, a state file on a
// tmpfs whose shmem_enabled is "never") leaves the pages as they were:
// nothing else changes, so the error is ignored. Regions smaller than one
// huge page are left alone.
func adviseHuge(p unsafe.Pointer, n uintptr) {
	lo := (uintptr(p) + hugePage - 1) &^ (hugePage - 1)
	hi := (uintptr(p) + n) &^ (hugePage - 1)
	if hi <= lo {
		return
	}
	unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, unix.MADV_HUGEPAGE)
}

// adviseHugeShard is adviseHuge for a shard's entry slots and buckets.
func adviseHugeShard(s *Shard) {
	if len(s.entries) > 0 {
		adviseHuge(unsafe.Pointer(unsafe.SliceData(s.entries)), uintptr(len(s.entries))*unsafe.Sizeof(Entry{}))
	}
	if len(s.buckets) > 0 {
		adviseHuge(unsafe.Pointer(unsafe.SliceData(s.buckets)), uintptr(len(s.buckets))*4)
	}
}
