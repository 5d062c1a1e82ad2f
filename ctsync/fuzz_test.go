package ctsync

import "testing"

// FuzzDecode: a peer is a network input. Decode never panics, never
// returns a message longer than what is left, and what it accepts
// re-encodes to something it accepts again.
func FuzzDecode(f *testing.F) {
	f.Add(unhex(f, conntrackdCTNew))
	f.Add(unhex(f, conntrackdUDPNew))
	f.Add(unhex(f, conntrackdICMPNew))
	f.Add(AppendControl(nil, FlagAck, 1, 2, 3))
	f.Add(AppendControl(nil, FlagAlive, 1, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, _ := Decode(b)
		total := 0
		for _, m := range msgs {
			total += int(m.Len)
			switch {
			case m.CT != nil:
				re, err := AppendCT(nil, m.Header, m.CT, Options{TCPWindowTracking: true})
				if err != nil {
					continue // e.g. an IPv4 group with a zero address is valid input but not a tuple we send
				}
				if _, _, err := DecodeMsg(re); err != nil {
					t.Fatalf("re-encoded CT does not decode: %v\n% x", err, re)
				}
			case m.Exp != nil:
				re, err := AppendExp(nil, m.Header, m.Exp, Options{})
				if err != nil {
					continue
				}
				if _, _, err := DecodeMsg(re); err != nil {
					t.Fatalf("re-encoded expectation does not decode: %v\n% x", err, re)
				}
			}
		}
		if total > len(b) {
			t.Fatalf("messages total %d bytes of %d", total, len(b))
		}
	})
}
