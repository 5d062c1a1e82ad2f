package helpers

import (
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

const (
	orig  = statemachine.Original
	reply = statemachine.Reply
)

// ftpSession returns an FTP control connection past its greeting and first
// command, so that one "just after a newline" sequence number is remembered
// in each direction (the kernel never parses the first segment of a
// direction).
func ftpSession(t *testing.T, client, server string) *conn {
	t.Helper()
	c := newConn(t, IDFTP, packet.ProtoTCP, client, server, 40000, 21)
	for _, s := range []struct {
		dir statemachine.Dir
		msg string
	}{{reply, "220 welcome\r\n"}, {orig, "USER anonymous\r\n"}} {
		if r := c.send(s.dir, s.msg); len(r.exps) != 0 || r.drop {
			t.Fatalf("priming %q: got %+v", s.msg, r)
		}
	}
	return c
}

func ftpExp(l3 uint8, src, dst string, port uint16) Expectation {
	return Expectation{L3: l3, Proto: packet.ProtoTCP, Src: addr(src), Dst: addr(dst), DstPort: port,
		Timeout: FTPExpectTimeout, Helper: IDFTP}
}

func checkResult(t *testing.T, got result, want []Expectation, drop bool, reason DropReason) {
	t.Helper()
	if got.drop != drop || got.reason != reason {
		t.Errorf("drop, reason = %v, %v; want %v, %v", got.drop, got.reason, drop, reason)
	}
	if len(got.exps) != len(want) {
		t.Fatalf("got %d expectations %+v, want %d %+v", len(got.exps), got.exps, len(want), want)
	}
	for i := range want {
		if got.exps[i] != want[i] {
			t.Errorf("expectation %d:\n got  %+v\n want %+v", i, got.exps[i], want[i])
		}
	}
}

func TestFTPCommands(t *testing.T) {
	const cl, sv = "10.0.0.1", "10.0.0.2"
	const cl6, sv6 = "2001:db8::1", "2001:db8::2"
	for _, tc := range []struct {
		name           string
		client, server string
		dir            statemachine.Dir
		msg            string
		want           []Expectation
		drop           bool
		reason         DropReason
	}{
		// Original direction: from the server, any port, to the client.
		{"PORT", cl, sv, orig, "PORT 10,0,0,1,4,1\r\n", []Expectation{ftpExp(4, sv, cl, 1025)}, false, DropNone},
		{"PORT lowercase", cl, sv, orig, "port 10,0,0,1,200,10\r\n", []Expectation{ftpExp(4, sv, cl, 51210)}, false, DropNone},
		{"PORT several spaces", cl, sv, orig, "PORT   10,0,0,1,4,1\r\n", nil, true, DropFTPPort},
		{"PORTX skips to the space", cl, sv, orig, "PORTX 10,0,0,1,4,1\r\n", []Expectation{ftpExp(4, sv, cl, 1025)}, false, DropNone},
		{"PORT port 0", cl, sv, orig, "PORT 10,0,0,1,0,0\r\n", []Expectation{ftpExp(4, sv, cl, 0)}, false, DropNone},
		{"PORT forged address", cl, sv, orig, "PORT 10,0,0,99,4,1\r\n", nil, false, DropNone},
		{"PORT third party", cl, sv, orig, "PORT 192,168,1,1,4,1\r\n", nil, false, DropNone},
		{"PORT five numbers", cl, sv, orig, "PORT 10,0,0,1,4\r\n", nil, true, DropFTPPort},
		{"PORT seven numbers", cl, sv, orig, "PORT 10,0,0,1,4,1,1\r\n", nil, true, DropFTPPort},
		{"PORT letter", cl, sv, orig, "PORT 10,0,x,1,4,1\r\n", nil, true, DropFTPPort},
		{"PORT no CR", cl, sv, orig, "PORT 10,0,0,1,4,1\n", nil, true, DropFTPPort},
		{"PORT no argument", cl, sv, orig, "PORT\r\n", nil, true, DropFTPPort},
		{"PORT fields wrap like the kernel", "10.0.1.1", sv, orig, "PORT 10,0,0,257,4,1\r\n", []Expectation{ftpExp(4, sv, "10.0.1.1", 1025)}, false, DropNone},
		{"PORT port field wraps", cl, sv, orig, "PORT 10,0,0,1,256,80\r\n", []Expectation{ftpExp(4, sv, cl, 80)}, false, DropNone},
		{"partial keyword POR", cl, sv, orig, "POR", nil, true, DropFTPPort},
		{"partial keyword ep", cl, sv, orig, "ep", nil, true, DropFTPEPRT},
		{"whole keyword only", cl, sv, orig, "PORT", nil, true, DropFTPPort},
		{"other command", cl, sv, orig, "PASV\r\n", nil, false, DropNone},
		{"short other command", cl, sv, orig, "NO", nil, false, DropNone},
		{"PORT not at start", cl, sv, orig, "NOOP PORT 10,0,0,1,4,1\r\n", nil, false, DropNone},
		{"EPRT IPv4", cl, sv, orig, "EPRT |1|10.0.0.1|6275|\r\n", []Expectation{ftpExp(4, sv, cl, 6275)}, false, DropNone},
		{"EPRT other delimiter", cl, sv, orig, "eprt !1!10.0.0.1!6275!\r\n", []Expectation{ftpExp(4, sv, cl, 6275)}, false, DropNone},
		{"EPRT digit delimiter", cl, sv, orig, "EPRT 313101.0.0.13627531\r\n", nil, true, DropFTPEPRT},
		{"EPRT forged", cl, sv, orig, "EPRT |1|10.0.0.9|6275|\r\n", nil, false, DropNone},
		{"EPRT port 0", cl, sv, orig, "EPRT |1|10.0.0.1|0|\r\n", nil, true, DropFTPEPRT},
		{"EPRT port wraps to 0", cl, sv, orig, "EPRT |1|10.0.0.1|65536|\r\n", nil, true, DropFTPEPRT},
		{"EPRT IPv6 on IPv4", cl, sv, orig, "EPRT |2|::1|6275|\r\n", nil, true, DropFTPEPRT},
		{"EPRT IPv6", cl6, sv6, orig, "EPRT |2|2001:db8::1|6275|\r\n", []Expectation{ftpExp(6, sv6, cl6, 6275)}, false, DropNone},
		{"EPRT IPv6 full form", cl6, sv6, orig, "EPRT |2|2001:db8:0:0:0:0:0:1|6275|\r\n", []Expectation{ftpExp(6, sv6, cl6, 6275)}, false, DropNone},
		{"EPRT IPv6 forged", cl6, sv6, orig, "EPRT |2|2001:db8::99|6275|\r\n", nil, false, DropNone},
		{"EPRT IPv6 bad address", cl6, sv6, orig, "EPRT |2|2001:db8::1::2|6275|\r\n", nil, true, DropFTPEPRT},
		{"EPRT IPv4 on IPv6", cl6, sv6, orig, "EPRT |1|10.0.0.1|6275|\r\n", nil, true, DropFTPEPRT},
		// An IPv6 PORT overwrites the first four bytes of the sender's
		// address: 32.1.13.184 is 2001:0db8.
		{"PORT on IPv6 kernel quirk", cl6, sv6, orig, "PORT 32,1,13,184,4,1\r\n", []Expectation{ftpExp(6, sv6, cl6, 1025)}, false, DropNone},
		{"PORT on IPv6 other", cl6, sv6, orig, "PORT 10,0,0,1,4,1\r\n", nil, false, DropNone},
		{"227 in original direction", cl, sv, orig, "227 Entering Passive Mode (10,0,0,2,4,1)\r\n", nil, false, DropNone},

		// Reply direction: from the client, any port, to the server.
		{"227", cl, sv, reply, "227 Entering Passive Mode (10,0,0,2,4,1).\r\n", []Expectation{ftpExp(4, cl, sv, 1025)}, false, DropNone},
		{"227 no parentheses", cl, sv, reply, "227 Entering Passive Mode 10,0,0,2,4,1\r\n", []Expectation{ftpExp(4, cl, sv, 1025)}, false, DropNone},
		{"227 equals form", cl, sv, reply, "227 =10,0,0,2,4,1\r\n", []Expectation{ftpExp(4, cl, sv, 1025)}, false, DropNone},
		{"227 numbers at segment end", cl, sv, reply, "227 10,0,0,2,4,1", nil, true, DropFTPPASV},
		{"227 forged", cl, sv, reply, "227 Entering Passive Mode (10,0,0,3,4,1).\r\n", nil, false, DropNone},
		{"227 no digits", cl, sv, reply, "227 Entering Passive Mode\r\n", nil, true, DropFTPPASV},
		{"227 too few", cl, sv, reply, "227 Entering Passive Mode (10,0,0,2,4).\r\n", nil, true, DropFTPPASV},
		{"227 partial", cl, sv, reply, "22", nil, true, DropFTPPASV},
		{"229 partial", cl, sv, reply, "229", nil, true, DropFTPEPSV},
		{"227 without space", cl, sv, reply, "227-Entering\r\n", nil, false, DropNone},
		{"229", cl, sv, reply, "229 Entering Extended Passive Mode (|||6446|)\r\n", []Expectation{ftpExp(4, cl, sv, 6446)}, false, DropNone},
		{"229 other delimiter", cl, sv, reply, "229 ok (!!!6446!)\r\n", []Expectation{ftpExp(4, cl, sv, 6446)}, false, DropNone},
		{"229 port wraps", cl, sv, reply, "229 ok (|||65537|)\r\n", []Expectation{ftpExp(4, cl, sv, 1)}, false, DropNone},
		{"229 port 0", cl, sv, reply, "229 ok (|||0|)\r\n", nil, true, DropFTPEPSV},
		{"229 no parenthesis", cl, sv, reply, "229 Entering Extended Passive Mode |||6446|\r\n", nil, true, DropFTPEPSV},
		{"229 two delimiters", cl, sv, reply, "229 ok (||6446|)\r\n", nil, true, DropFTPEPSV},
		{"229 IPv6", cl6, sv6, reply, "229 Entering Extended Passive Mode (|||57086|)\r\n", []Expectation{ftpExp(6, cl6, sv6, 57086)}, false, DropNone},
		{"PORT in reply direction", cl, sv, reply, "PORT 10,0,0,2,4,1\r\n", nil, false, DropNone},
		{"other reply", cl, sv, reply, "200 PORT command successful.\r\n", nil, false, DropNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ftpSession(t, tc.client, tc.server)
			checkResult(t, c.send(tc.dir, tc.msg), tc.want, tc.drop, tc.reason)
		})
	}
}

