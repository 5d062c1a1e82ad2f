package ctsync

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// conntrackdCTNew is a CT_NEW conntrackd 1.4.7 sent (TestConntrackdSends)
// for `conntrack -I -p tcp -s 198.19.174.1 -d 198.19.174.9 --sport 40001
// --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 300`.
const conntrackdCTNew = "10000054 6b115ed4" +
	"000c0000 c613ae01 c613ae09" + // NTA_IPV4
	"00080005 0000000e" + // NTA_STATUS: SEEN_REPLY|ASSURED|CONFIRMED
	"00050002 06000000" + // NTA_L4PROTO tcp, padded
	"00080003 9c410050" + // NTA_PORT 40001 -> 80
	"00050004 03000000" + // NTA_TCP_STATE ESTABLISHED
	"00080006 0000012c" + // NTA_TIMEOUT 300
	"00080007 00000000" + // NTA_MARK 0
	"0010001f 00000000 00000000 00000000" // NTA_SYNPROXY

// conntrackdUDPNew and conntrackdICMPNew are CT_NEWs conntrackd 1.4.7 sent
// for an unreplied UDP flow (40002 -> 53, timeout 30) and an ICMP echo
// (type 8 code 0 id 4660, timeout 29): the identifier is "34 12", the
// little-endian bytes of 0x1234 (see ICMPIDWire).
const (
	conntrackdUDPNew = "1000004c6b115f44000c0000c6139f01c6139f0900080005000000080005000211000000" +
		"000800039c420035000800060000001e00080007000000000010001f000000000000000000000000"
	conntrackdICMPNew = "1000005c6b115f45000c0000c6139f01c6139f090008000500000008000500020100000000050016080000000005001700000000" +
		"00060018341200000008000600000" + "01d00080007000000000010001f000000000000000000000000"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeConntrackdMessage(t *testing.T) {
	raw := unhex(t, conntrackdCTNew)
	msgs, err := Decode(raw)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Decode = %d messages, %v; want 1, nil", len(msgs), err)
	}
	m := msgs[0]
	if m.Version != 1 || m.Type != TypeCTNew || m.Flags != 0 || m.Len != 84 || m.Seq != 0x6b115ed4 {
		t.Errorf("header %+v, want version 1 CT_NEW len 84 seq 0x6b115ed4", m.Header)
	}
	c := m.CT
	want := Tuple{Src: netip.MustParseAddr("198.19.174.1"), Dst: netip.MustParseAddr("198.19.174.9"), Proto: 6, SrcPort: 40001, DstPort: 80}
	if c.Orig != want || c.TCPState != 3 || c.Status != 0xe || c.Timeout != 300 || !c.Has(NTAMark) || !c.Has(NTASynproxy) {
		t.Errorf("CT %+v, want %+v ESTABLISHED status 0xe timeout 300 with mark and synproxy", *c, want)
	}
	re, err := AppendCT(nil, m.Header, c, Options{})
	if err != nil || !bytes.Equal(re, raw) {
		t.Errorf("AppendCT(decoded) =\n% x, %v\nwant\n% x", re, err, raw)
	}
}

func TestDecodeConntrackdUDPAndICMP(t *testing.T) {
	for _, tt := range []struct {
		raw  string
		want Tuple
		id   uint16
	}{
		{conntrackdUDPNew, Tuple{netip.MustParseAddr("198.19.159.1"), netip.MustParseAddr("198.19.159.9"), 17, 40002, 53}, 0},
		{conntrackdICMPNew, Tuple{netip.MustParseAddr("198.19.159.1"), netip.MustParseAddr("198.19.159.9"), 1, 0, 0}, 4660},
	} {
		raw := unhex(t, tt.raw)
		m, n, err := DecodeMsg(raw)
		if err != nil || n != len(raw) || m.CT.Orig != tt.want || m.CT.ICMPID != tt.id {
			t.Errorf("DecodeMsg = %+v, %d, %v; want tuple %+v, ICMP id %d", m.CT, n, err, tt.want, tt.id)
			continue
		}
		if re, err := AppendCT(nil, m.Header, m.CT, Options{}); err != nil || !bytes.Equal(re, raw) {
			t.Errorf("AppendCT(decoded) = % x, %v\nwant % x", re, err, raw)
		}
	}
}

