package bridge

import (
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// TestICMPOtherFamilyNotAnError: ICMP (protocol 1) over IPv6 and ICMPv6
// (58) over IPv4 carry no ICMP header the parser reads, so their type reads
// 0, which for ICMPv6 is an error type. The kernel hands neither to its
// ICMP error handling (nf_conntrack_handle_icmp matches protocol to
// family) and the ICMP trackers refuse the other family: INVALID, counted
// "invalid", never "icmp_error", and no connection.
func TestICMPOtherFamilyNotAnError(t *testing.T) {
	frames := []struct {
		name  string
		frame []byte
	}{
		{"icmp over ipv6", pt.IPv6("2001:2::1", "2001:2::2", packet.ProtoICMP, []byte{8, 0, 0, 0, 0x42, 0x42, 0, 1})},
		{"icmp over ipv6, zero type", pt.IPv6("2001:2::1", "2001:2::2", packet.ProtoICMP, make([]byte, 8))},
		{"icmpv6 over ipv4", pt.IPv4("198.18.0.1", "198.18.0.2", packet.ProtoICMPv6, []byte{128, 0, 0, 0, 0x42, 0x42, 0, 1})},
		{"icmpv6 over ipv4, type 1", pt.IPv4("198.18.0.1", "198.18.0.2", packet.ProtoICMPv6, make([]byte, 48))},
	}
	for _, batch := range []bool{false, true} {
		pl := newTestPipeline(t, nil, 1024)
		for i, f := range frames {
			before := *pl.Stats()
			var r Result
			if batch {
				var out [1]Result
				pl.ProcessBatch([][]byte{f.frame}, PortA, 100*sec+int64(i)*sec, out[:])
				r = out[0]
			} else {
				r = pl.Process(f.frame, 0, PortA, 100*sec+int64(i)*sec)
			}
			after := *pl.Stats()
			if r.State != statemachine.StateInvalid || r.Parse != packet.ReasonOK || r.Verdict != Accept {
				t.Errorf("batch %v, %s: got %v (parse %v) %v, want INVALID (ok) accepted", batch, f.name, r.State, r.Parse, r.Verdict)
			}
			if d := after.ICMPError - before.ICMPError; d != 0 {
				t.Errorf("batch %v, %s: icmp_error counted %d times, want 0", batch, f.name, d)
			}
			if d := after.Invalid - before.Invalid; d != 1 {
				t.Errorf("batch %v, %s: invalid counted %d times, want 1", batch, f.name, d)
			}
		}
		if n := pl.Shard().Len(); n != 0 {
			t.Errorf("batch %v: table holds %d entries, want none", batch, n)
		}
	}
}
