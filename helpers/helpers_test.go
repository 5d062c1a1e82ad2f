package helpers

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

func addr(s string) packet.Addr { return netip.MustParseAddr(s).As16() }

func ipVersion(a packet.Addr) uint8 {
	if a.IsIPv4() {
		return 4
	}
	return 6
}

// conn is a test connection: endpoints in the original direction, next
// sequence number per direction, and the helper state.
type conn struct {
	t              *testing.T
	id             ID
	proto          uint8
	client, server packet.Addr
	cport, sport   uint16
	seq            [2]uint32
	st             State
	seenReply      bool
}

func newConn(t *testing.T, id ID, proto uint8, client, server string, cport, sport uint16) *conn {
	return &conn{t: t, id: id, proto: proto, client: addr(client), server: addr(server),
		cport: cport, sport: sport, seq: [2]uint32{1000, 5000}}
}

// pkt builds the packet of one segment in direction dir.
func (c *conn) pkt(dir statemachine.Dir, payloadLen int) packet.Packet {
	p := packet.Packet{IPVersion: ipVersion(c.client), Proto: c.proto, PayloadLen: uint32(payloadLen)}
	if dir == statemachine.Original {
		p.Src, p.Dst, p.SrcPort, p.DstPort = c.client, c.server, c.cport, c.sport
	} else {
		p.Src, p.Dst, p.SrcPort, p.DstPort = c.server, c.client, c.sport, c.cport
	}
	p.TCP.Seq = c.seq[dir]
	return p
}

type result struct {
	exps   []Expectation
	drop   bool
	reason DropReason
}

// send passes one segment through Inspect with the ctinfo the kernel would
// give it (ESTABLISHED once a reply was seen, always for replies) and
// advances the direction's sequence number unless the packet was dropped.
func (c *conn) send(dir statemachine.Dir, payload string) result {
	p := c.pkt(dir, len(payload))
	if dir == statemachine.Reply {
		c.seenReply = true
	}
	var out [MaxExpectPerPacket]Expectation
	n, drop, reason := Inspect(c.id, &c.st, &p, []byte(payload), dir, c.seenReply, &out)
	if n < 0 || n > MaxExpectPerPacket {
		c.t.Fatalf("Inspect returned n=%d", n)
	}
	if !drop {
		c.seq[dir] += uint32(len(payload))
	}
	return result{exps: append([]Expectation(nil), out[:n]...), drop: drop, reason: reason}
}

func TestIDNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   ID
	}{{"ftp", IDFTP}, {"irc", IDIRC}, {"tftp", IDTFTP}, {"amanda", IDAmanda}} {
		t.Run(tc.name, func(t *testing.T) {
			id, ok := ByName(tc.name)
			if !ok || id != tc.id {
				t.Fatalf("ByName(%q) = %v, %v; want %v, true", tc.name, id, ok, tc.id)
			}
			if got := tc.id.String(); got != tc.name {
				t.Fatalf("String() = %q, want %q", got, tc.name)
			}
		})
	}
	for _, bad := range []string{"", "none", "FTP", "sip", "unknown"} {
		if id, ok := ByName(bad); ok {
			t.Errorf("ByName(%q) = %v, true; want false", bad, id)
		}
	}
}

func TestPolicies(t *testing.T) {
	const s = int64(1e9)
	for _, tc := range []struct {
		id   ID
		max  int
		tout int64
	}{{IDFTP, 1, 300 * s}, {IDIRC, 8, 300 * s}, {IDTFTP, 1, 300 * s}, {IDAmanda, 4, 180 * s}, {IDNone, 0, 0}} {
		if got := tc.id.Policy(); got.MaxExpected != tc.max || got.Timeout != tc.tout {
			t.Errorf("%v.Policy() = %+v, want {%d %d}", tc.id, got, tc.max, tc.tout)
		}
	}
	if got, ok := MasterTimeout(IDAmanda, statemachine.Reply); !ok || got != 300*s {
		t.Errorf("MasterTimeout(amanda, reply) = %d, %v; want %d, true", got, ok, 300*s)
	}
	for _, tc := range []struct {
		id  ID
		dir statemachine.Dir
	}{{IDAmanda, statemachine.Original}, {IDFTP, statemachine.Reply}, {IDTFTP, statemachine.Reply}} {
		if _, ok := MasterTimeout(tc.id, tc.dir); ok {
			t.Errorf("MasterTimeout(%v, %d) = true, want false", tc.id, tc.dir)
		}
	}
}

