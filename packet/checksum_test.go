package packet

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestSumAllMatchesReference checks sumAll (32-byte blocks) against the
// frozen refSum (refparse_test.go) on every length around the block
// boundaries, with random bytes, all ones and all zeros.
func TestSumAllMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 200; n++ {
		r := make([]byte, n)
		for i := range r {
			r[i] = byte(rng.Uint32())
		}
		for _, b := range [][]byte{r, bytes.Repeat([]byte{0xff}, n), make([]byte, n)} {
			for _, acc := range []uint64{0, 1, 0xffff, 1<<34 - 1} {
				got, want := fold(sumAll(b, acc)), refFold(refSum(b, acc))
				if got != want {
					t.Errorf("%d bytes % x..., acc %#x: got %#04x, want %#04x", n, b[:min(n, 8)], acc, got, want)
				}
			}
		}
	}
}