func TestControlMessages(t *testing.T) {
	for _, tt := range []struct {
		name     string
		flags    uint8
		from, to uint32
		want     string
	}{
		{"alive", FlagAlive, 0, 0, "1a100008 00000007"},
		{"ack", FlagAck, 3, 5, "1a080010 00000007 00000003 00000005"},
		{"nack", FlagNack, 1, 2, "1a040010 00000007 00000001 00000002"},
		{"resync", FlagResync, 0, 0, "1a020010 00000007 00000000 00000000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendControl(nil, tt.flags, 7, tt.from, tt.to)
			if w := unhex(t, tt.want); !bytes.Equal(b, w) {
				t.Fatalf("AppendControl = % x, want % x", b, w)
			}
			m, n, err := DecodeMsg(b)
			if err != nil || n != len(b) || m.Type != TypeCtl || m.Flags != tt.flags || m.Seq != 7 || m.From != tt.from || m.To != tt.to || m.IsData() {
				t.Errorf("DecodeMsg = %+v, %d, %v", m.Header, n, err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	v4 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	full := func(c *CT, attrs ...int) *CT {
		for _, a := range attrs {
			c.Set(a)
		}
		return c
	}
	for _, tt := range []struct {
		name string
		c    *CT
		o    Options
	}{
		{"tcp with scales", full(&CT{Orig: Tuple{v4("198.18.0.1"), v4("198.18.0.2"), 6, 1234, 80}, Status: 0xe, TCPState: 3, WScale: [2]uint8{7, 14}, Timeout: 431999},
			NTAIPv4, NTAStatus, NTAL4Proto, NTAPort, NTATCPState, NTATCPWScaleOrg, NTATCPWScaleRpl, NTATimeout), Options{TCPWindowTracking: true}},
		{"udp ipv6", full(&CT{Orig: Tuple{v4("2001:db8::1"), v4("2001:db8::2"), 17, 53, 5353}, Status: 0x8, Timeout: 30, Mark: 9},
			NTAIPv6, NTAStatus, NTAL4Proto, NTAPort, NTATimeout, NTAMark), Options{}},
		{"icmp", full(&CT{Orig: Tuple{v4("198.18.0.1"), v4("198.18.0.2"), 1, 0, 0}, Status: 0xa, ICMPType: 8, ICMPID: 0x1234, Timeout: 29},
			NTAIPv4, NTAStatus, NTAL4Proto, NTAICMPType, NTAICMPCode, NTAICMPID, NTATimeout), Options{}},
		{"ftp data with master and helper", full(&CT{Orig: Tuple{v4("198.18.0.2"), v4("198.18.0.1"), 6, 20, 40000}, Status: 0x9, TCPState: 1, Timeout: 120,
			Master: Tuple{v4("198.18.0.1"), v4("198.18.0.2"), 6, 39999, 21}, Helper: "ftp"},
			NTAIPv4, NTAStatus, NTAL4Proto, NTAPort, NTATCPState, NTATimeout, NTAMasterIPv4, NTAMasterL4Prot, NTAMasterPort, NTAHelperName), Options{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendCT([]byte{0xff}, Header{Type: TypeCTUpd, Seq: 42}, tt.c, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if len(b)%4 != 1 {
				t.Errorf("message of %d bytes is not 4-aligned", len(b)-1)
			}
			m, n, err := DecodeMsg(b[1:])
			if err != nil || n != len(b)-1 {
				t.Fatalf("DecodeMsg = %d, %v; want %d, nil", n, err, len(b)-1)
			}
			if m.Type != TypeCTUpd || m.Seq != 42 || *m.CT != *tt.c {
				t.Errorf("got %v seq %d %+v\nwant %+v", m.Type, m.Seq, *m.CT, *tt.c)
			}
		})
	}
}

func TestExpRoundTrip(t *testing.T) {
	a := netip.MustParseAddr
	e := &Exp{
		Master:  Tuple{a("198.18.0.1"), a("198.18.0.2"), 6, 39999, 21},
		Expect:  Tuple{a("198.18.0.2"), a("198.18.0.1"), 6, 0, 40000},
		Mask:    Tuple{a("255.255.255.255"), a("255.255.255.255"), 255, 0, 0xffff},
		Timeout: 300, Flags: 0, Helper: "ftp",
	}
	for _, at := range []int{NTAExpMasterIPv4, NTAExpMasterL4Proto, NTAExpMasterPort, NTAExpExpectIPv4, NTAExpExpectL4Proto,
		NTAExpExpectPort, NTAExpMaskIPv4, NTAExpMaskL4Proto, NTAExpMaskPort, NTAExpTimeout, NTAExpFlags, NTAExpHelperName} {
		e.Set(at)
	}
	b, err := AppendExp(nil, Header{Type: TypeExpNew, Seq: 5}, e, Options{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := Decode(append(b, AppendControl(nil, FlagAlive, 6, 0, 0)...))
	if err != nil || len(msgs) != 2 {
		t.Fatalf("Decode = %d messages, %v; want 2", len(msgs), err)
	}
	if *msgs[0].Exp != *e || msgs[1].Flags != FlagAlive {
		t.Errorf("got %+v then %+v\nwant %+v then ALIVE", *msgs[0].Exp, msgs[1].Header, *e)
	}
}

// TestMalformed: every check conntrackd's receiver makes (sync-mode.c
// channel_handler, parse.c msg2ct) and the ones that keep us from reading
// past a message.
func TestMalformed(t *testing.T) {
	good := unhex(t, conntrackdCTNew)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", good[:7], ErrShort},
		{"len below header", mut(func(b []byte) []byte { b[3] = 4; return b }), ErrLength},
		{"len beyond datagram", good[:80], ErrLength},
		{"version 0", mut(func(b []byte) []byte { b[0] = 0x00; return b }), ErrVersion},
		{"version 2", mut(func(b []byte) []byte { b[0] = 0x20; return b }), ErrVersion},
		{"type 6", mut(func(b []byte) []byte { b[0] = 0x16; return b }), ErrType},
		{"type 15", mut(func(b []byte) []byte { b[0] = 0x1f; return b }), ErrType},
		{"ack without range", unhex(t, "1a080008 00000001"), ErrLength},
		{"attr longer than message", mut(func(b []byte) []byte { b[9] = 0x60; return b }), ErrAttr},
		{"attr shorter than its header", mut(func(b []byte) []byte { b[9] = 3; return b }), ErrAttr},
		{"unknown attr", mut(func(b []byte) []byte { b[11] = NTAMax; return b }), ErrAttr},
		{"ipv4 of wrong size", mut(func(b []byte) []byte { b[9] = 0x0b; return b }), ErrAttr},
		{"no tuple", unhex(t, "10000010 00000001 00050002 06000000"), ErrIncomplete},
		{"helper name too long", unhex(t, "1000001c 00000001 0011001b 787878787878787878787878 00 000000"), ErrAttr},
		{"exp without mask", unhex(t, "13000014 00000001 000c0000 c6120001 c6120002"), ErrIncomplete},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := Decode(tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode(% x) = %d messages, %v; want %v", tt.b, len(msgs), err, tt.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

func TestSnapshotConversion(t *testing.T) {
	now := int64(1000 * time.Second)
	es := &flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{
			Src: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.1")), Dst: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.2")),
			SrcPort: 40000, DstPort: 21, Proto: packet.ProtoTCP, L3: 4,
		},
		Conn: statemachine.Conn{
			Expires: now + 431999*int64(time.Second) + 1, Proto: packet.ProtoTCP, State: statemachine.TCPEstablished,
			Status: statemachine.StatusSeenReply | statemachine.StatusAssured,
			TCP:    statemachine.TCPConn{Peer: [2]statemachine.TCPPeer{{Scale: 7}, {Scale: 9}}},
		},
		Helper: uint8(helpers.IDFTP),
	}
	c := FromSnapshot(es, now)
	if c.Status != IPSSeenReply|IPSAssured|IPSConfirmed|IPSHelper || c.TCPState != 3 || c.Timeout != 432000 || c.Helper != "ftp" || c.WScale != [2]uint8{7, 9} {
		t.Fatalf("FromSnapshot = %+v", *c)
	}
	b, err := AppendCT(nil, Header{Type: TypeCTNew, Seq: 1}, c, Options{TCPWindowTracking: true})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := DecodeMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	later := now + int64(time.Second)
	s, err := m.CT.ToState(later)
	if err != nil {
		t.Fatal(err)
	}
	if s.Orig != es.Orig || s.Conn.State != es.Conn.State || s.Conn.Status != es.Conn.Status || s.Helper != helpers.IDFTP ||
		s.Conn.TCP.Peer[0].Scale != 7 || s.Conn.TCP.Peer[1].Scale != 9 || s.Conn.Expires != later+432000*int64(time.Second) {
		t.Errorf("ToState = %+v\nwant tuple %+v, state %v, status %#x, expiry in 432000 s", s, es.Orig, es.Conn.State, es.Conn.Status)
	}

	icmp := &flowtable.EntrySnapshot{Orig: flowtable.Tuple{Src: es.Orig.Src, Dst: es.Orig.Dst, SrcPort: 0x1234, DstPort: 8 << 8, Proto: 1, L3: 4},
		Conn: statemachine.Conn{Expires: now, Proto: 1}}
	b, _ = AppendCT(nil, Header{Type: TypeCTNew, Seq: 2}, FromSnapshot(icmp, now), Options{})
	m, _, err = DecodeMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := m.CT.ToState(now); err != nil || s.Orig != icmp.Orig {
		t.Errorf("ICMP ToState = %+v, %v; want tuple %+v", s.Orig, err, icmp.Orig)
	}
}

func TestToStateRejects(t *testing.T) {
	c := &CT{Orig: Tuple{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), 6, 1, 2}, TCPState: 3}
	c.Set(NTAPort)
	if _, err := c.ToState(0); !errors.Is(err, ErrIncomplete) {
		t.Errorf("TCP without state: %v, want ErrIncomplete", err)
	}
	c.Set(NTATCPState)
	c.TCPState = 10
	if _, err := c.ToState(0); err == nil {
		t.Errorf("TCP state 10 accepted")
	}
}
