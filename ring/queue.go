package ring

import "sync/atomic"

// Barriers. The kernel documents the protocol on each ring in
// net/xdp/xsk_queue.h (after Documentation/core-api/circular-buffers.rst):
//
//	producer                         consumer
//
//	if (LOAD ->consumer) {  (A)      LOAD.acq ->producer  (C)
//	   STORE $data                   LOAD $data
//	   STORE.rel ->producer (B)      STORE.rel ->consumer (D)
//	}
//
//	(A) pairs with (D), and (B) pairs with (C).
//
// Go's sync/atomic loads and stores are sequentially consistent, which is
// stronger than the acquire/release the kernel asks for, and they are the
// only ordering primitives Go offers. Each comment below names the letter
// it implements. Between batches we keep cached copies of both indices so a
// batch costs one atomic load (only when the cached view is short) and one
// atomic store.

// Desc is one RX or TX descriptor: a frame address in the UMEM (the start
// of the packet data, not necessarily of the frame), its length and options.
// It has the layout of struct xdp_desc.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// More reports whether the frame continues in the next descriptor
// (Contd: multi-buffer, Config.MultiBuffer).
func (d Desc) More() bool { return d.Options&Contd != 0 }

// idx holds the shared and cached indices of one ring. Indices are free
// running uint32 counters; a slot is index&mask, and differences are
// computed modulo 2^32, so wraparound needs no special case.
type idx struct {
	producer *uint32 // shared with the kernel
	consumer *uint32 // shared with the kernel
	flags    *uint32 // XDP_RING_NEED_WAKEUP lives here
	mask     uint32
	size     uint32

	cachedProd uint32
	cachedCons uint32

	// Accounting: a batch moves frames out of *from into *to. Both point
	// into the UMEM's counters (or at dummies in unit tests).
	from, to *int64
	moved    uint64 // frames moved through this ring since open
}

func newIdx(producer, consumer, flags *uint32, size uint32, from, to *int64) idx {
	return idx{
		producer:   producer,
		consumer:   consumer,
		flags:      flags,
		mask:       size - 1,
		size:       size,
		cachedProd: atomic.LoadUint32(producer),
		cachedCons: atomic.LoadUint32(consumer),
		from:       from,
		to:         to,
	}
}

// peek is the consumer side (RX, completion).
func (r *idx) peek(max uint32) (n, start uint32) {
	avail := r.cachedProd - r.cachedCons
	if avail < max {
		// (C): acquire the kernel's producer index before reading
		// the descriptors it published.
		r.cachedProd = atomic.LoadUint32(r.producer)
		avail = r.cachedProd - r.cachedCons
	}
	if avail > r.size {
		// Only a corrupted producer index can do this; never hand out
		// more than one lap.
		avail = r.size
	}
	if avail > max {
		avail = max
	}
	return avail, r.cachedCons
}

// release gives n consumed entries back to the producer.
func (r *idx) release(n uint32) {
	if avail := r.cachedProd - r.cachedCons; n > avail {
		n = avail // releasing more than was peeked would hand the kernel garbage
	}
	if n == 0 {
		return
	}
	r.cachedCons += n
	// (D): release our consumer index only after we have finished reading
	// the entries, so the kernel cannot overwrite them under us.
	atomic.StoreUint32(r.consumer, r.cachedCons)
	r.account(n)
}

// reserve is the producer side (TX, fill).
func (r *idx) reserve(want uint32) (n, start uint32) {
	free := r.size - (r.cachedProd - r.cachedCons)
	if free < want {
		// (A): read the kernel's consumer index before overwriting
		// slots it may still be reading.
		r.cachedCons = atomic.LoadUint32(r.consumer)
		free = r.size - (r.cachedProd - r.cachedCons)
	}
	if free > r.size {
		free = 0 // corrupted consumer index: refuse rather than overwrite
	}
	if free > want {
		free = want
	}
	return free, r.cachedProd
}

// submit publishes n entries written since the last reserve.
func (r *idx) submit(n uint32) {
	if free := r.size - (r.cachedProd - r.cachedCons); n > free {
		n = free
	}
	if n == 0 {
		return
	}
	r.cachedProd += n
	// (B): release our producer index only after the descriptors are
	// written, so the kernel never reads a slot before its contents.
	atomic.StoreUint32(r.producer, r.cachedProd)
	r.account(n)
}

func (r *idx) account(n uint32) {
	r.moved += uint64(n)
	*r.from -= int64(n)
	*r.to += int64(n)
}

// loadConsumer reads the kernel's consumer index (A) and refreshes the
// cached copy.
func (r *idx) loadConsumer() uint32 {
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.cachedCons
}

// needWakeup reports whether the kernel asked to be woken up for this ring.
func (r *idx) needWakeup() bool {
	return r.flags != nil && atomic.LoadUint32(r.flags)&xdpRingNeedWakeup != 0
}

