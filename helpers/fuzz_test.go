package helpers

import (
	"net/netip"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// fuzzPacket builds a packet for a fuzz input: extra > 0 makes the IP
// header claim more payload than was captured (a truncated capture),
// extra < 0 appends bytes past PayloadLen (Ethernet padding).
func fuzzPacket(payload []byte, extra int8, v6 bool, dir statemachine.Dir, proto uint8) (packet.Packet, []byte) {
	c, s := addr("10.0.0.1"), addr("10.0.0.2")
	if v6 {
		c, s = addr("2001:db8::1"), addr("2001:db8::2")
	}
	p := packet.Packet{IPVersion: ipVersion(c), Proto: proto, Src: c, Dst: s, SrcPort: 40000, DstPort: 21}
	if dir == statemachine.Reply {
		p.Src, p.Dst, p.SrcPort, p.DstPort = s, c, 21, 40000
	}
	n := len(payload)
	if extra > 0 {
		n += int(extra)
	} else if extra < 0 && -int(extra) <= n {
		n += int(extra)
	}
	p.PayloadLen = uint32(n)
	p.TCP.Seq = 1000
	return p, payload
}

func checkFuzz(t *testing.T, id ID, p *packet.Packet, n int, drop bool, out *[MaxExpectPerPacket]Expectation) {
	t.Helper()
	max := 1
	if id == IDAmanda {
		max = MaxExpectPerPacket
	}
	if n < 0 || n > max {
		t.Fatalf("%v: n = %d, want 0..%d", id, n, max)
	}
	if drop && n != 0 {
		t.Fatalf("%v: dropped packet created %d expectations", id, n)
	}
	for _, e := range out[:n] {
		if e.Helper != id || e.L3 != p.IPVersion || e.SrcPort != 0 {
			t.Fatalf("%v: bad expectation %+v", id, e)
		}
	}
}

var ftpSeeds = []string{
	"PORT 10,0,0,1,4,1\r\n", "port 10,0,0,1,0,0\r\n", "PORT 10,0,0,1,", "POR", "EPRT |1|10.0.0.1|6275|\r\n",
	"EPRT |2|2001:db8::1|6275|\r\n", "EPRT |2|::ffff:1.2.3.4|1|\r\n", "EPRT |2|1:2:3:4:5:6:7::|9|\r\n",
	"227 Entering Passive Mode (10,0,0,2,4,1).\r\n", "227 10,0,0,2,4,1", "229 Entering Extended Passive Mode (|||6446|)\r\n",
	"229 (|||65537|)", "PORT\r\n", "",
}

func FuzzFTP(f *testing.F) {
	for _, s := range ftpSeeds {
		f.Add([]byte(s), int8(0), false, false)
		f.Add([]byte(s), int8(3), true, true)
	}
	f.Fuzz(func(t *testing.T, payload []byte, extra int8, v6, replyDir bool) {
		dir := statemachine.Original
		if replyDir {
			dir = statemachine.Reply
		}
		p, b := fuzzPacket(payload, extra, v6, dir, packet.ProtoTCP)
		var st State
		st.updateNL(p.TCP.Seq, dir) // the segment starts a line
		var out [MaxExpectPerPacket]Expectation
		n, drop, reason := Inspect(IDFTP, &st, &p, b, dir, true, &out)
		checkFuzz(t, IDFTP, &p, n, drop, &out)
		if drop != (reason != DropNone) {
			t.Fatalf("drop %v with reason %v", drop, reason)
		}
		if n == 1 && (out[0].Dst != p.Src || out[0].Src != p.Dst || out[0].Proto != packet.ProtoTCP) {
			t.Fatalf("FTP expectation not from the peer to the sender: %+v", out[0])
		}
	})
}

func FuzzIn6pton(f *testing.F) {
	for _, s := range []string{"::1|", "2001:db8::1|", "::ffff:1.2.3.4|", "1:2:3:4:5:6:7:8|", "1::2::3|", "1:2:3:4:5:6:7::|", "::1.2.3.4.5|"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var dst [16]byte
		end, ok := in6pton(view{b: b, n: len(b)}, 0, len(b), '|', &dst)
		if !ok {
			return
		}
		if end < 0 || end > len(b) {
			t.Fatalf("end %d outside 0..%d", end, len(b))
		}
		// Where net/netip also reads the text as an IPv6 address, both
		// must agree on its value.
		if a, err := netip.ParseAddr(string(b[:end])); err == nil && a.Is6() && a.Zone() == "" && a.As16() != dst {
			t.Fatalf("in6pton(%q) = %v, netip says %v", b[:end], netip.AddrFrom16(dst), a)
		}
	})
}

