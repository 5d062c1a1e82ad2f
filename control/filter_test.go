package control

import "testing"

// TestParseProto checks that -p takes every name a listing prints (the
// names of ctlist.L4Name), iptables' ipv6-icmp, and numbers 1..255.
func TestParseProto(t *testing.T) {
	tests := []struct {
		in   string
		want uint8
		ok   bool
	}{
		{"tcp", 6, true},
		{"TCP", 6, true},
		{"udp", 17, true},
		{"icmp", 1, true},
		{"icmpv6", 58, true},
		{"ipv6-icmp", 58, true},
		{"sctp", 132, true},
		{"dccp", 33, true},
		{"udplite", 136, true},
		{"gre", 47, true},
		{"41", 41, true},
		{"255", 255, true},
		{"0", 0, false},
		{"256", 0, false},
		{"unknown", 0, false},
		{"", 0, false},
		{"esp", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseProto(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("ParseProto(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}
