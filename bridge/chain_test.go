package bridge

import (
	"encoding/binary"
	"testing"

	"github.com/statewire/statewire/ring"
)

// FuzzChainWalk feeds dpQueue's chain walks (chainLen, gather, freeFrame)
// links the kernel never makes: loops, addresses outside the
// UMEM, lengths past a buffer, chains that never end. They must not panic,
// must stop after ring.MaxChain buffers, and gather must return nil rather
// than a frame longer than its buffer.
func FuzzChainWalk(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 1, 1, 2, 0, 0, 9, 9, 9, 1, 0, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := ring.Config{Frames: 16, FrameSize: 2048, FillSize: 16, CompletionSize: 16, RXSize: 16, TXSize: 16}
		u, err := ring.NewUMEM(cfg)
		if err != nil {
			t.Skip(err)
		}
		defer u.Close()
		q := &dpQueue{umem: u, next: make([]ring.Desc, cfg.Frames), bufSize: uint64(cfg.FrameSize)}
		// Each 4 bytes link buffer b[0]%20 (some outside the UMEM) to a
		// descriptor: address from b[1], length from b[2:4], Contd
		// from b[1]'s low bit.
		for len(b) >= 4 {
			i := int(b[0]) % len(q.next)
			q.next[i] = ring.Desc{
				Addr:    uint64(b[1]%20)*2048 + 256,
				Len:     uint32(binary.LittleEndian.Uint16(b[2:4])) % 4096,
				Options: uint32(b[1] & 1),
			}
			b = b[4:]
		}
		first := q.next[0]
		first.Options |= ring.Contd
		if n := q.chainLen(first); n < 1 || n > ring.MaxChain {
			t.Fatalf("chainLen got %d, want 1..%d", n, ring.MaxChain)
		}
		dst := make([]byte, 9022)
		if g := q.gather(first, dst); g != nil && len(g) > len(dst) {
			t.Fatalf("gather got %d bytes into %d", len(g), len(dst))
		}
		q.freeFrame(first) // frees nothing it does not own: the stack is full
		if c := u.Counts(); c.Free != int64(cfg.Frames) {
			t.Fatalf("free frames after freeFrame got %d, want %d", c.Free, cfg.Frames)
		}
	})
}