// TestFTPFirstSegmentNeverParsed: the first segment of each direction only
// teaches the helper where lines start.
func TestFTPFirstSegmentNeverParsed(t *testing.T) {
	c := newConn(t, IDFTP, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
	c.send(reply, "220 hi\r\n")
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,1\r\n"), nil, false, DropNone)
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,2\r\n"), []Expectation{ftpExp(4, "10.0.0.2", "10.0.0.1", 1026)}, false, DropNone)

	c = newConn(t, IDFTP, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
	checkResult(t, c.send(reply, "227 Entering Passive Mode (10,0,0,2,4,1)\r\n"), nil, false, DropNone)
	checkResult(t, c.send(reply, "227 Entering Passive Mode (10,0,0,2,4,2)\r\n"), []Expectation{ftpExp(4, "10.0.0.1", "10.0.0.2", 1026)}, false, DropNone)
}

// TestFTPNotEstablished: NEW and RELATED packets are not looked at, and do
// not teach line starts either.
func TestFTPNotEstablished(t *testing.T) {
	c := newConn(t, IDFTP, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
	c.send(orig, "USER a\r\n") // no reply seen yet: NEW
	if c.st.numNL[orig] != 0 {
		t.Fatalf("NEW packet updated the newline state: %+v", c.st)
	}
	c.send(reply, "220 hi\r\n")
	c.send(orig, "USER a\r\n") // first established segment: learned
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,1\r\n"), []Expectation{ftpExp(4, "10.0.0.2", "10.0.0.1", 1025)}, false, DropNone)
}

// TestFTPSplitCommand: a command split over two segments. The first part
// starts a line, so the kernel parses it, fails and drops it; the second
// part starts at a sequence number that follows no newline and is ignored.
// When the client retransmits the command whole, it is parsed.
func TestFTPSplitCommand(t *testing.T) {
	c := ftpSession(t, "10.0.0.1", "10.0.0.2")
	start := c.seq[orig]
	checkResult(t, c.send(orig, "PORT 10,0,0,1,"), nil, true, DropFTPPort)
	c.seq[orig] += uint32(len("PORT 10,0,0,1,")) // the sender moves on regardless
	checkResult(t, c.send(orig, "4,1\r\n"), nil, false, DropNone)
	c.seq[orig] = start // retransmission of the whole command
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,1\r\n"), []Expectation{ftpExp(4, "10.0.0.2", "10.0.0.1", 1025)}, false, DropNone)
}

// TestFTPLineNotAtSegmentStart: a command that starts inside a segment is
// not seen, but the segment after it is parsed.
func TestFTPLineNotAtSegmentStart(t *testing.T) {
	c := ftpSession(t, "10.0.0.1", "10.0.0.2")
	checkResult(t, c.send(orig, "NOOP"), nil, false, DropNone)
	checkResult(t, c.send(orig, "\r\nPORT 10,0,0,1,4,1\r\n"), nil, false, DropNone)
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,2\r\n"), []Expectation{ftpExp(4, "10.0.0.2", "10.0.0.1", 1026)}, false, DropNone)
}

// TestFTPRetransmission: a retransmitted command still starts at a
// remembered sequence number and creates its expectation again (the
// expectation table replaces the identical one).
func TestFTPRetransmission(t *testing.T) {
	c := ftpSession(t, "10.0.0.1", "10.0.0.2")
	start := c.seq[reply]
	want := []Expectation{ftpExp(4, "10.0.0.1", "10.0.0.2", 38141)}
	checkResult(t, c.send(reply, "229 Entering Extended Passive Mode (|||38141|)\r\n"), want, false, DropNone)
	c.seq[reply] = start
	checkResult(t, c.send(reply, "229 Entering Extended Passive Mode (|||38141|)\r\n"), want, false, DropNone)
}

// TestFTPDropKeepsNewlineState: a dropped segment does not update the
// newline bookkeeping (the kernel jumps past update_nl_seq).
func TestFTPDropKeepsNewlineState(t *testing.T) {
	c := ftpSession(t, "10.0.0.1", "10.0.0.2")
	before := c.st
	checkResult(t, c.send(orig, "PORT 1,2\r\n"), nil, true, DropFTPPort)
	if c.st != before {
		t.Fatalf("state changed by a dropped segment: got %+v, want %+v", c.st, before)
	}
}

func TestFTPUpdateNL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		updates []uint32
		want    [2]uint32
		num     uint8
	}{
		{"one", []uint32{100}, [2]uint32{100, 0}, 1},
		{"two", []uint32{100, 200}, [2]uint32{100, 200}, 2},
		{"duplicate ignored", []uint32{100, 100}, [2]uint32{100, 0}, 1},
		{"third replaces oldest", []uint32{100, 200, 300}, [2]uint32{300, 200}, 2},
		{"oldest is by sequence order", []uint32{200, 100, 300}, [2]uint32{200, 300}, 2},
		{"older than both is ignored", []uint32{100, 200, 50}, [2]uint32{100, 200}, 2},
		{"between replaces the oldest", []uint32{100, 200, 150}, [2]uint32{150, 200}, 2},
		{"wraps", []uint32{0xfffffff0, 0xfffffffa, 0x10}, [2]uint32{0x10, 0xfffffffa}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st State
			for _, u := range tc.updates {
				st.updateNL(u, reply)
			}
			if st.seqAftNL[reply] != tc.want || st.numNL[reply] != tc.num {
				t.Fatalf("got %v (n=%d), want %v (n=%d)", st.seqAftNL[reply], st.numNL[reply], tc.want, tc.num)
			}
			if st.numNL[orig] != 0 {
				t.Fatalf("other direction touched: %+v", st)
			}
		})
	}
}

