package conformance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet/packettest"
)

// ftpCase is one FTP command or reply in edge-case spelling, and where the
// data connection it announces (if it does) would come from.
type ftpCase struct {
	fromClient bool   // the line travels client → server
	line       string // sent as its own segment after the session's first
	passive    bool   // the data connection goes client → server:dport
	dport      uint16 // the announced port
}

var ftpCases = []ftpCase{
	{true, "PORT 198,18,0,1,195,80\r\n", false, 50000},
	{true, "PORT 198,18,0,1,195,80\n", false, 50000},
	{true, "port 198,18,0,1,195,80\r\n", false, 50000},
	{true, "PORT  198,18,0,1,195,80\r\n", false, 50000},
	{true, "PORT 198,18,0,9,195,80\r\n", false, 50000},
	{true, "PORT 198,18,0,1,300,80\r\n", false, 51280},
	{true, "PORT 198,18,0,1,195,80,7\r\n", false, 50000},
	{true, "PORT 198,18,000,1,195,080\r\n", false, 50000},
	{true, "EPRT |1|198.18.0.1|50000|\r\n", false, 50000},
	{true, "EPRT !1!198.18.0.1!50000!\r\n", false, 50000},
	{true, "EPRT |2|2001:2::1|50000|\r\n", false, 50000},
	{true, "EPRT |1|198.18.0.1|70000|\r\n", false, 4464},
	{true, "EPRT 1|198.18.0.1|50000|\r\n", false, 50000},
	{false, "227 Entering Passive Mode (198,18,0,2,195,80).\r\n", true, 50000},
	{false, "227 =198,18,0,2,195,80\r\n", true, 50000},
	{false, "227 Entering Passive Mode (198,18,0,9,195,80).\r\n", true, 50000},
	{false, "227 Entering Passive Mode 198,18,0,2,195,80\r\n", true, 50000},
	{false, "227-multi line (198,18,0,2,195,80)\r\n", true, 50000},
	{false, "229 Entering Extended Passive Mode (|||50000|)\r\n", true, 50000},
	{false, "229 Entering Extended Passive Mode (!!!50000!)\r\n", true, 50000},
	{false, "229 Entering Extended Passive Mode (|||0|)\r\n", true, 0},
	{false, "229 (|||50000|\r\n", true, 50000},
	{false, "229 Entering Extended Passive Mode |||50000|\r\n", true, 50000},
	{true, "STOR x\r\nPORT 198,18,0,1,195,80\r\n", false, 50000},
}

// ftpSession builds one FTP control session on TCP 21 from client port
// cport carrying c, then the data connection's SYN and SYN/ACK.
func ftpSession(cport uint16, c ftpCase) [][]byte {
	cs, ss := uint32(1000), uint32(5000)
	seg := func(fromClient bool, flags uint8, payload string) []byte {
		var f []byte
		if fromClient {
			f = packettest.TCP4(cli4, srv4, cport, 21, packettest.TCPFields{Flags: flags, Seq: cs, Ack: ss, Window: 65535, Payload: []byte(payload)})
		} else {
			f = toClient(packettest.TCP4(srv4, cli4, 21, cport, packettest.TCPFields{Flags: flags, Seq: ss, Ack: cs, Window: 65535, Payload: []byte(payload)}))
		}
		n := uint32(len(payload))
		if flags&fS != 0 {
			n++
		}
		if fromClient {
			cs += n
		} else {
			ss += n
		}
		return f
	}
	var out [][]byte
	out = append(out, seg(true, fS, ""))
	ss-- // the SYN/ACK's ack covers the SYN: recompute below
	ss++
	out = append(out, seg(false, fSA, ""))
	out = append(out, seg(true, fA, ""))
	out = append(out, seg(false, fPA, "220 ready\r\n"))
	out = append(out, seg(true, fPA, "USER anonymous\r\n"))
	out = append(out, seg(false, fPA, "331 ok\r\n"))
	out = append(out, seg(c.fromClient, fPA, c.line))
	out = append(out, seg(!c.fromClient, fA, ""))
	if c.passive {
		out = append(out,
			packettest.TCP4(cli4, srv4, cport+1000, c.dport, packettest.TCPFields{Flags: fS, Seq: 7000, Window: 65535, MSS: 1460}),
			toClient(packettest.TCP4(srv4, cli4, c.dport, cport+1000, packettest.TCPFields{Flags: fSA, Seq: 9000, Ack: 7001, Window: 65535, MSS: 1460})))
	} else {
		out = append(out,
			toClient(packettest.TCP4(srv4, cli4, 20, c.dport, packettest.TCPFields{Flags: fS, Seq: 9000, Window: 65535, MSS: 1460})),
			packettest.TCP4(cli4, srv4, c.dport, 20, packettest.TCPFields{Flags: fSA, Seq: 7000, Ack: 9001, Window: 65535, MSS: 1460}))
	}
	return out
}

// TestDifferentialFTP runs FTP sessions with edge-case PORT, EPRT, 227
// and 229 spellings through the kernel's ftp helper and statewire's, and
// requires the same state for every packet, in particular for the data
// connection each announces (RELATED or NEW) and for the command itself
// (a keyword that matches but fails to parse is dropped).
func TestDifferentialFTP(t *testing.T) {
	lab.RequireRoot(t)
	h := newTestHarness(t, Options{Helpers: true})
	related := map[int]bool{}
	for i, c := range ftpCases {
		t.Run(fmt.Sprintf("%02d", i), func(t *testing.T) {
			r, text := compareGenerated(t, h, fmt.Sprintf("ftp %q", strings.TrimSpace(c.line)), ftpSession(uint16(30000+i), c))
			if len(r.Diffs) > 0 || len(r.TableDiffs) > 0 {
				t.Errorf("kernel and statewire differ:\n%s", text)
			}
			// Packet 7 is the command, 9 the data connection's SYN.
			t.Logf("%q: command %s, data SYN %s (kernel), %s, %s (statewire)", c.line,
				r.KernelLabels[6], r.KernelLabels[8], r.OurLabels[6], r.OurLabels[8])
			related[i] = r.KernelLabels[8] == "RELATED"
		})
	}
	// The session is right: the plain forms open a RELATED data connection.
	for _, i := range []int{0, 8, 13, 18} {
		if !related[i] {
			t.Errorf("%q: the kernel did not make the data connection RELATED", ftpCases[i].line)
		}
	}
}
