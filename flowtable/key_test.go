package flowtable

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/statewire/statewire/packet"
)

// TestKeyLayout guards the unsafe views of key_unsafe.go: Key and Tuple are
// 40 bytes, 8-aligned, and their fields cover every byte (no padding that
// == or the hash would read).
func TestKeyLayout(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[Key](), reflect.TypeFor[Tuple]()} {
		t.Run(typ.Name(), func(t *testing.T) {
			if got := typ.Size(); got != keySize {
				t.Errorf("size: got %d, want %d", got, keySize)
			}
			if got := typ.Align(); got != 8 {
				t.Errorf("align: got %d, want 8", got)
			}
			var sum, end uintptr
			for i := range typ.NumField() {
				f := typ.Field(i)
				if f.Offset != end {
					t.Errorf("field %s at offset %d, want %d (padding before it)", f.Name, f.Offset, end)
				}
				sum += f.Type.Size()
				end = f.Offset + f.Type.Size()
			}
			if sum != typ.Size() {
				t.Errorf("fields cover %d bytes, want %d", sum, typ.Size())
			}
		})
	}
}

// Compile-time: a Key of another size breaks this array length.
var _ [keySize - unsafe.Sizeof(Key{})]struct{}
var _ [unsafe.Sizeof(Key{}) - keySize]struct{}

func TestBothDirectionsOneKey(t *testing.T) {
	tests := []struct {
		name       string
		orig, repl *packet.Packet
	}{
		{"tcp v4", pkt(packet.ProtoTCP, "198.18.0.1", 40000, "198.18.1.1", 80), pkt(packet.ProtoTCP, "198.18.1.1", 80, "198.18.0.1", 40000)},
		{"tcp v4 same address", pkt(packet.ProtoTCP, "198.18.0.1", 40000, "198.18.0.1", 80), pkt(packet.ProtoTCP, "198.18.0.1", 80, "198.18.0.1", 40000)},
		{"udp v6", pkt(packet.ProtoUDP, "2001:db8::2", 5353, "2001:db8::1", 53), pkt(packet.ProtoUDP, "2001:db8::1", 53, "2001:db8::2", 5353)},
		{"sctp", pkt(132, "198.18.0.9", 1, "198.18.0.2", 2), pkt(132, "198.18.0.2", 2, "198.18.0.9", 1)},
		{"generic gre", pkt(47, "198.18.0.9", 0, "198.18.0.2", 0), pkt(47, "198.18.0.2", 0, "198.18.0.9", 0)},
		{"icmp echo", icmp("198.18.0.1", "198.18.1.1", 8, 0, 7), icmp("198.18.1.1", "198.18.0.1", 0, 0, 7)},
		{"icmp timestamp", icmp("198.18.1.1", "198.18.0.1", 13, 0, 7), icmp("198.18.0.1", "198.18.1.1", 14, 0, 7)},
		{"icmp info", icmp("198.18.0.1", "198.18.1.1", 15, 0, 7), icmp("198.18.1.1", "198.18.0.1", 16, 0, 7)},
		{"icmp mask", icmp("198.18.0.1", "198.18.1.1", 17, 0, 7), icmp("198.18.1.1", "198.18.0.1", 18, 0, 7)},
		{"icmpv6 echo", icmp("2001:db8::9", "2001:db8::1", 128, 0, 9), icmp("2001:db8::1", "2001:db8::9", 129, 0, 9)},
		{"icmpv6 node info", icmp("2001:db8::1", "2001:db8::9", 139, 0, 9), icmp("2001:db8::9", "2001:db8::1", 140, 0, 9)},
	}
	tb := newTable(t, Config{MaxEntries: 1024, Buckets: 256, Shards: 2})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ko, kr := mustKey(t, tt.orig), mustKey(t, tt.repl)
			if ko != kr {
				t.Fatalf("keys differ: orig %+v, reply %+v", ko, kr)
			}
			tu := mustTuple(t, tt.orig)
			if got := tu.Key(); got != ko {
				t.Errorf("Tuple.Key: got %+v, want %+v", got, ko)
			}
			if got, want := tu.Reverse(), mustTuple(t, tt.repl); got != want {
				t.Errorf("Reverse: got %v, want %v", got, want)
			}
			e := insertPkt(t, tb, tt.orig, 0, 100)
			if got := lookupPkt(t, tb, tt.repl, 1); got != e {
				t.Fatalf("reply lookup: got %p, want %p", got, e)
			}
			if got := e.Tuple(); got != tu {
				t.Errorf("entry tuple: got %v, want %v", got, tu)
			}
			if got := e.DirOf(tt.orig); got != 0 {
				t.Errorf("DirOf(orig): got %d, want Original", got)
			}
			sameEnds := tt.orig.Src == tt.orig.Dst && tt.orig.SrcPort == tt.orig.DstPort
			if got := e.DirOf(tt.repl); got != 1 && !sameEnds {
				t.Errorf("DirOf(reply): got %d, want Reply", got)
			}
		})
	}
}

