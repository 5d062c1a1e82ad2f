package flowtable

import (
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// The unsafe views in this file rely on Key being exactly keySize bytes,
// 8-byte aligned and free of padding; key_test asserts all three.

// words views a key as five 64-bit words.
func (k *Key) words() *[keySize / 8]uint64 {
	return (*[keySize / 8]uint64)(unsafe.Pointer(k))
}

// bytes views a key as its 40 bytes, without copying.
func (k *Key) bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(k)), keySize)
}

// keyEqual compares two keys as five words, without branches: most
// comparisons in a chain walk are misses that differ in the first words
// anyway, and memequal is a call.
func keyEqual(a, b *Key) bool {
	x, y := a.words(), b.words()
	return (x[0]^y[0])|(x[1]^y[1])|(x[2]^y[2])|(x[3]^y[3])|(x[4]^y[4]) == 0
}

// hashKey is seeded xxhash64 over the key bytes. The Digest lives on the
// stack: writeBlocks is go:noescape, so nothing is allocated.
func hashKey(seed uint64, k *Key) uint64 {
	var d xxhash.Digest
	d.ResetWithSeed(seed)
	d.Write(k.bytes())
	return d.Sum64()
}

// entryIndex returns the slot index of e in entries, or -1 when e does not
// point at the start of an element of entries.
func entryIndex(entries []Entry, e *Entry) int {
	if len(entries) == 0 || e == nil {
		return -1
	}
	off := uintptr(unsafe.Pointer(e)) - uintptr(unsafe.Pointer(&entries[0]))
	const size = unsafe.Sizeof(Entry{})
	if off%size != 0 || off/size >= uintptr(len(entries)) {
		return -1
	}
	return int(off / size)
}
