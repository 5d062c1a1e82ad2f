package bridge

import (
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// TestRedirectFirstOptionOnly: the kernel (nf_conntrack_icmpv6_redirect)
// reads only the first option of an ICMPv6 redirect. A redirect whose
// Target Link-Layer Address option comes first, as Linux routers send it,
// is INVALID even though it quotes a tracked flow further on; it is counted
// "invalid" (the kernel returns NF_ACCEPT without a connection and the
// tracker refuses a new type-137 tuple), not "icmp_error". With the
// redirected header first, options after it do not matter: RELATED.
func TestRedirectFirstOptionOnly(t *testing.T) {
	const cli, srv = "2001:2::1", "2001:2::2"
	fwd := pt.UDP6(cli, srv, 5000, 6000, []byte("q"))
	tlla := pt.TargetLLAOption([6]byte{0x02, 0, 0, 0, 0, 0xfe})
	rh := func(q []byte) []byte {
		n := (8 + len(q) + 7) / 8 * 8
		o := make([]byte, n)
		o[0], o[1] = 4, byte(n/8)
		copy(o[8:], q)
		return o
	}
	tllaFirst := pt.Redirect6Options("fe80::fe", cli, "fe80::2", srv, tlla, pt.Quote(fwd, 0))
	rhFirst := pt.Redirect6Options("fe80::fe", cli, "fe80::2", srv, append(rh(pt.Quote(fwd, 0)), tlla...), nil)
	for _, batch := range []bool{false, true} {
		pl := newTestPipeline(t, nil, 1024)
		process := func(f []byte, in Port, at int64) Result {
			if !batch {
				return pl.Process(f, 0, in, 100*sec+at*sec)
			}
			var out [1]Result
			pl.ProcessBatch([][]byte{f}, in, 100*sec+at*sec, out[:])
			return out[0]
		}
		if r := process(fwd, PortA, 0); r.State != statemachine.StateNew {
			t.Fatalf("batch %v: udp: got %v, want NEW", batch, r.State)
		}
		before := *pl.Stats()
		r := process(tllaFirst, PortB, 1)
		if r.State != statemachine.StateInvalid || r.Parse != packet.ReasonICMPBadInner || r.Verdict != Accept {
			t.Errorf("batch %v: target link-layer option first: got %v (parse %v) %v, want INVALID (icmp-bad-inner) accepted", batch, r.State, r.Parse, r.Verdict)
		}
		after := *pl.Stats()
		if d := after.Invalid - before.Invalid; d != 1 {
			t.Errorf("batch %v: target link-layer option first: invalid counted %d times, want 1", batch, d)
		}
		if d := after.ICMPError - before.ICMPError; d != 0 {
			t.Errorf("batch %v: target link-layer option first: icmp_error counted %d times, want 0", batch, d)
		}
		if r := process(rhFirst, PortB, 2); r.State != statemachine.StateRelated || !r.Tracked {
			t.Errorf("batch %v: redirected header first, target link-layer option after: got %v (parse %v, tracked %v), want RELATED", batch, r.State, r.Parse, r.Tracked)
		}
	}
}