// occupancy is producer - consumer as the kernel sees it now (for Check).
func (r *idx) occupancy() uint32 {
	return atomic.LoadUint32(r.producer) - atomic.LoadUint32(r.consumer)
}

const xdpRingNeedWakeup = 1 // XDP_RING_NEED_WAKEUP

// RXRing is a socket's receive ring: the kernel produces descriptors of
// received frames, the owning goroutine consumes them. Receiving moves a
// frame from the socket's fill place to the application.
type RXRing struct {
	idx
	descs  []Desc
	frames uint64 // frames (descriptors without Contd) released since open
}

// Peek returns how many descriptors (at most max) are ready and the index
// of the first; read them with Desc(start+i) for i < n, then Release(n).
func (r *RXRing) Peek(max uint32) (n, start uint32) { return r.peek(max) }

// Desc returns the descriptor at ring index i (any value: it is masked).
func (r *RXRing) Desc(i uint32) Desc { return r.descs[i&r.mask] }

// Release hands n descriptors back to the kernel; the frames they name now
// belong to the application (counted in Counts.App) until it puts them on
// a TX or fill ring or frees them.
//
// Release only whole frames: a frame's descriptors are published together,
// and a chain cut in two would leave its start to the application and its
// end to the next Peek.
func (r *RXRing) Release(n uint32) {
	if avail := r.cachedProd - r.cachedCons; n > avail {
		n = avail
	}
	for i := uint32(0); i < n; i++ {
		if r.descs[(r.cachedCons+i)&r.mask].Options&Contd == 0 {
			r.frames++
		}
	}
	r.release(n)
}

// Ready reports whether the kernel has published descriptors beyond those
// released (one atomic load): the worker's last look before it sleeps.
func (r *RXRing) Ready() bool { return atomic.LoadUint32(r.producer) != r.cachedCons }

// TXRing is a socket's transmit ring: the owning goroutine produces, the
// kernel consumes and later reports each frame on the completion ring.
type TXRing struct {
	idx
	descs  []Desc
	frames uint64 // frames (descriptors without Contd) submitted since open
}

// Reserve returns how many slots (at most n) are free and the index of the
// first; write them with Set(start+i, d) for i < got, then Submit(got).
func (r *TXRing) Reserve(n uint32) (got, start uint32) { return r.reserve(n) }

// Set writes descriptor d at ring index i.
func (r *TXRing) Set(i uint32, d Desc) { r.descs[i&r.mask] = d }

// Submit publishes n descriptors; their frames move from the application
// to the TX place until they come back on the completion ring. A chained
// frame (all its descriptors but the last with Contd) must be submitted
// whole: the kernel takes a frame only once its last descriptor is there.
func (r *TXRing) Submit(n uint32) {
	if free := r.size - (r.cachedProd - r.cachedCons); n > free {
		n = free
	}
	// Count frames, not buffers: the descriptors just written are in
	// the cache, and only the last of each frame lacks Contd.
	for i := uint32(0); i < n; i++ {
		if r.descs[(r.cachedProd+i)&r.mask].Options&Contd == 0 {
			r.frames++
		}
	}
	r.submit(n)
}

// NeedWakeup reports whether the kernel needs a sendto to process TX.
func (r *TXRing) NeedWakeup() bool { return r.needWakeup() }

// FillRing is a socket's fill ring: the owning goroutine gives the kernel
// empty frames to receive into.
type FillRing struct {
	idx
	addrs []uint64
}

// Reserve returns how many slots (at most n) are free and the first index.
func (r *FillRing) Reserve(n uint32) (got, start uint32) { return r.reserve(n) }

// Set writes frame address addr at ring index i.
func (r *FillRing) Set(i uint32, addr uint64) { r.addrs[i&r.mask] = addr }

// Submit publishes n addresses; the frames move from the application to the
// socket's fill place.
func (r *FillRing) Submit(n uint32) { r.submit(n) }

// NeedWakeup reports whether the kernel needs a poll/recvfrom to pick up
// fill entries (zero-copy drivers set it when they ran dry).
func (r *FillRing) NeedWakeup() bool { return r.needWakeup() }

// CompletionRing is a socket's completion ring: the kernel returns frames
// whose transmission is done.
type CompletionRing struct {
	idx
	addrs []uint64
}

// Peek returns how many addresses (at most max) are ready and the first
// index; read them with Addr(start+i), then Release(n).
func (r *CompletionRing) Peek(max uint32) (n, start uint32) { return r.peek(max) }

// Addr returns the frame address at ring index i.
func (r *CompletionRing) Addr(i uint32) uint64 { return r.addrs[i&r.mask] }

// Release hands n entries back; their frames belong to the application.
func (r *CompletionRing) Release(n uint32) { r.release(n) }