func FuzzIRC(f *testing.F) {
	for _, s := range []string{
		"PRIVMSG bob :\x01DCC SEND hello.txt 167772161 5555 12\x01\r\n",
		"PRIVMSG bob :\x01DCC SCHAT chat 167772161 5559\x01\r\n",
		"PRIVMSG bob :\x01DCC SEND a 167772162 5555\x01\r\nPRIVMSG bob :\x01DCC SEND b 167772161 6666\x01\r\n",
		"PRIVMSG bob :\x01DCC SEND \"my file.txt\" 167772161 5555\x01\r\n",
		"  PRIVMSG b :\x01DCC TSEND x 1 2\x01\n",
	} {
		f.Add([]byte(s), int8(0))
		f.Add([]byte(s), int8(-5))
	}
	f.Fuzz(func(t *testing.T, payload []byte, extra int8) {
		p, b := fuzzPacket(payload, extra, false, statemachine.Original, packet.ProtoTCP)
		var st State
		var out [MaxExpectPerPacket]Expectation
		n, drop, _ := Inspect(IDIRC, &st, &p, b, statemachine.Original, true, &out)
		checkFuzz(t, IDIRC, &p, n, drop, &out)
		if drop || (n == 1 && (out[0].DstPort == 0 || out[0].Dst != p.Src || !out[0].SrcAny)) {
			t.Fatalf("drop=%v expectation %+v", drop, out[0])
		}
	})
}

func FuzzTFTP(f *testing.F) {
	for _, s := range []string{"\x00\x01file\x00octet\x00", "\x00\x02f\x00netascii\x00", "\x00\x03\x00\x01", "\x01"} {
		f.Add([]byte(s), int8(0), false, false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, extra int8, v6, replyDir bool) {
		dir := statemachine.Original
		if replyDir {
			dir = statemachine.Reply
		}
		p, b := fuzzPacket(payload, extra, v6, dir, packet.ProtoUDP)
		var st State
		var out [MaxExpectPerPacket]Expectation
		n, drop, _ := Inspect(IDTFTP, &st, &p, b, dir, false, &out)
		checkFuzz(t, IDTFTP, &p, n, drop, &out)
	})
}

func FuzzAmanda(f *testing.F) {
	for _, s := range []string{
		"Amanda 2.4 REP HANDLE 000-00000000 SEQ 0\nCONNECT DATA 50000 MESG 50001 INDEX 50002\n",
		"CONNECT DATA 50000 MESG 50001 INDEX 50002 STATE 50003\n", "CONNECT DATA 0\n", "CONNECT DATA 123456\n",
	} {
		f.Add([]byte(s), int8(0), false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, extra int8, v6 bool) {
		p, b := fuzzPacket(payload, extra, v6, statemachine.Reply, packet.ProtoUDP)
		var st State
		var out [MaxExpectPerPacket]Expectation
		n, drop, _ := Inspect(IDAmanda, &st, &p, b, statemachine.Reply, true, &out)
		checkFuzz(t, IDAmanda, &p, n, drop, &out)
		for _, e := range out[:n] {
			if e.DstPort == 0 {
				t.Fatalf("Amanda expectation with port 0: %+v", e)
			}
		}
	})
}