func TestKeysThatDiffer(t *testing.T) {
	base := pkt(packet.ProtoUDP, "198.18.0.1", 1000, "198.18.0.2", 53)
	vlan := *base
	vlan.VLAN = 10
	otherProto := *base
	otherProto.Proto = packet.ProtoTCP
	tests := []struct {
		name string
		a, b *packet.Packet
	}{
		{"vlan separates", base, &vlan},
		{"protocol separates", base, &otherProto},
		{"ports matter", base, pkt(packet.ProtoUDP, "198.18.0.1", 1001, "198.18.0.2", 53)},
		{"icmp echo each way is two connections", icmp("198.18.0.1", "198.18.0.2", 8, 0, 5), icmp("198.18.0.2", "198.18.0.1", 8, 0, 5)},
		{"icmp id", icmp("198.18.0.1", "198.18.0.2", 8, 0, 5), icmp("198.18.0.1", "198.18.0.2", 8, 0, 6)},
		{"icmp code", icmp("198.18.0.1", "198.18.0.2", 8, 0, 5), icmp("198.18.0.1", "198.18.0.2", 8, 1, 5)},
		{"icmp pair", icmp("198.18.0.1", "198.18.0.2", 8, 0, 5), icmp("198.18.0.1", "198.18.0.2", 13, 0, 5)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ka, kb := mustKey(t, tt.a), mustKey(t, tt.b); ka == kb {
				t.Errorf("same key %+v for different connections", ka)
			}
		})
	}
}

func TestNoKey(t *testing.T) {
	frag := pkt(packet.ProtoUDP, "198.18.0.1", 1, "198.18.0.2", 2)
	frag.Fragment, frag.FragOffset = true, 1480
	tests := []struct {
		name string
		p    *packet.Packet
	}{
		{"not ip", &packet.Packet{}},
		{"non-first fragment", frag},
		{"icmp error", icmp("198.18.0.1", "198.18.0.2", 3, 1, 0)},
		{"icmp redirect", icmp("198.18.0.1", "198.18.0.2", 5, 0, 0)},
		{"icmp type 19", icmp("198.18.0.1", "198.18.0.2", 19, 0, 0)},
		{"icmpv6 neighbour solicitation", icmp("2001:db8::1", "2001:db8::2", 135, 0, 0)},
		{"icmpv6 packet too big", icmp("2001:db8::1", "2001:db8::2", 2, 0, 0)},
		{"icmpv6 type 100 without its quote", icmp("2001:db8::1", "2001:db8::2", 100, 0, 0)},
		{"icmpv6 router renumbering", icmp("2001:db8::1", "2001:db8::2", 138, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, ok := KeyOf(tt.p); ok {
				t.Errorf("KeyOf: got %+v, want no key", k)
			}
			if _, ok := TupleFromPacket(tt.p); ok {
				t.Errorf("TupleFromPacket: got a tuple, want none")
			}
		})
	}
}