func TestByPort(t *testing.T) {
	for _, tc := range []struct {
		ipv   uint8
		proto uint8
		port  uint16
		want  ID
	}{
		{4, packet.ProtoTCP, 21, IDFTP},
		{6, packet.ProtoTCP, 21, IDFTP},
		{4, packet.ProtoUDP, 21, IDNone},
		{4, packet.ProtoTCP, 6667, IDIRC},
		{6, packet.ProtoTCP, 6667, IDNone}, // irc is IPv4 only
		{4, packet.ProtoUDP, 69, IDTFTP},
		{6, packet.ProtoUDP, 69, IDTFTP},
		{4, packet.ProtoTCP, 69, IDNone},
		{4, packet.ProtoUDP, 10080, IDAmanda},
		{6, packet.ProtoUDP, 10080, IDAmanda},
		{4, packet.ProtoTCP, 80, IDNone},
	} {
		if got := ByPort(tc.ipv, tc.proto, tc.port); got != tc.want {
			t.Errorf("ByPort(%d, %d, %d) = %v, want %v", tc.ipv, tc.proto, tc.port, got, tc.want)
		}
	}
}

func TestStateSize(t *testing.T) {
	if got := unsafe.Sizeof(State{}); got != 20 {
		t.Fatalf("sizeof(State) = %d, want 20 (documented)", got)
	}
}

func TestInspectNoneAndUnknown(t *testing.T) {
	p := packet.Packet{IPVersion: 4, Proto: packet.ProtoTCP, PayloadLen: 4}
	var st State
	var out [MaxExpectPerPacket]Expectation
	for _, id := range []ID{IDNone, NumIDs, 200} {
		if n, drop, _ := Inspect(id, &st, &p, []byte("PORT"), statemachine.Original, true, &out); n != 0 || drop {
			t.Errorf("Inspect(%v) = %d, %v; want 0, false", id, n, drop)
		}
	}
}

// TestInspectAllocs guards the hot path: no allocation per packet for any
// helper, on a command that creates an expectation.
func TestInspectAllocs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		id      ID
		proto   uint8
		dir     statemachine.Dir
		payload string
	}{
		{"ftp", IDFTP, packet.ProtoTCP, statemachine.Original, "PORT 10,0,0,1,4,1\r\n"},
		{"irc", IDIRC, packet.ProtoTCP, statemachine.Original, "PRIVMSG bob :\x01DCC SEND f 167772161 5555\x01\r\n"},
		{"tftp", IDTFTP, packet.ProtoUDP, statemachine.Original, "\x00\x01file\x00octet\x00"},
		{"amanda", IDAmanda, packet.ProtoUDP, statemachine.Reply, "CONNECT DATA 50000 MESG 50001\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(t, tc.id, tc.proto, "10.0.0.1", "10.0.0.2", 40000, 21)
			p := c.pkt(tc.dir, len(tc.payload))
			// The FTP state must accept the seq: remember it as after a newline.
			c.st.updateNL(p.TCP.Seq, tc.dir)
			payload := []byte(tc.payload)
			var out [MaxExpectPerPacket]Expectation
			n := 0
			allocs := testing.AllocsPerRun(100, func() {
				n, _, _ = Inspect(tc.id, &c.st, &p, payload, tc.dir, true, &out)
			})
			if allocs != 0 {
				t.Errorf("allocs per Inspect = %v, want 0", allocs)
			}
			if n == 0 {
				t.Errorf("n = 0, want an expectation (the guard must cover the creating path)")
			}
		})
	}
}

// TestHugePayloadLen: a PayloadLen no IP header can carry is clamped, so a
// scan over the uncaptured (zero) bytes stays short.
func TestHugePayloadLen(t *testing.T) {
	for _, id := range []ID{IDFTP, IDIRC, IDAmanda} {
		c := newConn(t, id, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
		if id == IDAmanda {
			c.proto = packet.ProtoUDP
		}
		p := c.pkt(orig, 0)
		p.PayloadLen = 0xffffffff
		c.st.updateNL(p.TCP.Seq, orig)
		var out [MaxExpectPerPacket]Expectation
		n, drop, reason := Inspect(id, &c.st, &p, []byte("PORT"), orig, true, &out)
		// "PORT" then zeros: the skip to ' ' runs off the end: partial.
		if id == IDFTP && (!drop || reason != DropFTPPort || n != 0) {
			t.Errorf("ftp: got n=%d drop=%v reason=%v; want 0, true, %v", n, drop, reason, DropFTPPort)
		}
		if id != IDFTP && (n != 0 || drop) {
			t.Errorf("%v: got n=%d drop=%v; want 0, false", id, n, drop)
		}
	}
}
