package offload

import (
	"fmt"
	"os"
	"runtime"
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

// flowBusy is offload.c FLOW_BUSY: revoked[slot] of an active flow is
// gen|flowBusy while a program (or Peek's fallback) holds the flow's lock.
// Bit 63 (pendBit) marks a pending offer, which is never locked.
const flowBusy = 1 << 62

func (r revokeMem) word(slot uint32) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.b[8*int(slot)]))
}

// store sets slot's word (Offer, before the value is in the map; and its
// undo).
func (r revokeMem) store(slot uint32, w uint64) {
	atomic.StoreUint64(r.word(slot), w)
}

// revoke takes slot's flow of generation gen out of the program's hands:
// a pending offer (gen|pendBit|count<<32) is swapped for 0 at once and
// revoke returns true (cancelled: the program took nothing); an active
// flow's gen is swapped for 0 once no program holds its lock (gen|flowBusy:
// a few dozen ns of softirq work). The compare-and-swap is sequentially
// consistent (LOCK CMPXCHG on amd64, CASAL or LDAXR/STLXR on arm64) and the
// program's lock and unlock are fully ordered BPF atomics: once it
// succeeds every update a program made is visible to the lookup that
// follows, and every program that has not taken the lock yet finds 0 and
// punts.
func (r revokeMem) revoke(slot uint32, gen uint64) (cancelled bool) {
	w := r.word(slot)
	for i := 0; ; i++ {
		x := atomic.LoadUint64(w)
		switch {
		case x&pendBit != 0 && uint32(x) == uint32(gen):
			if atomic.CompareAndSwapUint64(w, x, 0) {
				return true
			}
			continue
		case x == gen:
			if atomic.CompareAndSwapUint64(w, gen, 0) {
				return false
			}
		case x == gen|flowBusy:
		default:
			return false // not this generation: already revoked
		}
		if i > 64 {
			runtime.Gosched()
		}
	}
}

// lock takes an active flow's lock from userspace (Peek's fallback);
// false when the flow is no longer active with gen.
func (r revokeMem) lock(slot uint32, gen uint64) bool {
	w := r.word(slot)
	for i := 0; ; i++ {
		switch atomic.LoadUint64(w) {
		case gen:
			if atomic.CompareAndSwapUint64(w, gen, gen|flowBusy) {
				return true
			}
		case gen | flowBusy:
		default:
			return false
		}
		if i > 64 {
			runtime.Gosched()
		}
	}
}

// unlock releases lock.
func (r revokeMem) unlock(slot uint32, gen uint64) {
	atomic.StoreUint64(r.word(slot), gen)
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
