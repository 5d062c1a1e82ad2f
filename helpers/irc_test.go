package helpers

import (
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
)

// 167772161 is 10.0.0.1, the client.
func ircExp(port uint16) Expectation {
	return Expectation{L3: 4, Proto: packet.ProtoTCP, SrcAny: true, Dst: addr("10.0.0.1"), DstPort: port,
		Timeout: IRCExpectTimeout, Helper: IDIRC}
}

func ircSession(t *testing.T) *conn {
	c := newConn(t, IDIRC, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 6667)
	c.send(reply, ":server 001 bob :Welcome\r\n")
	return c
}

func TestIRCDCC(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		want []Expectation
	}{
		{"SEND", "PRIVMSG bob :\x01DCC SEND hello.txt 167772161 5555 12\x01\r\n", []Expectation{ircExp(5555)}},
		{"CHAT", "PRIVMSG bob :\x01DCC CHAT chat 167772161 5556\x01\r\n", []Expectation{ircExp(5556)}},
		{"MOVE", "PRIVMSG bob :\x01DCC MOVE f.bin 167772161 5557\x01\r\n", []Expectation{ircExp(5557)}},
		{"TSEND", "PRIVMSG bob :\x01DCC TSEND f.bin 167772161 5558\x01\r\n", []Expectation{ircExp(5558)}},
		{"SCHAT", "PRIVMSG bob :\x01DCC SCHAT chat 167772161 5559\x01\r\n", []Expectation{ircExp(5559)}},
		{"lowercase privmsg", "privmsg bob :\x01DCC SEND f 167772161 5555\x01\r\n", []Expectation{ircExp(5555)}},
		{"leading blank lines", "\r\n\r\n  PRIVMSG bob :\x01DCC SEND f 167772161 5555\x01\r\n", []Expectation{ircExp(5555)}},
		{"quoted name without spaces", "PRIVMSG bob :\x01DCC SEND \"f.txt\" 167772161 5555\x01\r\n", []Expectation{ircExp(5555)}},
		{"several blanks before port", "PRIVMSG bob :\x01DCC SEND f 167772161    5555\x01\r\n", []Expectation{ircExp(5555)}},
		{"address wraps at 2^32", "PRIVMSG bob :\x01DCC SEND f 4462739457 5555\x01\r\n", []Expectation{ircExp(5555)}},
		{"port wraps at 2^16", "PRIVMSG bob :\x01DCC SEND f 167772161 70000\x01\r\n", []Expectation{ircExp(4464)}},
		{"one expectation per packet", "PRIVMSG bob :\x01DCC SEND a 167772161 5555\x01\r\nPRIVMSG bob :\x01DCC SEND b 167772161 6666\x01\r\n", []Expectation{ircExp(5555)}},
		{"forged then good", "PRIVMSG bob :\x01DCC SEND a 167772162 5555\x01\r\nPRIVMSG bob :\x01DCC SEND b 167772161 6666\x01\r\n", []Expectation{ircExp(6666)}},
		{"forged address", "PRIVMSG bob :\x01DCC SEND f 167772162 5555\x01\r\n", nil},
		{"third-party address", "PRIVMSG bob :\x01DCC SEND f 3232235777 5555\x01\r\n", nil},
		{"port 0", "PRIVMSG bob :\x01DCC SEND f 167772161 0\x01\r\n", nil},
		{"no port", "PRIVMSG bob :\x01DCC SEND f 167772161\x01\r\n", nil},
		{"quoted name with spaces", "PRIVMSG bob :\x01DCC SEND \"my file.txt\" 167772161 5555\x01\r\n", nil},
		{"no newline", "PRIVMSG bob :\x01DCC SEND f 167772161 5555\x01", nil},
		{"lowercase dcc", "PRIVMSG bob :\x01dcc send f 167772161 5555\x01\r\n", nil},
		{"unknown kind", "PRIVMSG bob :\x01DCC RESUME f 167772161 5555\x01\r\n", nil},
		{"text before DCC", "PRIVMSG bob :hi \x01DCC SEND f 167772161 5555\x01\r\n", nil},
		{"not PRIVMSG", "NOTICE bob :\x01DCC SEND f 167772161 5555\x01\r\n", nil},
		{"PRIVMSG not first", "NICK bob\r\nPRIVMSG bob :\x01DCC SEND f 167772161 5555\x01\r\n", nil},
		{"too short", "PRIVMSG b :\x01DCC SEND f 1 2\x01\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ircSession(t)
			checkResult(t, c.send(orig, tc.msg), tc.want, false, DropNone)
		})
	}
}

func TestIRCIgnored(t *testing.T) {
	msg := "PRIVMSG bob :\x01DCC SEND f 167772161 5555\x01\r\n"
	t.Run("reply direction", func(t *testing.T) {
		c := ircSession(t)
		c.client, c.server = c.server, c.client // the offer's address is the sender's
		checkResult(t, c.send(reply, strings.Replace(msg, "167772161", "167772162", 1)), nil, false, DropNone)
	})
	t.Run("not established", func(t *testing.T) {
		c := newConn(t, IDIRC, packet.ProtoTCP, "10.0.0.1", "10.0.0.2", 40000, 6667)
		checkResult(t, c.send(orig, msg), nil, false, DropNone)
	})
	t.Run("IPv6", func(t *testing.T) {
		c := newConn(t, IDIRC, packet.ProtoTCP, "::ffff:0:a00:1", "2001:db8::2", 40000, 6667)
		c.send(reply, ":server 001 bob :Welcome\r\n")
		checkResult(t, c.send(orig, msg), nil, false, DropNone)
	})
	t.Run("only the first 4095 bytes are searched", func(t *testing.T) {
		offer := " :\x01DCC SEND f 167772161 5555\x01\r\n"
		c := ircSession(t)
		within := "PRIVMSG bob" + strings.Repeat("x", 4095-len("PRIVMSG bob")-len(offer)) + offer
		checkResult(t, c.send(orig, within), []Expectation{ircExp(5555)}, false, DropNone)
		c = ircSession(t)
		beyond := "PRIVMSG bob" + strings.Repeat("x", 4096-len("PRIVMSG bob")-len(offer)) + offer
		checkResult(t, c.send(orig, beyond), nil, false, DropNone)
	})
}

