package packet_test

import (
	"testing"

	"github.com/statewire/statewire/packet"
)

// FuzzParse feeds Parse arbitrary frames and wire lengths. Seeds: every
// frame of the capture corpus and every table case. Parse must not panic
// and must keep checkBounds's invariants; parsing the same bytes twice must
// give the same result (no state leaks between frames).
func FuzzParse(f *testing.F) {
	for _, c := range readCaptures(f) {
		f.Add(c.data, c.wireLen, false)
	}
	for _, tc := range parseCases() {
		f.Add(tc.frame, tc.wireLen, tc.verify)
	}
	f.Fuzz(func(t *testing.T, frame []byte, wireLen int, verify bool) {
		var p, q packet.Packet
		opt := packet.Options{VerifyChecksum: verify}
		r := packet.Parse(frame, wireLen, opt, &p)
		if r >= packet.NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		checkBounds(t, &p, frame, wireLen)
		if p.HasInner && p.InnerReason != packet.ReasonOK {
			t.Fatalf("HasInner with InnerReason %v", p.InnerReason)
		}
		if p.ChecksumOK && !p.ChecksumChecked {
			t.Fatal("ChecksumOK without ChecksumChecked")
		}
		q.TCP.MSS = 1 // garbage that Parse must clear
		if r2 := packet.Parse(frame, wireLen, opt, &q); r2 != r || q != p {
			t.Fatalf("second parse differs: %v vs %v", r2, r)
		}
	})
}
