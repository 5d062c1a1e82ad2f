package offload_test

import (
	"bytes"
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

// TestChecksumJumbo checks csum_frags, the checksum of a segment that
// csum_ok cannot see (longer than 8 x 512 bytes, or beyond the linear part
// of a multi-buffer frame: BPF_PROG_RUN puts what does not fit a page in
// fragments, as veth does with MTU 9000), against packet.Parse: UDP
// payloads from 3000 bytes to a 9000-byte MTU, odd and even lengths, IPv4
// and IPv6; a good checksum is taken with the whole frame's length in the
// port's byte counter, one flipped bit anywhere in the payload (also in
// the fragments) is punted.
func TestChecksumJumbo(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 4096, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	var lens []int
	for n := 3000; n <= 9000-48; n += 331 {
		lens = append(lens, n, n+1, n+2, n+3)
	}
	lens = append(lens, 9000-48, 9000-28)
	for _, v6 := range []bool{false, true} {
		for _, n := range lens {
			if v6 && n > 9000-48 {
				continue // beyond the MTU for IPv6
			}
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(i*13 + n)
			}
			sport := uint16(20000 + n)
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
					t.Fatalf("payload %d: BPF_PROG_RUN: %v", n, err)
				}
				return ret
			}
			before, err := prog.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if ret := run(frame); ret != offload.ActionRedirect {
				t.Errorf("v6=%v payload %d: good checksum: action %d, want redirect", v6, n, ret)
			}
			after, err := prog.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if got := after[offload.PortA].FastBytes - before[offload.PortA].FastBytes; got != uint64(len(frame)) {
				t.Errorf("v6=%v payload %d: fast bytes got %d, want the whole frame's %d", v6, n, got, len(frame))
			}
			l4 := len(frame) - n - 8
			for _, off := range []int{0, n / 2, n - 1, (n*7 + 3) % n} {
				bad := append([]byte(nil), frame...)
				pos := l4 + 8 + off
				bad[pos] ^= 1 << (off % 8)
				var p packet.Packet
				if r := packet.Parse(bad, 0, packet.Options{VerifyChecksum: true}, &p); r != packet.ReasonBadChecksum {
					t.Fatalf("v6=%v payload %d: Go says %v for the flipped frame", v6, n, r)
				}
				if ret := run(bad); ret != offload.ActionPass {
					t.Errorf("v6=%v payload %d: bad checksum (payload byte %d of %d): action %d, want punt", v6, n, off, n, ret)
				}
			}
			if _, err := prog.TakeBack(e); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestChecksumPartial: a UDP frame whose checksum field holds the folded
// pseudo-header sum (a sender offloading checksums, CHECKSUM_PARTIAL) is
// taken with checksums verified and not, for every segment length up to
// 1100 bytes over IPv4 and IPv6, and leaves the program with the checksum
// completed: byte for byte the frame with the right checksum, as
// packet.CompleteChecksum makes it, counted in CsumCompleted. The field
// one off the pseudo-header sum is punted when checksums are verified and
// forwarded untouched when not (Go: bad checksum, INVALID; or not looked at).
func TestChecksumPartial(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 4096, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	run := func(f []byte) (uint32, []byte) {
		out := make([]byte, len(f))
		ret, err := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: f, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		return ret, out
	}
	completed := func() uint64 {
		st, err := prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st[offload.PortA].CsumCompleted
	}
	tested := 0
	for _, v6 := range []bool{false, true} {
		for _, verify := range []bool{true, false} {
			for n := 0; n <= 1100; n++ {
				payload := make([]byte, n)
				for i := range payload {
					payload[i] = byte(i*11 + n)
				}
				sport := uint16(1000 + n)
				var good []byte
				if v6 {
					good = packettest.UDP6("2001:db8::1", "2001:db8::2", sport, 53, payload)
				} else {
					good = packettest.UDP4("198.18.0.1", "198.19.0.1", sport, 53, payload)
				}
				part := packettest.Partial(good)
				if bytes.Equal(part, good) {
					continue // the checksum is the pseudo-header sum
				}
				e, vs, oc := udpFlow(t, prog, append([]byte(nil), good...), offload.PortA)
				oc.VerifyChecksum = verify
				if err := prog.Offer(e, vs, oc); err != nil {
					t.Fatal(err)
				}
				before := completed()
				ret, out := run(part)
				if ret != offload.ActionRedirect {
					t.Fatalf("v6=%v verify=%v payload %d: partial checksum: action %d, want redirect", v6, verify, n, ret)
				}
				if !bytes.Equal(out, good) {
					t.Fatalf("v6=%v verify=%v payload %d: frame out\n% x\nwant\n% x", v6, verify, n, out, good)
				}
				if d := completed() - before; d != 1 {
					t.Fatalf("v6=%v verify=%v payload %d: CsumCompleted moved by %d, want 1", v6, verify, n, d)
				}
				off1 := append([]byte(nil), part...)
				ck := len(off1) - n - 2
				off1[ck+1]++ // low byte: one off, unless it wraps (then still not the sum)
				ret, out = run(off1)
				switch {
				case verify && ret != offload.ActionPass:
					t.Fatalf("v6=%v payload %d: field one off, verified: action %d, want punt", v6, n, ret)
				case !verify && (ret != offload.ActionRedirect || !bytes.Equal(out, off1)):
					t.Fatalf("v6=%v payload %d: field one off, not verified: action %d (changed %v), want redirect unchanged", v6, n, ret, !bytes.Equal(out, off1))
				}
				if _, err := prog.TakeBack(e); err != nil {
					t.Fatal(err)
				}
				tested++
			}
		}
	}
	if tested < 4000 {
		t.Fatalf("tested %d frames, want most of 4404", tested)
	}
}