func tftpExp(l3 uint8, server, client string, port uint16) Expectation {
	return Expectation{L3: l3, Proto: packet.ProtoUDP, Src: addr(server), Dst: addr(client), DstPort: port,
		Timeout: TFTPExpectTimeout, Helper: IDTFTP}
}

func TestTFTP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client string
		server string
		dir    bool // true: reply direction
		msg    string
		want   []Expectation
	}{
		{"RRQ", "192.168.1.2", "192.168.1.1", false, "\x00\x01file1\x00octet\x00", []Expectation{tftpExp(4, "192.168.1.1", "192.168.1.2", 44935)}},
		{"WRQ", "192.168.1.2", "192.168.1.1", false, "\x00\x02rfc1350.txt\x00octet\x00", []Expectation{tftpExp(4, "192.168.1.1", "192.168.1.2", 44935)}},
		{"opcode only", "192.168.1.2", "192.168.1.1", false, "\x00\x01", []Expectation{tftpExp(4, "192.168.1.1", "192.168.1.2", 44935)}},
		{"IPv6 RRQ", "2001:db8::2", "2001:db8::1", false, "\x00\x01f\x00octet\x00", []Expectation{tftpExp(6, "2001:db8::1", "2001:db8::2", 44935)}},
		// The expectation comes from the reply tuple whatever the
		// direction of the request.
		{"RRQ in reply direction", "192.168.1.2", "192.168.1.1", true, "\x00\x01f\x00octet\x00", []Expectation{tftpExp(4, "192.168.1.1", "192.168.1.2", 44935)}},
		{"DATA", "192.168.1.2", "192.168.1.1", false, "\x00\x03\x00\x01data", nil},
		{"ACK", "192.168.1.2", "192.168.1.1", false, "\x00\x04\x00\x01", nil},
		{"ERROR", "192.168.1.2", "192.168.1.1", false, "\x00\x05\x00\x01oops\x00", nil},
		{"OACK", "192.168.1.2", "192.168.1.1", false, "\x00\x06blksize\x001024\x00", nil},
		{"opcode 0", "192.168.1.2", "192.168.1.1", false, "\x00\x00", nil},
		{"opcode 257", "192.168.1.2", "192.168.1.1", false, "\x01\x01", nil},
		{"one byte", "192.168.1.2", "192.168.1.1", false, "\x01", nil},
		{"empty", "192.168.1.2", "192.168.1.1", false, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(t, IDTFTP, packet.ProtoUDP, tc.client, tc.server, 44935, 69)
			dir := orig
			if tc.dir {
				dir = reply
			}
			checkResult(t, c.send(dir, tc.msg), tc.want, false, DropNone)
		})
	}
}

func amandaExp(port uint16) Expectation {
	// From the original source (the Amanda server) to the original
	// destination (the client).
	return Expectation{L3: 4, Proto: packet.ProtoTCP, Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), DstPort: port,
		Timeout: AmandaExpectTimeout, Helper: IDAmanda}
}

func TestAmanda(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  bool // true: reply direction
		msg  string
		want []Expectation
	}{
		{"three streams", true, "Amanda 2.4 REP HANDLE 000-00000000 SEQ 0\nCONNECT DATA 50000 MESG 50001 INDEX 50002\nOPTIONS features=x;\n",
			[]Expectation{amandaExp(50000), amandaExp(50001), amandaExp(50002)}},
		{"four streams", true, "CONNECT DATA 50000 MESG 50001 INDEX 50002 STATE 50003\n",
			[]Expectation{amandaExp(50000), amandaExp(50001), amandaExp(50002), amandaExp(50003)}},
		{"keyword order is fixed", true, "CONNECT INDEX 3 MESG 2 DATA 1\n",
			[]Expectation{amandaExp(1), amandaExp(2), amandaExp(3)}},
		{"missing DATA skipped", true, "CONNECT MESG 50001\n", []Expectation{amandaExp(50001)}},
		{"DATA port 0 stops", true, "CONNECT DATA 0 MESG 50001\n", nil},
		{"MESG without digits stops", true, "CONNECT DATA 5 MESG x INDEX 7\n", []Expectation{amandaExp(5)}},
		{"at most five digits", true, "CONNECT DATA 123456\n", []Expectation{amandaExp(12345)}},
		{"wraps at 2^16", true, "CONNECT DATA 99999\n", []Expectation{amandaExp(34463)}},
		{"keyword after the line ignored", true, "CONNECT DATA 5\nMESG 6\n", []Expectation{amandaExp(5)}},
		{"no newline", true, "CONNECT DATA 50000", nil},
		{"no CONNECT", true, "DATA 50000\n", nil},
		{"lowercase", true, "connect data 50000\n", nil},
		{"original direction", false, "CONNECT DATA 50000\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(t, IDAmanda, packet.ProtoUDP, "10.0.0.1", "10.0.0.2", 850, 10080)
			dir := orig
			if tc.dir {
				dir = reply
			}
			checkResult(t, c.send(dir, tc.msg), tc.want, false, DropNone)
		})
	}
}