// TestFTPTruncatedCapture: bytes past the capture read as zeros, as the
// kernel saw them in the padded replays; the segment length comes from the
// IP header.
func TestFTPTruncatedCapture(t *testing.T) {
	c := ftpSession(t, "10.0.0.1", "10.0.0.2")
	full := "227 Entering Passive Mode 10,0,0,2,4,1\r\n"
	p := c.pkt(reply, len(full))
	captured := []byte(full[:len("227 Entering Passive Mode 10,0,0,2,4,1")])
	var out [MaxExpectPerPacket]Expectation
	// The zero after "…4,1" ends the numbers (227 takes any terminator).
	n, drop, _ := Inspect(IDFTP, &c.st, &p, captured, reply, true, &out)
	if n != 1 || drop || out[0].DstPort != 1025 {
		t.Fatalf("got n=%d drop=%v %+v; want one expectation to port 1025", n, drop, out[0])
	}
	// The segment did not visibly end in '\n', so the next one is not parsed.
	c.seq[reply] += uint32(len(full))
	checkResult(t, c.send(reply, "227 Entering Passive Mode (10,0,0,2,4,2)\r\n"), nil, false, DropNone)

	// Ethernet padding past PayloadLen is not payload.
	c = ftpSession(t, "10.0.0.1", "10.0.0.2")
	msg := "PORT 10,0,0,1,4,1\r\n"
	p = c.pkt(orig, len(msg))
	n, drop, _ = Inspect(IDFTP, &c.st, &p, []byte(msg+"\x00\x00\x00"), orig, true, &out)
	if n != 1 || drop {
		t.Fatalf("padded frame: got n=%d drop=%v, want 1, false", n, drop)
	}
}

