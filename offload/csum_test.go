package offload_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
)

// TestChecksumLengths checks the program's L4 checksum (csum_ok: 64-bit
// loads below 64 bytes, bpf_csum_diff above) against packet.Parse for
// every UDP segment length up to 1100 bytes over IPv4 and IPv6: a frame
// with a good checksum is taken, the same frame with one bit flipped
// (in the payload, or in the checksum field when there is none) is punted. The differential tests only see
// the second half: a good frame wrongly punted agrees with Go.
func TestChecksumLengths(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 4096, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		for n := 0; n <= 1100; n++ {
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(i*7 + n)
			}
			sport := uint16(1000 + n)
			var frame []byte
			if v6 {
				frame = packettest.UDP6("2001:db8::1", "2001:db8::2", sport, 53, payload)
			} else {
				frame = packettest.UDP4("198.18.0.1", "198.19.0.1", sport, 53, payload)
			}
			e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
			if err := prog.Offer(e, vs, oc); err != nil {
				t.Fatal(err)
			}
			run := func(f []byte) uint32 {
				ret, err := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: f})
				if err != nil {
					t.Fatal(err)
				}
				return ret
			}
			if ret := run(frame); ret != offload.ActionRedirect {
				t.Errorf("v6=%v payload %d: good checksum: action %d, want redirect", v6, n, ret)
			}
			bad := append([]byte(nil), frame...)
			l4 := len(bad) - n - 8
			pos := l4 + 6 // the checksum field
			if n > 0 {
				pos = l4 + 8 + (n*7+3)%n // anywhere in the payload
			}
			bad[pos] ^= 1 << (n % 8)
			var p packet.Packet
			if r := packet.Parse(bad, 0, packet.Options{VerifyChecksum: true}, &p); r != packet.ReasonBadChecksum {
				t.Fatalf("v6=%v payload %d: Go says %v for the flipped frame", v6, n, r)
			}
			if ret := run(bad); ret != offload.ActionPass {
				t.Errorf("v6=%v payload %d: bad checksum (byte %d): action %d, want punt", v6, n, pos-l4, ret)
			}
			if _, err := prog.TakeBack(e); err != nil {
				t.Fatal(err)
			}
		}
	}
}