func TestKeyOf(t *testing.T) {
	tcpOrig := pkt(packet.ProtoTCP, "198.18.0.1", 40000, "198.18.1.1", 80)
	tcpRepl := pkt(packet.ProtoTCP, "198.18.1.1", 80, "198.18.0.1", 40000)
	echo := icmp("198.18.0.1", "198.18.1.1", 8, 0, 3)
	echoRepl := icmp("198.18.1.1", "198.18.0.1", 0, 0, 3)
	v6 := pkt(packet.ProtoUDP, "2001:db8::1", 5000, "2001:db8::2", 53)
	tests := []struct {
		name    string
		conn    *packet.Packet // creates the entry
		err     *packet.Packet
		wantDir uint8 // direction of the error
	}{
		// A router between the peers reports on a packet A→B to A: the
		// error runs in the reply direction (RELATED_REPLY).
		{"tcp quoted original", tcpOrig, icmpError("198.18.0.254", "198.18.0.1", 3, tcpOrig), 1},
		{"tcp quoted reply", tcpOrig, icmpError("198.18.0.254", "198.18.1.1", 11, tcpRepl), 0},
		{"echo request quoted", echo, icmpError("198.18.0.254", "198.18.0.1", 11, echo), 1},
		{"echo reply quoted", echo, icmpError("198.18.0.254", "198.18.1.1", 3, echoRepl), 0},
		{"icmpv6 udp quoted", v6, icmpError("2001:db8::fe", "2001:db8::1", 1, v6), 1},
		// Every ICMPv6 type below 128 is an error (nf_conntrack_icmpv6_error).
		{"icmpv6 unassigned type 100", v6, icmpError("2001:db8::fe", "2001:db8::1", 100, v6), 1},
		{"icmpv6 type 0", v6, icmpError("2001:db8::fe", "2001:db8::1", 0, v6), 1},
		{"icmpv6 redirect", v6, icmpError("fe80::fe", "2001:db8::1", 137, v6), 1},
	}
	tb := newTable(t, Config{MaxEntries: 64, Buckets: 16, Shards: 1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := lookupPkt(t, tb, tt.conn, 0)
			if e == nil {
				e = insertPkt(t, tb, tt.conn, 0, 100)
			}
			k, ok := KeyOf(tt.err)
			if !ok {
				t.Fatal("KeyOf: no key")
			}
			if want := mustKey(t, tt.conn); k != want {
				t.Fatalf("inner key: got %+v, want %+v", k, want)
			}
			if got := e.InnerDir(tt.err); uint8(got) != tt.wantDir {
				t.Errorf("InnerDir: got %d, want %d", got, tt.wantDir)
			}
		})
	}
	t.Run("quoted icmp error", func(t *testing.T) {
		inner := icmpError("198.18.0.3", "198.18.0.1", 3, tcpOrig)
		if _, ok := KeyOf(icmpError("198.18.0.4", "198.18.0.3", 3, inner)); ok {
			t.Error("KeyOf of an error quoting an error: got a key, want none")
		}
	})
	t.Run("non-first fragment quoted", func(t *testing.T) {
		e := icmpError("198.18.0.3", "198.18.0.1", 3, tcpOrig)
		e.Inner.NonFirstFragment = true
		if _, ok := KeyOf(e); ok {
			t.Error("got a key, want none")
		}
	})
	t.Run("no inner", func(t *testing.T) {
		if _, ok := KeyOf(icmp("198.18.0.3", "198.18.0.1", 3, 0, 0)); ok {
			t.Error("got a key, want none")
		}
	})
}