func TestIn6pton(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want string
		end  int
	}{
		{"::1|", true, "::1", 3},
		{"2001:db8::1|", true, "2001:db8::1", 11},
		{"2001:DB8:0:0:0:0:0:1|", true, "2001:db8::1", 20},
		{"::|", true, "::", 2},
		{"1::|", true, "1::", 3},
		{"::ffff:1.2.3.4|", true, "::ffff:1.2.3.4", 14},
		{"1:2:3:4:5:6:1.2.3.4|", true, "1:2:3:4:5:6:102:304", 19},
		{"1:2:3:4:5:6:7:8|", true, "1:2:3:4:5:6:7:8", 15},
		{"1:2:3:4:5:6:7::|", true, "1:2:3:4:5:6:7:0", 15},
		{"2001:db8::1", true, "2001:db8::1", 11}, // the end of data ends it
		{"1:2|", false, "", 0},
		{"1::2::3|", false, "", 0},
		{"12345::|", false, "", 0},
		{"1:2:3:4:5:6:7:8:9|", false, "", 0},
		{"g::|", false, "", 0},
		{"::1.2.3|", false, "", 0},
		{"::256.1.1.1|", false, "", 0},
		{"|", false, "", 0},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var dst [16]byte
			end, ok := in6pton(view{b: []byte(tc.in), n: len(tc.in)}, 0, len(tc.in), '|', &dst)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if got := packet.Addr(dst); got != addr(tc.want) {
				t.Errorf("address = %v, want %s", dst, tc.want)
			}
			if end != tc.end {
				t.Errorf("end = %d, want %d", end, tc.end)
			}
		})
	}
}

