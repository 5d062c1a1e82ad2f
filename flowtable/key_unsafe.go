package flowtable

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
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

// hashKey is seeded xxhash64 (XXH64) over the bytes that identify the key:
// for IPv6 all 40 bytes; for IPv4 the 16 that can differ (the two IPv4
// addresses, then the last word: ports, protocol, L3, VLAN), since an IPv4
// key's addresses are IPv4-mapped and their first 12 bytes are always the
// same. XXH64 of 16 bytes is two rounds instead of four lanes and four
// merges, about half the cost, and most traffic is IPv4. It is the
// cespare/xxhash/v2 algorithm unrolled for these two input lengths: the
// streaming Digest costs several times more (state setup, buffering the
// tail, a call per step). TestHashSeeded checks it bit for bit against
// xxhash.Digest over hashInput.
func hashKey(seed uint64, k *Key) uint64 {
	w := k.words()
	if k.L3 == 4 {
		// Little-endian: bytes 12..15 of A are the high half of word 1,
		// of B the high half of word 3.
		return xxHash16(seed, w[1]>>32|w[3]&^0xffffffff, w[4])
	}
	b := k.bytes()
	v1 := xxRound(seed+prime1+prime2, binary.LittleEndian.Uint64(b[0:8]))
	v2 := xxRound(seed+prime2, binary.LittleEndian.Uint64(b[8:16]))
	v3 := xxRound(seed, binary.LittleEndian.Uint64(b[16:24]))
	v4 := xxRound(seed-prime1, binary.LittleEndian.Uint64(b[24:32]))
	h := bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
	h = xxMerge(h, v1)
	h = xxMerge(h, v2)
	h = xxMerge(h, v3)
	h = xxMerge(h, v4)
	h += keySize
	h ^= xxRound(0, binary.LittleEndian.Uint64(b[32:40]))
	h = bits.RotateLeft64(h, 27)*prime1 + prime4
	return xxAvalanche(h)
}

// xxHash16 is XXH64 with seed of the 16 bytes whose little-endian words
// are w0 and w1.
func xxHash16(seed, w0, w1 uint64) uint64 {
	h := seed + prime5 + 16
	h ^= xxRound(0, w0)
	h = bits.RotateLeft64(h, 27)*prime1 + prime4
	h ^= xxRound(0, w1)
	h = bits.RotateLeft64(h, 27)*prime1 + prime4
	return xxAvalanche(h)
}

func xxAvalanche(h uint64) uint64 {
	h ^= h >> 33
	h *= prime2
	h ^= h >> 29
	h *= prime3
	h ^= h >> 32
	return h
}

// XXH64 primes.
const (
	prime1 uint64 = 11400714785074694791
	prime2 uint64 = 14029467366897019727
	prime3 uint64 = 1609587929392839161
	prime4 uint64 = 9650029242287828579
	prime5 uint64 = 2870177450012600261
)

func xxRound(acc, in uint64) uint64 {
	return bits.RotateLeft64(acc+in*prime2, 31) * prime1
}

func xxMerge(acc, v uint64) uint64 {
	return (acc^xxRound(0, v))*prime1 + prime4
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
