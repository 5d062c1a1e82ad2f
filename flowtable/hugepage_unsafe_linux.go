package flowtable

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on the platforms we run.
const hugePage = 2 << 20

// adviseHugePages asks the kernel to back the 2 MiB-aligned interior of
// the memory of s with transparent huge pages (MADV_HUGEPAGE; the default
// THP mode is "madvise", and the Go runtime does not ask). A million
// entries are 136 MiB: in 4 KiB pages every random lookup misses the TLB
// and pays a page walk, with 2 MiB pages the whole table fits the TLB.
// Called right after allocation, before the pages are touched. Failure only
// costs speed, so it is ignored.
func adviseHugePages[T any](s []T) {
	n := uintptr(len(s)) * unsafe.Sizeof(*new(T))
	if n < 2*hugePage {
		return
	}
	base := unsafe.Pointer(unsafe.SliceData(s))
	start := uintptr(base)
	lo := (start + hugePage - 1) &^ (hugePage - 1)
	hi := (start + n) &^ (hugePage - 1)
	if hi <= lo {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(base, lo-start)), hi-lo)
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
}