func BenchmarkFTPInspectData(b *testing.B) {
	// A reply line that starts at a remembered sequence number but is no
	// command: the common case on a control connection.
	c := newConn(nil, IDFTP, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
	msg := []byte("150 Here comes the directory listing for a rather long path name.\r\n")
	p := c.pkt(reply, len(msg))
	c.st.updateNL(p.TCP.Seq, reply)
	var out [MaxExpectPerPacket]Expectation
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		Inspect(IDFTP, &c.st, &p, msg, reply, true, &out)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// TestFTPPickup: a connection committed from a peer (State.Pickup) parses
// the first segment of each direction whatever its sequence number, once
// per direction, as the kernel's FTP helper does after conntrackd -c
// (NF_CT_FTP_SEQ_PICKUP); the next segments need a known line start again.
func TestFTPPickup(t *testing.T) {
	c := newConn(t, IDFTP, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
	c.seenReply = true // ESTABLISHED: committed mid-session
	c.seq = [2]uint32{777777, 999999}
	c.st.Pickup()
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,1\r\n"), []Expectation{ftpExp(4, "10.0.0.2", "10.0.0.1", 1025)}, false, DropNone)
	checkResult(t, c.send(reply, "227 Entering Passive Mode (10,0,0,2,4,2)\r\n"), []Expectation{ftpExp(4, "10.0.0.1", "10.0.0.2", 1026)}, false, DropNone)
	// The lines' ends were learnt: the next command follows one.
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,3\r\n"), []Expectation{ftpExp(4, "10.0.0.2", "10.0.0.1", 1027)}, false, DropNone)
	// Pickup is spent: a segment at an unknown position is not parsed.
	c.seq[orig] += 5
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,4\r\n"), nil, false, DropNone)

	// Without pickup, the same first segment is not parsed.
	c = newConn(t, IDFTP, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 21)
	c.seenReply = true
	checkResult(t, c.send(orig, "PORT 10,0,0,1,4,1\r\n"), nil, false, DropNone)
}
