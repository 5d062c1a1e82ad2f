package flowtable

import (
	"net/netip"
	"strconv"

	"github.com/statewire/statewire/packet"
)

// AddrString formats a as an IPv4 or IPv6 address. Not for the hot path.
func AddrString(a packet.Addr) string {
	return netip.AddrFrom16(a).Unmap().String()
}

// String formats the tuple as conntrack does: "src=… dst=… sport=… dport=…",
// "src=… dst=… type=… code=… id=…" for ICMP, addresses only for generic
// protocols. Not for the hot path.
func (t Tuple) String() string {
	b := make([]byte, 0, 96)
	b = append(b, "src="...)
	b = append(b, AddrString(t.Src)...)
	b = append(b, " dst="...)
	b = append(b, AddrString(t.Dst)...)
	switch {
	case t.IsICMP():
		b = append(b, " type="...)
		b = strconv.AppendUint(b, uint64(t.ICMPType()), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(t.ICMPCode()), 10)
		b = append(b, " id="...)
		b = strconv.AppendUint(b, uint64(t.ICMPID()), 10)
	case t.HasPorts():
		b = append(b, " sport="...)
		b = strconv.AppendUint(b, uint64(t.SrcPort), 10)
		b = append(b, " dport="...)
		b = strconv.AppendUint(b, uint64(t.DstPort), 10)
	}
	return string(b)
}
