package flowtable

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds the unsafe part of the state file (store.go): the mmap and
// the typed views over it. Every type viewed here holds no Go pointers, so
// the garbage collector has nothing to scan or move in the mapping.

// fileHeader is the first page of a state file. Fields are native-endian
// and naturally aligned; the layout fields make a file written by a build
// with another Entry, Key, Conn, Expect or helper slot layout unmistakable.
type fileHeader struct {
	Magic   [8]byte
	Version uint32
	// Clean is 1 after a graceful stop (Close), 0 while a process serves
	// the table or after it died without stopping.
	Clean atomic.Uint32

	EntrySize, KeySize, ConnSize, ExpectSize, AuxSize uint32
	Shards, PerShard, Buckets, MaxExpect              uint32
	VLANMask                                          uint32

	Seed uint64
	// BootID is the kernel's boot id: the clock (CLOCK_MONOTONIC based)
	// restarts at boot, so a table from an earlier boot is refused.
	BootID [16]byte
	// ClockBase is the datapath clock's offset from CLOCK_MONOTONIC.
	ClockBase int64
	// Saved is the clock when the table was last written at a clean stop
	// (for the log: how long the gap was).
	Saved atomic.Int64
	// ExpSel selects which of the two expectation buffers is current;
	// ExpN[i] is how many expectations buffer i holds. A writer fills the
	// other buffer, then sets its count, then flips ExpSel: a process
	// killed in between leaves the previous buffer current and whole.
	ExpSel atomic.Uint32
	ExpN   [2]atomic.Uint32
	// Pid is the process that last opened the table (for the log).
	Pid int32
}

// headerSize is the space the header takes; the regions after it start on
// page boundaries.
const headerSize = 4096

var _ [headerSize - unsafe.Sizeof(fileHeader{})]struct{}

// shardMeta is one shard's persisted metadata: its counters, copied by
// publish. Slots, chains and the free list are rebuilt at adoption from the
// slots' used flags, never trusted.
type shardMeta struct {
	Stats Stats
	_     [64]byte
}

// mapping is a state file mapped MAP_SHARED.
type mapping struct {
	f   *os.File
	mem []byte
}

// mapFile maps size bytes of f read-write and shared.
func mapFile(f *os.File, size int) (*mapping, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s (%d bytes): %w", f.Name(), size, err)
	}
	return &mapping{f: f, mem: mem}, nil
}

func (m *mapping) unmap() error {
	if m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem = nil
	return err
}

func (m *mapping) header() *fileHeader { return (*fileHeader)(unsafe.Pointer(&m.mem[0])) }

// layout is where a file's regions lie: [offset, length] of each, and the
// file's size.
type layout struct {
	meta, entries, aux, expect [2]int
	size                       int
}

func pageUp(n int) int { return (n + 4095) &^ 4095 }

// fileLayout computes where each region of a file with geometry g lies.
func fileLayout(g *geometry) layout {
	var l layout
	off := headerSize
	put := func(r *[2]int, n int) {
		r[0], r[1] = off, n
		off = pageUp(off + n)
	}
	put(&l.meta, int(g.Shards)*int(unsafe.Sizeof(shardMeta{})))
	put(&l.entries, int(g.Shards)*int(g.PerShard)*int(unsafe.Sizeof(Entry{})))
	put(&l.aux, int(g.Shards)*int(g.PerShard)*int(g.AuxSize))
	put(&l.expect, 2*int(g.MaxExpect)*int(unsafe.Sizeof(Expect{})))
	l.size = off
	return l
}

// metas, entries, aux and expectBufs view the regions of m.
func (m *mapping) metas(l *layout, n int) []shardMeta {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*shardMeta)(unsafe.Pointer(&m.mem[l.meta[0]])), n)
}

func (m *mapping) entries(l *layout, n int) []Entry {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*Entry)(unsafe.Pointer(&m.mem[l.entries[0]])), n)
}

func (m *mapping) aux(l *layout) []byte {
	return m.mem[l.aux[0] : l.aux[0]+l.aux[1] : l.aux[0]+l.aux[1]]
}

func (m *mapping) expectBufs(l *layout, max int) [2][]Expect {
	if max == 0 {
		return [2][]Expect{}
	}
	all := unsafe.Slice((*Expect)(unsafe.Pointer(&m.mem[l.expect[0]])), 2*max)
	return [2][]Expect{all[:max:max], all[max:]}
}

// layoutSizes are the sizes a state file's layout fingerprint records.
func layoutSizes() (entry, key, conn, expect uint32) {
	return uint32(unsafe.Sizeof(Entry{})), uint32(unsafe.Sizeof(Key{})),
		uint32(unsafe.Sizeof(Entry{}.Conn)), uint32(unsafe.Sizeof(Expect{}))
}

// readHeader copies the header out of the first bytes of a file, b, which
// may be short or hold anything: the copy is then validated field by field.
func readHeader(b []byte) (*fileHeader, bool) {
	h := new(fileHeader)
	if len(b) < int(unsafe.Sizeof(*h)) {
		return h, false
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(h)), unsafe.Sizeof(*h)), b)
	return h, true
}

// writeHeader writes h into a fresh file's first page, the magic last: a
// process killed while the header is being written leaves a file the next
// one refuses.
func (m *mapping) writeHeader(h *fileHeader) {
	src := unsafe.Slice((*byte)(unsafe.Pointer(h)), unsafe.Sizeof(*h))
	n := len(h.Magic)
	copy(m.mem[n:len(src)], src[n:])
	copy(m.mem[:n], src[:n])
}

// alignedBytes returns n zero bytes, 8-byte aligned (aux slots hold
// uint32 and wider fields).
func alignedBytes(n int) []byte {
	if n == 0 {
		return nil
	}
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}

// headerBytes is h as it lies in a file (tests and fuzz seeds).
func headerBytes(h *fileHeader) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(h)), unsafe.Sizeof(*h))...)
}
