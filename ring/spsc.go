package ring

import (
	"fmt"
	"sync/atomic"
)

// cacheLine pads the fields written by different cores apart, so the
// producer's and consumer's stores do not bounce one cache line.
const cacheLine = 64

// SPSC is a bounded single-producer/single-consumer ring for handing items
// between two goroutines (normally two pinned workers). Exactly one
// goroutine may call Push and exactly one (other) goroutine may call Pop;
// Len and Cap may be called from either. Indices are free-running; each side
// caches the other's index and reloads it only when its cached view says
// the batch does not fit, so a batch costs at most one atomic load and one
// atomic store.
type SPSC[T any] struct {
	buf  []T
	mask uint64
	_    [cacheLine]byte

	// Written by the producer only.
	tail       atomic.Uint64
	cachedHead uint64
	_          [cacheLine - 16]byte

	// Written by the consumer only.
	head       atomic.Uint64
	cachedTail uint64
	_          [cacheLine - 16]byte
}

// NewSPSC returns a ring of size slots; size must be a power of two.
func NewSPSC[T any](size int) (*SPSC[T], error) {
	if !isPow2(size) || size > 1<<30 {
		return nil, fmt.Errorf("%w: SPSC size %d: must be a power of two in [1, 2^30]", ErrConfig, size)
	}
	return &SPSC[T]{buf: make([]T, size), mask: uint64(size - 1)}, nil
}

// Push copies as many of items as fit and returns how many it copied.
// Producer only.
func (r *SPSC[T]) Push(items []T) int {
	tail := r.tail.Load() // our own index: no other writer
	size := r.mask + 1
	free := size - (tail - r.cachedHead)
	if free < uint64(len(items)) {
		// Acquire the consumer's index: slots it released are free
		// to overwrite only after its reads of them happened.
		r.cachedHead = r.head.Load()
		free = size - (tail - r.cachedHead)
	}
	n := uint64(len(items))
	if n > free {
		n = free
	}
	for i := uint64(0); i < n; i++ {
		r.buf[(tail+i)&r.mask] = items[i]
	}
	// Release: publish the slots after writing them.
	r.tail.Store(tail + n)
	return int(n)
}

// Pop moves up to len(out) items into out and returns how many it moved.
// Consumer only. Popped slots are zeroed so the ring keeps no pointers alive.
func (r *SPSC[T]) Pop(out []T) int {
	head := r.head.Load()
	avail := r.cachedTail - head
	if avail < uint64(len(out)) {
		// Acquire the producer's index before reading the slots.
		r.cachedTail = r.tail.Load()
		avail = r.cachedTail - head
	}
	n := uint64(len(out))
	if n > avail {
		n = avail
	}
	var zero T
	for i := uint64(0); i < n; i++ {
		j := (head + i) & r.mask
		out[i] = r.buf[j]
		r.buf[j] = zero
	}
	// Release: hand the slots back after reading them.
	r.head.Store(head + n)
	return int(n)
}

// Len returns the number of items in the ring at some instant.
func (r *SPSC[T]) Len() int { return int(r.tail.Load() - r.head.Load()) }

// Cap returns the number of slots.
func (r *SPSC[T]) Cap() int { return int(r.mask + 1) }
