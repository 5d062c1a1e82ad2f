package offload

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// revokeMem is the memory-mapped `revoked` array: one 8-byte element per
// slot (an array map's elements are value_size rounded up to 8).
type revokeMem struct {
	b []byte
}

func mapRevoked(m *ebpf.Map, n int) (revokeMem, error) {
	size := (n*8 + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	b, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return revokeMem{}, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return revokeMem{b: b[:n*8]}, nil
}

// store sets slot's generation. The atomic store is sequentially
// consistent (XCHG on amd64, STLR on arm64): it is ordered before the
// BPF_F_LOCK lookup that follows it in TakeBack, whose spin lock the
// program takes before it reads the generation (offload.c).
func (r revokeMem) store(slot uint32, gen uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&r.b[8*int(slot)])), gen)
}

// swap is store that returns the previous value.
func (r revokeMem) swap(slot uint32, w uint64) uint64 {
	return atomic.SwapUint64((*uint64)(unsafe.Pointer(&r.b[8*int(slot)])), w)
}

// load reads slot's word.
func (r revokeMem) load(slot uint32) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&r.b[8*int(slot)])))
}

// cas replaces slot's word old by w, atomically with the program's
// compare-and-swap on it (offload.c punt_pending).
func (r revokeMem) cas(slot uint32, old, w uint64) bool {
	return atomic.CompareAndSwapUint64((*uint64)(unsafe.Pointer(&r.b[8*int(slot)])), old, w)
}

func (r revokeMem) close() error {
	if r.b == nil {
		return nil
	}
	return unix.Munmap(r.b[:cap(r.b)])
}