func TestTupleString(t *testing.T) {
	tests := []struct {
		p    *packet.Packet
		want string
	}{
		{pkt(packet.ProtoTCP, "198.18.0.1", 1031, "198.18.1.1", 23), "src=198.18.0.1 dst=198.18.1.1 sport=1031 dport=23"},
		{icmp("2001:db8::1", "2001:db8::2", 128, 0, 77), "src=2001:db8::1 dst=2001:db8::2 type=128 code=0 id=77"},
		{pkt(47, "198.18.0.1", 0, "198.18.1.1", 0), "src=198.18.0.1 dst=198.18.1.1"},
	}
	for _, tt := range tests {
		if got := mustTuple(t, tt.p).String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// TestHashSeeded pins the hash to seeded xxhash64 over the key bytes.
func TestHashSeeded(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 10000 {
		var k Key
		w := k.words()
		for j := range w {
			w[j] = r.Uint64()
		}
		seed := r.Uint64()
		if i == 0 {
			seed = 0
		}
		if i%2 == 0 {
			k.L3 = 4 // the IPv4 form half the time
		}
		d := xxhash.NewWithSeed(seed)
		var buf [keySize]byte
		d.Write(hashInput(&k, &buf))
		if got, want := hashKey(seed, &k), d.Sum64(); got != want {
			t.Fatalf("hashKey(%#x, %x): got %#x, want xxhash64 %#x", seed, k.bytes(), got, want)
		}
		if got, want := hashKeyDigest(seed, &k), d.Sum64(); got != want {
			t.Fatalf("hashKeyDigest: got %#x, want %#x", got, want)
		}
	}
	k := mustKey(t, pkt(packet.ProtoTCP, "198.18.0.1", 1, "198.18.0.2", 2))
	if hashKey(1, &k) == hashKey(2, &k) {
		t.Error("hash ignores the seed")
	}
	if got := testing.AllocsPerRun(100, func() { _ = hashKey(7, &k) + hashKeyDigest(7, &k) }); got != 0 {
		t.Errorf("hash allocs: got %v, want 0", got)
	}
}

// hashKeyDigest is hashKey through the library's streaming Digest: the
// reference the unrolled version is tested and benchmarked against.
func hashKeyDigest(seed uint64, k *Key) uint64 {
	var d xxhash.Digest
	var buf [keySize]byte
	d.ResetWithSeed(seed)
	d.Write(hashInput(k, &buf))
	return d.Sum64()
}

// hashInput returns the bytes hashKey hashes, in buf: for an IPv4 key
// the two IPv4 addresses and the last 8 bytes, else all 40.
func hashInput(k *Key, buf *[keySize]byte) []byte {
	n := copy(buf[:], k.bytes())
	if k.L3 == 4 {
		n = copy(buf[:], k.A[12:16])
		n += copy(buf[n:], k.B[12:16])
		n += copy(buf[n:], k.bytes()[32:40])
	}
	return buf[:n]
}

// TestRandomFlowsBothDirections: for random flows (equal addresses and
// ports included), the reversed packet has the same key, and the entry
// created by the first packet calls it Original and the reverse Reply.
func TestRandomFlowsBothDirections(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	tb := newTable(t, Config{MaxEntries: 1 << 14, Buckets: 1 << 12, Shards: 1})
	s := tb.Shard(0)
	icmpPairs := [][2]uint8{{8, 0}, {13, 14}, {15, 16}, {17, 18}}
	for i := range 5000 {
		p := &packet.Packet{IPVersion: 4, Proto: []uint8{packet.ProtoTCP, packet.ProtoUDP, 47, packet.ProtoICMP}[r.IntN(4)]}
		p.Src = packet.AddrFrom4([4]byte{198, 18, 0, byte(r.IntN(4))})
		p.Dst = packet.AddrFrom4([4]byte{198, 18, 0, byte(r.IntN(4))})
		p.SrcPort, p.DstPort = uint16(r.IntN(4)), uint16(r.IntN(4))
		p.VLAN = uint16(i) // every flow distinct
		pair := icmpPairs[r.IntN(len(icmpPairs))]
		p.ICMP = packet.ICMP{Type: pair[0], ID: uint16(r.IntN(4))}
		q := *p
		q.Src, q.Dst, q.SrcPort, q.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
		q.ICMP.Type = pair[1]
		kp, kq := mustKey(t, p), mustKey(t, &q)
		if kp != kq {
			t.Fatalf("flow %d: key %+v, reverse %+v", i, kp, kq)
		}
		tu := mustTuple(t, p)
		if tu.Key() != kp || tu.Reverse() != mustTuple(t, &q) {
			t.Fatalf("flow %d: tuple key or reverse disagrees", i)
		}
		h := tb.HashKey(&kp)
		e, res := s.Insert(&kp, h, &tu, 0)
		if res != Inserted {
			t.Fatalf("flow %d: insert %v", i, res)
		}
		e.Conn.Expires = 10
		if e.Tuple() != tu {
			t.Fatalf("flow %d: entry tuple %v, want %v", i, e.Tuple(), tu)
		}
		same := p.Proto != packet.ProtoICMP && p.Src == p.Dst && (p.Proto == 47 || p.SrcPort == p.DstPort)
		if d := e.DirOf(p); d != 0 {
			t.Fatalf("flow %d: DirOf(first packet) = %d, want Original", i, d)
		}
		if d := e.DirOf(&q); d != 1 && !same {
			t.Fatalf("flow %d (%v): DirOf(reverse) = %d, want Reply", i, tu, d)
		}
	}
}

// TestZoneOf: with the default config the VLAN id is the zone, so the same
// tuple in two VLANs has two keys and a tagged request and its untagged
// reply have two; with IgnoreVLAN (--vlan-zones=false) they share one
// key, of VLAN 0, as in the kernel without zones. ZoneOf applies to the
// quoted connection of an ICMP error too (its zone is the outer packet's).
func TestZoneOf(t *testing.T) {
	withVLAN := func(p *packet.Packet, vid uint16) *packet.Packet { p.VLAN = vid; return p }
	req := func(vid uint16) *packet.Packet {
		return withVLAN(pkt(packet.ProtoUDP, "198.18.0.1", 5000, "198.18.0.2", 53), vid)
	}
	reply := func(vid uint16) *packet.Packet {
		return withVLAN(pkt(packet.ProtoUDP, "198.18.0.2", 53, "198.18.0.1", 5000), vid)
	}
	errOf := func(vid uint16) *packet.Packet {
		return withVLAN(icmpError("198.18.0.9", "198.18.0.1", 3, req(0)), vid)
	}
	for _, tc := range []struct {
		name    string
		a, b    *packet.Packet
		zones   bool // keys equal with zones (the default)
		noZones bool // keys equal with IgnoreVLAN
	}{
		{"same tuple, two VLANs", req(10), req(20), false, true},
		{"tagged request, untagged reply", req(100), reply(0), false, true},
		{"both tagged alike", req(100), reply(100), true, true},
		{"icmp error untagged, flow tagged", errOf(0), req(100), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ignore := range []bool{false, true} {
				mask := Config{IgnoreVLAN: ignore}.VLANMask()
				a, b := *tc.a, *tc.b
				ZoneOf(&a, mask)
				ZoneOf(&b, mask)
				ka, kb := mustKey(t, &a), mustKey(t, &b)
				want := tc.zones
				if ignore {
					want = tc.noZones
					if ka.VLAN != 0 || kb.VLAN != 0 {
						t.Errorf("IgnoreVLAN: key VLANs %d, %d, want 0", ka.VLAN, kb.VLAN)
					}
					if tu := mustTupleOrNil(&a); tu != nil && tu.VLAN != 0 {
						t.Errorf("IgnoreVLAN: tuple VLAN %d, want 0", tu.VLAN)
					}
				}
				if got := ka == kb; got != want {
					t.Errorf("IgnoreVLAN=%v: keys equal %v, want %v (%+v, %+v)", ignore, got, want, ka, kb)
				}
			}
		})
	}
}

func mustTupleOrNil(p *packet.Packet) *Tuple {
	if tu, ok := TupleFromPacket(p); ok {
		return &tu
	}
	return nil
}
