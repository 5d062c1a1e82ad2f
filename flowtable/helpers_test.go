package flowtable

import (
	"net/netip"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

func addr(s string) packet.Addr { return netip.MustParseAddr(s).As16() }

func ipVersion(s string) uint8 {
	if netip.MustParseAddr(s).Is4() {
		return 4
	}
	return 6
}

// pkt builds a parsed packet of a port protocol (or generic when the ports
// are zero).
func pkt(proto uint8, src string, sport uint16, dst string, dport uint16) *packet.Packet {
	return &packet.Packet{
		IPVersion: ipVersion(src), Proto: proto,
		Src: addr(src), Dst: addr(dst), SrcPort: sport, DstPort: dport,
	}
}

// icmp builds an ICMP (IPv4) or ICMPv6 (IPv6) packet.
func icmp(src, dst string, typ, code uint8, id uint16) *packet.Packet {
	v := ipVersion(src)
	proto := packet.ProtoICMP
	if v == 6 {
		proto = packet.ProtoICMPv6
	}
	return &packet.Packet{
		IPVersion: v, Proto: proto, Src: addr(src), Dst: addr(dst),
		ICMP: packet.ICMP{Type: typ, Code: code, ID: id},
	}
}

// icmpError builds an ICMP error from src to dst quoting inner.
func icmpError(src, dst string, typ uint8, inner *packet.Packet) *packet.Packet {
	p := icmp(src, dst, typ, 0, 0)
	p.HasInner = true
	p.Inner = packet.Inner{
		IPVersion: inner.IPVersion, Src: inner.Src, Dst: inner.Dst, Proto: inner.Proto,
		SrcPort: inner.SrcPort, DstPort: inner.DstPort, ICMP: inner.ICMP,
	}
	return p
}

func mustKey(t testing.TB, p *packet.Packet) Key {
	t.Helper()
	k, ok := KeyOf(p)
	if !ok {
		t.Fatalf("KeyOf(%+v): no key", p)
	}
	return k
}

func mustTuple(t testing.TB, p *packet.Packet) Tuple {
	t.Helper()
	tu, ok := TupleFromPacket(p)
	if !ok {
		t.Fatalf("TupleFromPacket: no tuple")
	}
	return tu
}

func newTable(t testing.TB, c Config) *Table {
	t.Helper()
	if c.Seed == 0 {
		c.Seed = 0x5eed
	}
	tb, err := New(c)
	if err != nil {
		t.Fatalf("New(%+v): %v", c, err)
	}
	return tb
}

// insertPkt creates the entry of p (original direction) expiring at exp.
func insertPkt(t testing.TB, tb *Table, p *packet.Packet, now, exp int64) *Entry {
	t.Helper()
	k := mustKey(t, p)
	tu := mustTuple(t, p)
	h := tb.HashKey(&k)
	e, res := tb.Shard(tb.ShardFor(h)).Insert(&k, h, &tu, now)
	if e == nil || (res != Inserted && res != InsertedAfterEarlyDrop) {
		t.Fatalf("Insert: got %v, %v", e, res)
	}
	e.Conn.Expires = exp
	return e
}

func lookupPkt(t testing.TB, tb *Table, p *packet.Packet, now int64) *Entry {
	t.Helper()
	k := mustKey(t, p)
	h := tb.HashKey(&k)
	return tb.Shard(tb.ShardFor(h)).Lookup(&k, h, now)
}

// udpKey returns the key and tuple of a distinct UDP flow number i.
func udpFlow(i int) (Key, Tuple) {
	p := &packet.Packet{IPVersion: 4, Proto: packet.ProtoUDP, SrcPort: uint16(i), DstPort: 53}
	p.Src = packet.AddrFrom4([4]byte{10, byte(i >> 24), byte(i >> 16), byte(i >> 8)})
	p.Dst = packet.AddrFrom4([4]byte{192, 0, 2, 1})
	k, _ := KeyOf(p)
	tu, _ := TupleFromPacket(p)
	return k, tu
}

const assured = statemachine.StatusAssured | statemachine.StatusSeenReply
