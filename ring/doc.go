// Package ring is statewire's AF_XDP layer, written directly on
// golang.org/x/sys/unix: one UMEM (a mmap'd area of fixed-size frames) shared
// by the sockets of both ports of one queue, the four kernel rings of each
// socket (fill, completion, RX, TX) with batched, cached-index access, and
// SPSC, a single-producer/single-consumer ring for hand-off between cores.
//
// # Ownership
//
// A UMEM, every Socket opened on it and every ring of those sockets belong to
// ONE goroutine: the worker that serves that queue of both ports. None of
// their methods take locks, and the frame accounting (UMEM.Counts, Check) is
// plain memory. The kernel is the only other party on each kernel ring: on RX
// and completion the kernel produces and we consume; on TX and fill we
// produce and the kernel consumes. Each side writes only its own index and
// reads the peer's with an atomic load (see the barrier comments in
// queue.go).
//
// Close (of sockets, then of the UMEM) must be called from the owning
// goroutine after it has stopped using the rings.
//
// SPSC is the exception: exactly one producer goroutine and exactly one
// consumer goroutine may use it concurrently. A Waiter (an idle worker's
// sleep on its sockets and an eventfd) belongs to the worker too, but for
// Wake, which any goroutine calls after handing the worker work.
//
// # Multi-buffer frames
//
// With Config.MultiBuffer the first socket binds with XDP_USE_SG (a
// shared-UMEM bind inherits it) and a frame longer than one buffer is a
// chain of descriptors, all but the last with Contd in Options, at most
// MaxChain. The kernel publishes a frame's descriptors together; the
// application releases RX descriptors and submits TX ones by whole frames.
// The fill and completion rings and the UMEM accounting count buffers;
// Stats counts frames (RX, TX) and buffers (RXBuffers, TXBuffers, Filled,
// Completed).
//
// # Files
//
// Syscalls and unsafe are confined to the files named *_unsafe.go; the ring
// index arithmetic, the frame allocator and the accounting are ordinary Go
// and are unit-tested on fake ring memory without privileges.
package ring
